"""Edge-transfer metrics: Qabf (Xydeas-Petrovic) and Nabf (Kumar's modified artifact measure).

Inputs are HxW uint8 grey images of equal shape. Both metrics run in float64 on 0-255 unless the variant scales
the data to [0,1] as T22 did: that matters because of Qabf's gradient-tie branch and Nabf's Td = 2 threshold.
"""

from __future__ import annotations

import numpy as np

from .filtering import convolve_same, correlate_same

_HALF_PI = np.pi / 2.0
_QABF_SX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_QABF_SY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
_NABF_V = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8.0
_NABF_H = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64) / 8.0
_NABF_TD = 2.0


def _scaled(image: np.ndarray, variant: str) -> np.ndarray:
    x = image.astype(np.float64)
    return x / 255.0 if variant == "unit" else x


def _qabf_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel magnitude and orientation as the reference: conv2 'same' (zero padding), atan(sy/sx), pi/2 at sx=0."""
    sx = convolve_same(x, _QABF_SX, "zero")
    sy = convolve_same(x, _QABF_SY, "zero")
    flat = sx == 0
    alpha = np.arctan(np.divide(sy, sx, out=np.zeros_like(sy), where=~flat))
    alpha[flat] = _HALF_PI
    return np.sqrt(sx * sx + sy * sy), alpha


def _qabf_preservation(gx: np.ndarray, ax: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        # The reference sets G = gF (not 1) where the magnitudes tie; on 0-255 integer data a tie means gF >= 1
        # or 0, so this only matters on [0,1] data (T22).
        strength = np.where(gx > gf, gf / gx, np.where(gx < gf, gx / gf, gf))
    orientation = 1.0 - np.abs(ax - af) / _HALF_PI
    q_g = 0.9994 / (1.0 + np.exp(-15.0 * (strength - 0.5)))
    q_a = 0.9879 / (1.0 + np.exp(-22.0 * (orientation - 0.8)))
    return q_g * q_a


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str = "0-255") -> float:
    """Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB); "0-255" or "unit" (images / 255, T22). NaN if A, B flat."""
    ga, aa = _qabf_gradient(_scaled(a, variant))
    gb, ab = _qabf_gradient(_scaled(b, variant))
    gf, af = _qabf_gradient(_scaled(f, variant))
    numerator = (_qabf_preservation(ga, aa, gf, af) * ga + _qabf_preservation(gb, ab, gf, af) * gb).sum()
    denominator = (ga + gb).sum()
    return float(numerator / denominator) if denominator > 0 else float("nan")


def _nabf_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel/8 by correlation, borders mirrored without repeating the edge (the reference's per_extn_im_fn,
    docs/metrics.md "Border rules"); orientation atan(gv/gh) (+-pi/2 at gh=0), 0 where flat."""
    gv = correlate_same(x, _NABF_V, "reflect")
    gh = correlate_same(x, _NABF_H, "reflect")
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.arctan(gv / gh)
    alpha[(gv == 0) & (gh == 0)] = 0.0
    return np.sqrt(gv * gv + gh * gh), alpha


def _nabf_preservation(gx: np.ndarray, ax: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where((gx == 0) | (gf == 0), 0.0, np.minimum(gx, gf) / np.maximum(gx, gf))
    orientation = np.abs(np.abs(ax - af) - _HALF_PI) / _HALF_PI
    q_g = 0.9999 / (1.0 + np.exp(-19.0 * (strength - 0.5)))
    q_a = 0.9995 / (1.0 + np.exp(-22.0 * (orientation - 0.5)))
    return np.sqrt(q_g * q_a)


def nabf(fused: np.ndarray, src1: np.ndarray, src2: np.ndarray) -> float:
    """Kumar's modified Nabf(fused; src1, src2) on HxW float64 images, in the data's own scale (Td = 2).

    Artifacts are pixels where the fused gradient exceeds both sources'; each counts the lost edge
    preservation weighted by w = g^1.5 (g >= Td) or 0.001. Lower is better.
    """
    ga, aa = _nabf_gradient(src1)
    gb, ab = _nabf_gradient(src2)
    gf, af = _nabf_gradient(fused)
    wa = np.where(ga >= _NABF_TD, ga**1.5, 0.001)
    wb = np.where(gb >= _NABF_TD, gb**1.5, 0.001)
    artifact = (gf > ga) & (gf > gb)
    lost = (1.0 - _nabf_preservation(ga, aa, gf, af)) * wa + (1.0 - _nabf_preservation(gb, ab, gf, af)) * wb
    return float(lost[artifact].sum() / (wa + wb).sum())


def nabf_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str = "0-255") -> float:
    """Nabf for HxW uint8 IR ``a``, VIS ``b``, fused ``f``.

    "0-255": correct; "unit": on images / 255 (T22, all weights 0.001); "swapped": T23's call
    analysis_nabf(A, B, F) into the signature (fused, src1, src2), which takes IR as the fused image.
    """
    if variant == "swapped":
        return nabf(_scaled(a, variant), _scaled(b, variant), _scaled(f, variant))
    return nabf(_scaled(f, variant), _scaled(a, variant), _scaled(b, variant))
