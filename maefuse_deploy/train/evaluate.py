"""Validation during training and the test-split report of a trained model.

Arrays here are OpenCV-style: HxW uint8 grey, HxWx3 uint8 BGR. Fusion metrics come from
:mod:`maefuse_deploy.metrics`; where that module (or a metric) is unavailable the numbers are simply absent.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SplitReport:
    """What :func:`split_report` measured: per fusion (each model under its label, then ``mean`` and ``max``) each
    pair's scores in the pairs' order, and for each pictured pair its row IR | VIS | each model's fusion (one HxWx3
    BGR uint8 image at the input size, :func:`strip`)."""

    per_pair: dict[str, list[dict[str, float]]]
    pictures: dict[str, np.ndarray]

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Per fusion, the per-metric mean over the pairs."""
        return {name: mean_scores(rows) for name, rows in self.per_pair.items()}


def split_report(
    models: Mapping[str, str | os.PathLike[str]],
    pairs: Sequence[ImagePair],
    metrics: Sequence[str] = DEFAULT_METRICS,
    policy: Policy | None = None,
    pictured: Collection[str] = (),
    progress: bool = False,
) -> SplitReport:
    """Fuse every pair with each model (label -> checkpoint or trained model name) through the full runtime in
    torch float32 (``policy``; None: each model's own; input size out) and score it next to mean and max fusion;
    the pairs named in ``pictured`` also give a picture row. ``progress`` prints a pair counter."""
    from ..metrics import get_convention
    from ..metrics.compute import to_grey
    from ..runtime.fuser import Fuser

    # The baselines fuse the sources as the metrics see them (the default convention's grey conversion).
    grey_mode = get_convention("default").grey
    # Scores are of the models: float32, not auto's int8 or bf16.
    fusers = {label: Fuser.open(model, "torch", device="cpu", policy=policy) for label, model in models.items()}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*fusers, "mean", "max")}
    pictures = {}
    for index, pair in enumerate(pairs, 1):
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        fused = {label: fuser.fuse(ir, vis) for label, fuser in fusers.items()}
        for label, image in fused.items():
            rows[label].append(score(image, ir, vis, metrics))
        ir_grey, vis_grey = to_grey(ir, grey_mode), to_grey(vis, grey_mode)
        for kind in ("mean", "max"):
            rows[kind].append(score(baseline(ir_grey, vis_grey, kind), ir, vis, metrics))
        if pair.name in pictured:
            pictures[pair.name] = strip([ir, vis, *fused.values()])
        if progress:
            print(f"\r  {index}/{len(pairs)} pairs", end="" if index < len(pairs) else "\n", flush=True)
    return SplitReport(rows, pictures)


def stack_rows(rows: Sequence[np.ndarray], width: int = 1200) -> np.ndarray:
    """Picture rows (HxWx3 BGR uint8, any sizes) -> one BGR image, each row scaled to ``width``, top to bottom."""
    return np.concatenate([cv2.resize(row, (width, round(row.shape[0] * width / row.shape[1])),
                                      interpolation=cv2.INTER_AREA) for row in rows], axis=0)
