"""Per-image evaluation: input checks, colour-to-grey per convention, and dispatch to the metric modules.

Arrays enter in OpenCV's layout: HxW grey or HxWx3 BGR (HxWx4 BGRA: alpha ignored), dtype uint8, all three with
the same HxW. Metric values leave as a dict of Python floats keyed by column name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..errors import InputError
from .conventions import METRIC_NAMES, Convention, get_convention, select_metrics
from .gradient import nabf_fusion, qabf
from .information import entropy, mi_fusion
from .nlpd import nlpd_fusion
from .statistics import (
    average_gradient,
    cc_fusion,
    psnr_fusion,
    scd_fusion,
    spatial_frequency,
    standard_deviation,
)
from .structural import ssim_fusion, vif_fusion

# Smallest image side each metric is defined on: VIF's four 'valid' scales need 41 px (a 17-px window, then 9,
# 5 and 3 after each halving), SSIM's 'valid' 11x11 window 11 px; the gradients need 2.
MIN_SIDE = {"VIF": 41, "SSIM": 11}

# MATLAB rgb2gray's weights are the first row of the inverse NTSC matrix (0.298936, 0.587043, 0.114021); the
# 4-digit values in its documentation round 1.3% of random colours differently (0.003-0.08% of real photos).
_MATLAB_RGB_WEIGHTS = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]

_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, Convention], float]] = {
    "EN": lambda a, b, f, c: entropy(f),
    "SD": lambda a, b, f, c: standard_deviation(f, c.sd),
    "SF": lambda a, b, f, c: spatial_frequency(f, c.sf),
    "AG": lambda a, b, f, c: average_gradient(f, c.ag),
    "MI": lambda a, b, f, c: mi_fusion(a, b, f, c.mi),
    "CC": lambda a, b, f, c: cc_fusion(a, b, f),
    "SCD": lambda a, b, f, c: scd_fusion(a, b, f),
    "PSNR": lambda a, b, f, c: psnr_fusion(a, b, f, c.psnr),
    "VIF": lambda a, b, f, c: vif_fusion(a, b, f, c.vif),
    "Qabf": lambda a, b, f, c: qabf(a, b, f, c.qabf),
    "Nabf": lambda a, b, f, c: nabf_fusion(a, b, f, c.nabf),
    "SSIM": lambda a, b, f, c: ssim_fusion(a, b, f, c.ssim),
    "NLPD": lambda a, b, f, c: nlpd_fusion(a, b, f),
}


def check_inputs(
    fused: np.ndarray,
    ir: np.ndarray,
    vis: np.ndarray,
    labels: Sequence[str] = ("fused image", "IR", "VIS"),
    metrics: Sequence[str] = METRIC_NAMES,
) -> None:
    """Raise :class:`InputError` naming the offending input (``labels``: how to name fused, IR, VIS) if the
    arrays cannot be scored with ``metrics``."""
    min_side, needed_by = max((MIN_SIDE.get(m, 2), m) for m in metrics)
    for image, label in zip((fused, ir, vis), labels, strict=True):
        if not isinstance(image, np.ndarray):
            raise InputError(f"{label} is a {type(image).__name__}, not a numpy array", fix="pass a uint8 array")
        if image.dtype != np.uint8:
            raise InputError(
                f"{label} has dtype {image.dtype}; the fusion metrics are defined on 8-bit images",
                fix="convert it to uint8 (0-255)",
            )
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise InputError(f"{label} has shape {image.shape}", fix="pass HxW grey or HxWx3 BGR")
        if min(image.shape[:2]) < min_side:
            raise InputError(
                f"{label} is {image.shape[1]}x{image.shape[0]} (WxH), smaller than the {min_side}x{min_side} that "
                f"{needed_by} needs",
                fix="evaluate larger images or leave that metric out",
            )
    size = fused.shape[:2]
    for image, label in zip((ir, vis), labels[1:], strict=True):
        if image.shape[:2] != size:
            raise InputError(
                f"{label} is {image.shape[1]}x{image.shape[0]} but {labels[0]} is {size[1]}x{size[0]} (WxH)",
                fix="evaluate registered pairs with fused images of the same size",
            )


def to_grey(image: np.ndarray, mode: str) -> np.ndarray:
    """HxW or HxWx3/4 BGR(A) uint8 -> HxW uint8 by ``mode``: "cv2", "cv2-float-round" (CDD) or "matlab"."""
    if image.ndim == 2:
        return image
    bgr = np.ascontiguousarray(image[:, :, :3])
    if mode == "cv2":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if mode == "cv2-float-round":
        grey = np.round(cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY))
        return np.clip(grey, 0, 255).astype(np.uint8)
    weighted = bgr[:, :, ::-1].astype(np.float64) @ _MATLAB_RGB_WEIGHTS
    # MATLAB's uint8() rounds half away from zero; the weighted sums are non-negative.
    return np.clip(np.floor(weighted + 0.5), 0, 255).astype(np.uint8)


def evaluate_grey(
    ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, convention: Convention, metrics: Sequence[str]
) -> dict[str, float]:
    """The selected metrics (canonical names) on HxW uint8 grey images, plus the convention's extra columns."""
    values = {name: _METRICS[name](ir, vis, fused, convention) for name in metrics}
    if "PSNR" in values:
        for variant in convention.psnr_also:
            values[f"PSNR_{variant}"] = psnr_fusion(ir, vis, fused, variant)
    return {column: values[column] for column in convention.columns if column in values}


def _per_channel(
    fused: np.ndarray, ir: np.ndarray, vis: np.ndarray, convention: Convention, metrics: Sequence[str]
) -> dict[str, float]:
    """VIFB with a colour fused image: R, G, B of F against the same channel of VIS (and of IR, if colour)."""

    def channel(image: np.ndarray, k: int) -> np.ndarray:
        return np.ascontiguousarray(image[:, :, 2 - k]) if image.ndim == 3 else image

    channels = [(channel(ir, k), channel(vis, k), channel(fused, k)) for k in range(3)]
    per_channel = [evaluate_grey(a, b, f, convention, metrics) for a, b, f in channels]
    values = {column: float(np.mean([v[column] for v in per_channel])) for column in per_channel[0]}
    if "SF" in values:
        # VIFB's SF takes size(fused) as [m, n] on the colour array, so it runs on R|G|B side by side.
        values["SF"] = spatial_frequency(np.hstack([f for _, _, f in channels]), convention.sf)
    return values


def evaluate(
    fused: np.ndarray,
    ir: np.ndarray,
    vis: np.ndarray,
    convention: str | Convention = "default",
    metrics: str | Sequence[str] | None = None,
) -> dict[str, float]:
    """Fusion metrics of one fused image against its IR and VIS sources.

    Inputs: uint8 arrays, HxW grey or HxWx3 BGR (as OpenCV reads them), all the same HxW. ``convention``: a
    name in CONVENTIONS or a Convention. ``metrics``: names from METRIC_NAMES (list or comma-separated; None:
    all). Returns {column: value} in report order; the convention's extra PSNR columns (PSNR_tang for
    "default") come with PSNR. Undefined values (e.g. CC of a constant image) are NaN.
    """
    convention = get_convention(convention)
    names = select_metrics(metrics)
    check_inputs(fused, ir, vis, metrics=names)
    if convention.grey == "per-channel":
        if fused.ndim == 3:
            return _per_channel(fused, ir, vis, convention, names)
        mode = "matlab"
    else:
        mode = convention.grey
    return evaluate_grey(to_grey(ir, mode), to_grey(vis, mode), to_grey(fused, mode), convention, names)
