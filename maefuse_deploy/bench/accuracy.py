"""Accuracy of a benchmark row against the torch float32 reference, on real IR/VIS pairs.

Inputs are real pairs (``--pairs-dir``, else the samples shipped in the package), never random tensors:
activations on real images decide whether a low-precision path holds up. Two measures per pair:

* max abs error of the decoder output, (3, H, W) float32 in the normalised space (where the graph returns it);
* PSNR in dB of the fused uint8 BGR image against the reference's fused image (infinite when identical).

A row reports the worst pair of each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backends.torch import TorchBackend
from ..checks import check_finite
from ..compare import psnr
from ..processing import finish_pair, prepare_pair
from ..sample_pairs import SAMPLES_DIR, Pair


def default_pairs_dir() -> Path:
    """The samples shipped in the package: installed code reads nothing outside it."""
    return SAMPLES_DIR


@dataclass
class Reference:
    """Per pair: the torch float32 decoder output (3, H, W) and fused image (OpenCV layout)."""

    decoded: list[np.ndarray]
    fused: list[np.ndarray]


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    # cuDNN convolutions (the patch embedding) default to TF32 on Ampere and later: not a float32 reference.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def compute_reference(backend: TorchBackend, pairs: list[Pair], model_size: tuple[int, int]) -> Reference:
    """Run each pair alone (batch 1) through a float32 torch backend with the official processing."""
    decoded, fused = [], []
    with _exact_float32():
        for pair in pairs:
            ir, vis, context = prepare_pair(pair.ir, pair.vis, "official", model_size, backend.patch_size)
            # Every accuracy column is measured against this: it must be finite (float32 weights can overflow too).
            out = check_finite(backend.run(ir[None], vis[None])[0], "the float32 torch reference output")
            decoded.append(out)
            fused.append(finish_pair(out, context, "official"))
    return Reference(decoded, fused)


@dataclass
class AccuracyTally:
    """Worst-case accuracy over the pairs a row's calls produced."""

    reference: Reference
    max_abs_err: float | None = None
    psnr_db: float | None = None
    seen: set[int] = field(default_factory=set)

    def add(self, index: int, fused: np.ndarray, decoded: np.ndarray | None) -> None:
        self.seen.add(index)
        if decoded is not None:
            err = float(np.max(np.abs(decoded.astype(np.float32) - self.reference.decoded[index])))
            self.max_abs_err = err if self.max_abs_err is None else max(self.max_abs_err, err)
        value = psnr(fused, self.reference.fused[index])
        self.psnr_db = value if self.psnr_db is None else min(self.psnr_db, value)
