"""Real IR/VIS pairs for checks: the samples shipped in the package, or any folder with ``ir/`` and ``vi/``.

One loader serves export verification, the benchmark's accuracy columns and the tests, so every check of a
graph, a backend or a precision runs on the same kind of input: real camera pairs, never random tensors alone
(activations on real images decide whether a low-precision path holds up). Library code reads only what it is
given or the package's own samples, never a path outside the package.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import InputError
from .io import find_pairs, read_image
from .processing import ir_to_grey8, prepare_pair

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass
class Pair:
    """A real pair as a camera delivers it: IR HxW uint8 grey, VIS HxWx3 uint8 BGR."""

    name: str
    ir: np.ndarray
    vis: np.ndarray


def load_pairs(folder: Path | None = None, count: int | None = None,
               camera_size: tuple[int, int] | None = None) -> list[Pair]:
    """The first ``count`` pairs (all when None) of ``folder`` (default: the shipped samples), matched by file
    stem, as 8-bit IR grey and VIS BGR; resized (bilinear) to ``camera_size`` (H, W) when given, for graphs that
    take frames of one fixed size."""
    folder = SAMPLES_DIR if folder is None else Path(folder)
    if count is not None and count < 1:
        raise InputError(f"--pairs must be at least 1, got {count}")
    pairs = []
    for found in find_pairs(folder / "ir", folder / "vi")[:count]:
        ir = read_image(found.ir, "IR")
        vis = read_image(found.vis, "VIS")
        if ir.dtype != np.uint8 or vis.dtype != np.uint8:
            raise InputError(f"pair {found.name} is not 8-bit", fix="use 8-bit check pairs")
        ir = ir_to_grey8(ir)
        vis = cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR) if vis.ndim == 2 else vis[:, :, :3]
        if camera_size is not None and ir.shape[:2] != camera_size:
            size = (camera_size[1], camera_size[0])
            ir = cv2.resize(ir, size, interpolation=cv2.INTER_LINEAR)
            vis = cv2.resize(vis, size, interpolation=cv2.INTER_LINEAR)
        pairs.append(Pair(found.name, np.ascontiguousarray(ir), np.ascontiguousarray(vis)))
    return pairs


def as_arrays(pairs: Sequence[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(IR, VIS) tuples in the layout ``Fuser.fuse_batch`` takes."""
    return [(p.ir, p.vis) for p in pairs]


def cycled(items: Sequence, count: int) -> list:
    """``count`` items taken in turn from ``items`` (repeating them when there are fewer): fills a batch."""
    return [items[i % len(items)] for i in range(count)]


def batches(items: Sequence, sizes: Sequence[int]) -> Iterator[tuple[int, list]]:
    """The data loader of a check: for each batch size, (size, that many items taken in turn from ``items``)."""
    for size in sizes:
        yield size, cycled(items, size)


def network_inputs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: tuple[int, int], patch: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Real pairs through the official preprocessing: IR and VIS as (B, 3, H, W) float32 ImageNet-normalised."""
    prepared = [prepare_pair(ir, vis, "official", size, patch) for ir, vis in pairs]
    return torch.from_numpy(np.stack([p[0] for p in prepared])), torch.from_numpy(np.stack([p[1] for p in prepared]))
