"""The MAE ViT encoder and decoder (plain modules, timm's parameter names, one forward path that exports).

Tensors: images are (B, C, H, W) float, ImageNet-normalised; token sequences are (B, N, D) with N = rows*cols in
row-major order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MaeFuseConfig
from .posembed import sincos_2d


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's ``attn.qkv`` / ``attn.proj`` layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        # Eager runs use SDPA (flash / memory-efficient kernels). Export switches to the explicit form, with the
        # scale applied to Q before the first MatMul: the pattern TensorRT fuses into one attention kernel.
        self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            # Softmax in float32 whatever the graph's precision: FP16 exp/sum over 1600 keys loses too much.
            x = attn.float().softmax(dim=-1).to(v.dtype) @ v
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as MAE
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/p * W/p, D)."""
        return self.proj(x).flatten(2).transpose(1, 2)


Origin = tuple[int, int]  # (row, column) position of a grid's first token; (0, 0) except in training crops


def grid_positions(
    table: torch.Tensor, table_grid: tuple[int, int], grid: tuple[int, int], origin: Origin = (0, 0)
) -> torch.Tensor:
    """(1, rows*cols, D) sin-cos embeddings for ``grid`` starting at ``origin``: the stored table where it fits,
    else the formula."""
    if tuple(grid) == tuple(table_grid) and tuple(origin) == (0, 0):
        return table
    return sincos_2d(table.shape[-1], *grid, *origin).to(table)[None]


class MaskedAutoencoder(nn.Module):
    """The MAE ViT without class or mask token: encoder (patch embed, blocks, norm) and pixel decoder.

    Parameter names are the MAE release's (``blocks.*``, ``decoder_blocks.*``, ``pos_embed``, ...), so the
    released ``model1.*`` weights load by prefix alone. The position tables are buffers for the config grid;
    other grids are generated from the formula.
    """

    def __init__(self, config: MaeFuseConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.grid = config.grid
        rows, cols = config.grid
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, config.embed_dim)
        self.register_buffer("pos_embed", sincos_2d(config.embed_dim, rows, cols)[None])
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, config.norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.decoder_embed = nn.Linear(config.embed_dim, config.decoder_embed_dim)
        self.register_buffer("decoder_pos_embed", sincos_2d(config.decoder_embed_dim, rows, cols)[None])
        self.decoder_blocks = nn.ModuleList(
            Block(config.decoder_embed_dim, config.decoder_num_heads, config.mlp_ratio, config.norm_eps)
            for _ in range(config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_embed_dim, eps=config.norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_embed_dim, config.patch_dim)

    def token_grid(self, images: torch.Tensor) -> tuple[int, int]:
        return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size

    def encode(self, images: torch.Tensor, origin: Origin = (0, 0)) -> torch.Tensor:
        """(B, C, H, W) normalised images, H and W multiples of the patch -> (B, N, D) tokens."""
        grid = self.token_grid(images)
        x = self.patch_embed(images) + grid_positions(self.pos_embed, self.grid, grid, origin)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int], origin: Origin = (0, 0)) -> torch.Tensor:
        """(B, N, D) tokens -> (B, N, p*p*C) pixel values per patch (normalised space)."""
        x = self.decoder_embed(tokens) + grid_positions(self.decoder_pos_embed, self.grid, grid, origin)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), each patch flattened as (p, q, C) (MAE's order)."""
    batch, chans, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, chans, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * chans)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, rows*p, cols*p), the inverse of :func:`patchify`."""
    batch = patches.shape[0]
    rows, cols = grid
    chans = patches.shape[-1] // (patch_size * patch_size)
    x = patches.reshape(batch, rows, cols, patch_size, patch_size, chans)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, chans, rows * patch_size, cols * patch_size)
