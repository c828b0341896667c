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

import cv2
import numpy as np
import torch

from ..checks import check_finite
from ..compare import psnr
from ..errors import InputError
from ..io import find_pairs, read_image
from ..processing import finish_pair, ir_to_grey8, prepare_pair
from ..runtime.files import SAMPLES_DIR
from ..runtime.torch_backend import TorchBackend


@dataclass
class Pair:
    """A real pair as a camera delivers it: IR HxW uint8 grey, VIS HxWx3 uint8 BGR."""

    name: str
    ir: np.ndarray
    vis: np.ndarray


def default_pairs_dir() -> Path:
    """The samples shipped in the package: installed code reads nothing outside it."""
    return SAMPLES_DIR


def load_pairs(folder: Path, count: int, camera_size: tuple[int, int] | None = None) -> list[Pair]:
    """The first ``count`` pairs of ``folder`` (``ir/`` and ``vi/`` inside), resized (bilinear) to
    ``camera_size`` (H, W) when given, for graphs that take frames of one fixed size.
    """
    if count < 1:
        raise InputError(f"--pairs must be at least 1, got {count}")
    pairs = []
    for found in find_pairs(folder / "ir", folder / "vi")[:count]:
        ir = read_image(found.ir, "IR")
        vis = read_image(found.vis, "VIS")
        if ir.dtype != np.uint8 or vis.dtype != np.uint8:
            raise InputError(f"benchmark pair {found.name} is not 8-bit", fix="use 8-bit benchmark pairs")
        ir = ir_to_grey8(ir)
        vis = cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR) if vis.ndim == 2 else vis[:, :, :3]
        if camera_size is not None and ir.shape[:2] != camera_size:
            size = (camera_size[1], camera_size[0])
            ir = cv2.resize(ir, size, interpolation=cv2.INTER_LINEAR)
            vis = cv2.resize(vis, size, interpolation=cv2.INTER_LINEAR)
        pairs.append(Pair(found.name, np.ascontiguousarray(ir), np.ascontiguousarray(vis)))
    return pairs


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
