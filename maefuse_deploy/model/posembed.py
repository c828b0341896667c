"""Fixed 2-D sine-cosine position embeddings (the MAE formula), for any token grid."""

from __future__ import annotations

import torch


def sincos_2d(dim: int, rows: int, cols: int, first_row: int = 0, first_col: int = 0) -> torch.Tensor:
    """Return (rows*cols, dim) float32 embeddings for tokens in row-major order, the first at position
    (``first_row``, ``first_col``) (training shifts crops' positions so that large grids are seen; inference: 0).

    The first dim/2 channels encode the token's COLUMN, the last dim/2 its ROW (docs/model.md §1: the upstream comment
    says the opposite, its meshgrid does this). Each half is [sin(p*w_k), cos(p*w_k)] with
    w_k = 10000^(-k/(dim/4)), k < dim/4. Computed in float64 and rounded once, so that every grid's values are the
    correctly rounded float32 of the formula.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding width must be divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row = torch.arange(first_row, first_row + rows, dtype=torch.float64).repeat_interleave(cols)
    col = torch.arange(first_col, first_col + cols, dtype=torch.float64).repeat(rows)

    def encode(position: torch.Tensor) -> torch.Tensor:
        angle = position[:, None] * omega[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).to(torch.float32)
