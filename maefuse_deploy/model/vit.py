"""The MAE ViT encoder and decoder, built from timm's ``Block`` and ``PatchEmbed`` (so key names are timm's).

Tensors: images are (B, C, H, W) float, ImageNet-normalised; token sequences are (B, N, D) with N = rows*cols in
row-major order.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import Attention as TimmAttention
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from .config import MaeFuseConfig
from .posembed import sincos_2d


class Attention(TimmAttention):
    """timm's attention (fused ``qkv``, ``proj``), with the explicit path MaeFuse exports.

    Eager runs take timm's fused path (SDPA: flash / memory-efficient kernels). Export switches ``fused_attn`` off
    (:func:`maefuse_deploy.model.maefuse.set_fused_attention`): timm's explicit form scales Q before ``Q @ K^T`` (the
    pattern TensorRT fuses into one attention kernel), and here the softmax runs in float32 whatever the graph's
    precision, since an FP16 exp/sum over 1600 keys loses too much.
    """

    @property
    def fused(self) -> bool:
        return bool(self.fused_attn)

    @fused.setter
    def fused(self, value: bool) -> None:
        self.fused_attn = value  # type: ignore[misc]  # Final in timm for TorchScript; switched for export only

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if self.fused_attn or attn_mask is not None or is_causal:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        q, k, v = self._heads(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        return self._merge(attn.float().softmax(dim=-1).to(v.dtype) @ v)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) tokens -> Q, K, V, each (B, heads, N, head_dim)."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, head_dim) per-head outputs -> (B, N, D) through the output projection."""
        batch, _, tokens, _ = x.shape
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, self.attn_dim))


class LinearAttention(Attention):
    """Softmax attention's first-order expansion about each query's mean logit (config ``block_attention="linear"``).

    ``softmax_j(s) ~ (1 + s_j - mean(s)) / N``, whose weights sum to one exactly, so ``out_i = mean_j(v_j) +
    (q_i * scale) @ Cov(K, V)`` with ``Cov(K, V) = mean_j((k_j - mean(k)) v_j^T)``, a ``head_dim x head_dim`` matrix
    per head: O(N d^2) instead of O(N^2 d), and no N x N matrix. Why it can work: trained MAE attention at 1200
    tokens is nearly uniform (mean row entropy 6.8-7.09 nats in most of maefuse-rt's blocks, 7.09 for a uniform
    row). Put into a softmax model's weights untrained it reads 30-36 dB from that model, so it is a model of its
    own, trained (maefuse-rt-linear), never a rewrite of a softmax one. The same tensors as :class:`Attention`.

    Computed token-major with the output projection folded in: ``proj(out_i) = (q_i @ (scale Cov W^T)) +
    proj(mean(v))``, the same function reassociated (float32 outputs within a grey level of the per-head form).
    Limited to VNNI, maefuse-rt-linear's int8 pair at 640x480 went from 34-35 to 30-31 ms (benchmarks/README.md):
    no N x D x D output projection (11 % of the time), no head transposes, no split of the qkv output.
    """

    head_blocks: torch.Tensor

    def __init__(self, dim: int, num_heads: int = 8, **options: Any) -> None:
        super().__init__(dim, num_heads, **options)
        # Which entries of the all-heads key x value covariance (D x D) belong to one head: its diagonal blocks.
        heads = torch.block_diag(*[torch.ones(self.head_dim, self.head_dim)] * self.num_heads)
        self.register_buffer("head_blocks", heads, persistent=False)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        if attn_mask is not None or is_causal:
            raise ValueError("linear block attention takes no attention mask")
        tokens = x.shape[1]
        # Q, K, V as three products with the rows of the fused qkv weight: splitting one (B, N, 3D) output runs as a
        # strided copy in OpenVINO (2.3 of 36 ms a 640x480 pair limited to VNNI). The slices are of constants, which
        # the export folds (export/trace.py), so each is a weight of its own in the graph.
        dim, weight, bias = self.attn_dim, self.qkv.weight, self.qkv.bias
        q, k, v = (nn.functional.linear(x, weight[part * dim:(part + 1) * dim],
                                        None if bias is None else bias[part * dim:(part + 1) * dim])
                   for part in range(3))  # (B, N, D) each, head h in channels h*d:(h+1)*d
        # 1/N before the product, so the sum over tokens stays in range in float16 graphs too.
        centred_keys = (k - k.mean(dim=1, keepdim=True)) * (1.0 / tokens)
        covariance = centred_keys.transpose(1, 2) @ v  # (B, D, D): every head pair; each head keeps its own block
        if self.num_heads > 1:
            covariance = covariance * self.head_blocks
        # out_i = mean(v) + (q_i * scale) @ Cov, then proj: W (mean(v) + scale q_i Cov) + b. Folding scale, Cov and
        # W into one D x D matrix per image leaves one N x D x D product instead of two, and no head transposes.
        folded = (covariance * self.scale) @ self.proj.weight.t()  # (B, D, D_out)
        # The product runs on the fold scaled to a largest entry of 1, the scale applied after: the same value,
        # but the matrix an int8 graph quantizes then has one range for every scene. Cov follows the scene's
        # contrast, and calibrated on night pairs an int8 Q x fold clipped day pairs' to 33-38 dB from float32
        # (44 dB and more so scaled; tests/test_auto_backend.py).
        magnitude = folded.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(folded.dtype).tiny)
        return (q @ (folded / magnitude)) * magnitude + self.proj(v.mean(dim=1, keepdim=True))


def mae_block(dim: int, num_heads: int, mlp_ratio: float, eps: float, linear: bool = False) -> Block:
    """timm's pre-norm transformer block (norm1, attn, norm2, mlp) as MAE builds it: qkv bias, exact GELU.

    ``linear`` takes :class:`LinearAttention` instead of softmax attention."""
    return Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=eps),  # type: ignore[arg-type]
                     act_layer=nn.GELU, attn_layer=LinearAttention if linear else Attention)


def mae_patch_embed(patch_size: int, in_chans: int, dim: int) -> PatchEmbed:
    """timm's patch embedding for any image size that is a multiple of the patch: (B, C, H, W) -> (B, N, D)."""
    return PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=dim,
                          strict_img_size=False)


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
        linear = config.block_attention == "linear"
        self.patch_embed = mae_patch_embed(config.patch_size, config.in_chans, config.embed_dim)
        self.pos_embed: torch.Tensor
        self.register_buffer("pos_embed", sincos_2d(config.embed_dim, rows, cols)[None])
        self.blocks = nn.ModuleList(
            mae_block(config.embed_dim, config.num_heads, config.mlp_ratio, config.norm_eps, linear)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.decoder_embed = nn.Linear(config.embed_dim, config.decoder_embed_dim)
        self.decoder_pos_embed: torch.Tensor
        self.register_buffer("decoder_pos_embed", sincos_2d(config.decoder_embed_dim, rows, cols)[None])
        self.decoder_blocks = nn.ModuleList(
            mae_block(config.decoder_embed_dim, config.decoder_num_heads, config.mlp_ratio, config.norm_eps, linear)
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
