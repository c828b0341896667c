"""The MaeFuse fusion layer: CFM and MFM attention, FFN, LayerNorm (docs/model.md §1, §2).

Token tensors are (B, N, D), batch first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MaeFuseConfig
from .posembed import sincos_2d
from .vit import Origin, grid_positions


class FusionAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (so released weights load).

    Two computations (docs/model.md §2):
    * :meth:`attend` - attention over tokens (the paper's description).
    * :meth:`single_key` - what the release computes: it calls ``nn.MultiheadAttention`` (batch_first=False) on
      (B, N, D) tensors, so at batch 1 each softmax sees one key and the call reduces to
      ``out_proj(W_v value + b_v)``, independent of the query.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def value_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.out_proj.in_features
        return self.in_proj_weight[2 * dim :], self.in_proj_bias[2 * dim :]

    def single_key(self, value: torch.Tensor) -> torch.Tensor:
        weight, bias = self.value_projection()
        return self.out_proj(F.linear(value, weight, bias))

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = query.shape
        heads = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, -1, heads, dim // heads).transpose(1, 2)

        q = split(F.linear(query, w_q, b_q))
        k = split(F.linear(key, w_k, b_k))
        v = split(F.linear(value, w_v, b_v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class FusionLayer(nn.Module):
    """Merges IR and VIS encoder tokens into one token set for the decoder.

    Parameter names are the release's ``model2.*`` names. ``pos_embed`` is the fixed sin-cos table added to both
    encoder outputs before fusion.
    """

    def __init__(self, config: MaeFuseConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.attention = config.attention
        self.grid = config.grid
        self.pos_embed: torch.Tensor
        self.register_buffer("pos_embed", sincos_2d(dim, *config.grid)[None])
        self.cross_model = FusionAttention(dim, config.fusion_num_heads)
        self.merge_model = FusionAttention(dim, config.fusion_num_heads)
        hidden = int(dim * config.fusion_mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.ln = nn.LayerNorm(dim, eps=config.fusion_norm_eps)
        # The exporter sets this to replace the two single-key calls by one folded linear map (docs/model.md §2).
        self.folded: tuple[torch.Tensor, torch.Tensor] | None = None

    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The official MFM as one map: Wo Wv (v + i) + 2 (Wo b_v + b_o). Returns (weight (D, D), bias (D,))."""
        w_v, b_v = self.merge_model.value_projection()
        w_o, b_o = self.merge_model.out_proj.weight, self.merge_model.out_proj.bias
        weight = (w_o.double() @ w_v.double()).to(w_v.dtype)
        bias = (2 * (w_o.double() @ b_v.double() + b_o.double())).to(b_v.dtype)
        return weight, bias

    def forward(
        self, ir_tokens: torch.Tensor, vis_tokens: torch.Tensor, grid: tuple[int, int], origin: Origin = (0, 0)
    ) -> torch.Tensor:
        """(B, N, D) encoder tokens of each modality -> (B, N, D) fused tokens."""
        positions = grid_positions(self.pos_embed, self.grid, grid, origin)
        v = vis_tokens + positions
        i = ir_tokens + positions
        if self.attention == "official":
            # The CFM's output never reaches the MFM's values, and the MFM ignores its queries (docs/model.md §2).
            if self.folded is not None:
                f = F.linear(v + i, *self.folded)
            else:
                f = self.merge_model.single_key(v) + self.merge_model.single_key(i)
        else:
            p = self.cross_model.attend(i, v, v) + self.cross_model.attend(v, i, i)
            f = self.merge_model.attend(p, v, v) + self.merge_model.attend(p, i, i)
        return self.ln(f + self.fc2(F.gelu(self.fc1(f))))
