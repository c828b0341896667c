"""Validation during training and the test-split report of a trained model.

Arrays here are OpenCV-style: HxW uint8 grey, HxWx3 uint8 BGR. Fusion metrics come from
:mod:`maefuse_deploy.metrics`; where that module (or a metric) is unavailable the numbers are simply absent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..io import ImagePair, read_image
from ..processing import Policy, denormalise

DEFAULT_METRICS: tuple[str, ...] = ("Qabf", "SCD", "EN", "SD")


def tensor_to_grey8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) normalised network images -> B HxW uint8 grey (the release's post-processing + RGB2GRAY)."""
    decoded = images.detach().float().cpu().numpy()
    return [cv2.cvtColor(denormalise(item), cv2.COLOR_RGB2GRAY) for item in decoded]


def baseline(ir: np.ndarray, vis_grey: np.ndarray, kind: str) -> np.ndarray:
    """Pixel-wise ``mean`` ((IR + VIS)/2, rounded) or ``max`` fusion of two HxW uint8 greys."""
    if kind == "mean":
        return ((ir.astype(np.uint16) + vis_grey.astype(np.uint16) + 1) // 2).astype(np.uint8)
    if kind == "max":
        return np.maximum(ir, vis_grey)
    raise ValueError(f"unknown baseline {kind!r}")


def score(
    fused: np.ndarray, ir: np.ndarray, vis: np.ndarray, metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Fusion metrics of one fused image against its sources (default convention); {} without a metrics module."""
    try:
        from ..metrics import evaluate
    except ImportError:
        return {}
    values = evaluate(fused, ir, vis, convention="default", metrics=list(metrics))
    return {name: float(value) for name, value in values.items()}


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def strip(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side HxW uint8 greys or HxWx3 BGRs of one height -> one BGR image with white gaps."""
    tiles = [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image for image in images]
    height = tiles[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for tile in tiles:
        row += [tile, spacer]
    return np.concatenate(row[:-1], axis=1)


def test_report(
    checkpoint: str | os.PathLike[str],
    pairs: Sequence[ImagePair],
    metrics: Sequence[str] = DEFAULT_METRICS,
    fused_dir: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
) -> dict[str, dict[str, float]]:
    """Fuse every pair with the full runtime (``policy``; None: the model's own; input size out) and score it next
    to mean and max fusion. Returns {"model": ..., "mean": ..., "max": ...}, each the per-metric mean over the pairs."""
    from ..io import write_image
    from ..metrics import get_convention
    from ..metrics.compute import to_grey
    from ..runtime.fuser import Fuser

    # The baselines fuse the sources as the metrics see them (the default convention's grey conversion).
    grey_mode = get_convention("default").grey
    fuser = Fuser.open(checkpoint, "torch", policy=policy)  # scores are of the model: float32, not auto's int8
    rows: dict[str, list[dict[str, float]]] = {"model": [], "mean": [], "max": []}
    for pair in pairs:
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        fused = fuser.fuse(ir, vis)
        if fused_dir is not None:
            write_image(Path(fused_dir) / f"{pair.name}.png", fused)
        ir_grey, vis_grey = to_grey(ir, grey_mode), to_grey(vis, grey_mode)
        rows["model"].append(score(fused, ir, vis, metrics))
        for kind in ("mean", "max"):
            rows[kind].append(score(baseline(ir_grey, vis_grey, kind), ir, vis, metrics))
    return {name: mean_scores(values) for name, values in rows.items()}


def write_preview(
    checkpoint: str | os.PathLike[str],
    pairs: Sequence[ImagePair],
    path: str | os.PathLike[str],
    width: int = 1200,
    policy: Policy | None = None,
) -> Path:
    """One row per pair, IR | VIS | fused (colour, input size, full runtime), scaled to ``width``; PNG at ``path``."""
    from ..io import write_image
    from ..runtime.fuser import Fuser

    fuser = Fuser.open(checkpoint, "torch", policy=policy)  # scores are of the model: float32, not auto's int8
    rows = []
    for pair in pairs:
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        row = strip([ir, vis, fuser.fuse(ir, vis)])
        rows.append(cv2.resize(row, (width, round(row.shape[0] * width / row.shape[1])), interpolation=cv2.INTER_AREA))
    return write_image(path, np.concatenate(rows, axis=0))
