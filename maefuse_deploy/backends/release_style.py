"""The model run the way the released inference code runs it: the speed baseline of every benchmark row.

What the release does differently from our runtime, and this module reproduces:

* IR and VIS go through the encoder in two separate passes (our path encodes them as one batch of two).
* The MAE code base the release builds on pins timm 0.3.2, whose attention is the explicit
  ``softmax(Q K^T * scale) V`` with the full attention matrix in memory (no fused SDPA kernel).
* The fusion layer calls real ``torch.nn.MultiheadAttention`` modules (``batch_first=False``, the default) on
  (B, N, C) tensors, with their default ``need_weights=True``: at batch 1 each softmax sees one key (docs/model.md §2),
  but all four projections and the attention weights are still computed.
* float32, one pair at a time.

At batch 1 its output equals our ``official`` path within float rounding, which the benchmark checks.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..contract import BatchProfile
from ..errors import InputError
from ..model.fusion import FusionAttention
from ..model.maefuse import MaeFuse
from ..model.sources import resolve_torch_model
from ..model.vit import Attention, Block, grid_positions, unpatchify
from .base import BackendBase
from .devices import resolve_device


def _release_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    batch, tokens, dim = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


def _release_blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        assert isinstance(block, Block) and isinstance(block.attn, Attention)
        x = x + _release_attention(block.attn, block.norm1(x))
        x = x + block.mlp(block.norm2(x))
    return x


def _multihead_copy(source: FusionAttention) -> nn.MultiheadAttention:
    """A real ``nn.MultiheadAttention`` holding ``source``'s weights (their parameter layouts are the same)."""
    dim = source.out_proj.in_features
    module = nn.MultiheadAttention(dim, source.num_heads)
    module.load_state_dict(source.state_dict())
    return module


class ReleaseStyleModel(nn.Module):
    """A :class:`MaeFuse`'s weights driven by the release's forward pass (see the module docstring)."""

    def __init__(self, model: MaeFuse) -> None:
        super().__init__()
        self.model = model
        self.cross_model = _multihead_copy(model.fusion.cross_model)
        self.merge_model = _multihead_copy(model.fusion.merge_model)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, N, D) encoder tokens."""
        mae = self.model.mae
        grid = mae.token_grid(images)
        x = mae.patch_embed(images) + grid_positions(mae.pos_embed, mae.grid, grid)
        return mae.norm(_release_blocks(mae.blocks, x))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised IR and VIS -> (B, 3, H, W) decoder output, normalised space.

        B > 1 reproduces the release too, so its attention then mixes the images of the batch (docs/model.md §2).
        """
        mae, fusion = self.model.mae, self.model.fusion
        grid = mae.token_grid(ir)
        positions = grid_positions(fusion.pos_embed, fusion.grid, grid)
        i = self.encode(ir) + positions
        v = self.encode(vis) + positions
        p = self.cross_model(i, v, v)[0] + self.cross_model(v, i, i)[0]
        f = self.merge_model(p, v, v)[0] + self.merge_model(p, i, i)[0]
        out = fusion.ln(f + fusion.fc2(F.gelu(fusion.fc1(f))))
        x = mae.decoder_embed(out) + grid_positions(mae.decoder_pos_embed, mae.grid, grid)
        decoded = mae.decoder_pred(mae.decoder_norm(_release_blocks(mae.decoder_blocks, x)))
        return unpatchify(decoded, grid, self.model.config.patch_size)


class ReleaseStyleBackend(BackendBase):
    """:class:`ReleaseStyleModel` behind the backend base (float io, float32; layouts: backends/base.py).

    The release fuses one pair per call, so the profile is a batch of one and the base runs a batch pair by pair:
    its output never depends on the batch.
    """

    name = "release-style"
    block_attentions = ("softmax",)  # the authors' code
    native = "torch"
    profile = BatchProfile(1, 1, 1)

    def __init__(self, model: MaeFuse, device: str = "cpu", *, description: str = "") -> None:
        if self.unsupported_block_attention(model.config.block_attention):
            # Running a linear-attention model through the release's softmax attention would give another model's
            # output under this backend's name.
            raise InputError(
                f"release-style runs the authors' softmax attention; {model.config.name} has "
                f"{model.config.block_attention} block attention",
                fix="use the torch backend for this model",
            )
        self.device = torch.device(resolve_device(device))
        self.model = ReleaseStyleModel(model.float()).to(self.device).eval().requires_grad_(False)
        self.patch_size = model.config.patch_size
        self.config = model.config
        self.model_size = model.config.img_size
        self.default_policy = model.config.policy
        self.description = description or f"release-style: {model.config.name}"

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cpu", dtype: str | None = None,
             config: str | None = None, **options: Any) -> ReleaseStyleBackend:
        resolved = resolve_torch_model(source, config)
        return cls(resolved.model, device, description=f"release-style: {resolved.description}", **options)

    @property
    def tensor_device(self) -> torch.device:
        return self.device

    def _run_impl(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) normalised tensors on any device -> (1, 3, H, W) float32 on this backend's device."""
        ir = ir.to(device=self.device, dtype=torch.float32, non_blocking=True)
        vis = vis.to(device=self.device, dtype=torch.float32, non_blocking=True)
        with torch.no_grad():
            return self.model(ir, vis)

    def close(self) -> None:
        """Nothing to release: the weights go with the object."""
