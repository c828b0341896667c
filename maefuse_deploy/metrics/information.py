"""Histogram metrics: entropy (EN) and mutual information (MI).

Inputs are HxW uint8 grey images of equal shape; the grey levels index 256-bin histograms directly.
"""

from __future__ import annotations

import numpy as np


def _entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram given as counts (any shape)."""
    p = counts[counts > 0].astype(np.float64) / counts.sum()
    return float(-(p * np.log2(p)).sum())


def entropy(f: np.ndarray) -> float:
    """EN: entropy in bits of the 256-bin histogram of ``f`` (HxW uint8)."""
    return _entropy_of_counts(np.bincount(f.ravel(), minlength=256))


def mutual_information(x: np.ndarray, f: np.ndarray, *, saturating_joint: bool = False) -> float:
    """MI(X,F) = H(X) + H(F) - H(X,F) in bits, from the 256-bin histograms of two HxW uint8 images.

    ``saturating_joint`` reproduces T22/T23: their joint histogram indexes with uint8(v)+1, which saturates at
    255, so levels 254 and 255 share a joint bin while the marginals stay exact. That lowers H(X,F) alone and
    inflates MI.
    """
    hx = _entropy_of_counts(np.bincount(x.ravel(), minlength=256))
    hf = _entropy_of_counts(np.bincount(f.ravel(), minlength=256))
    if saturating_joint:
        x, f = np.minimum(x, 254), np.minimum(f, 254)
    joint = np.bincount(x.ravel().astype(np.int64) * 256 + f.ravel(), minlength=256 * 256)
    return hx + hf - _entropy_of_counts(joint)


def stretch_to_u8(image: np.ndarray) -> np.ndarray:
    """VIFB's min-max stretch: round((v - min) / (max - min) * 255) half away from zero; constant -> zeros.

    ``image``: HxW uint8; returns HxW uint8.
    """
    lo, hi = int(image.min()), int(image.max())
    if lo == hi:
        return np.zeros_like(image)
    scaled = (image.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def mi_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str) -> float:
    """MI = MI(A,F) + MI(B,F) for HxW uint8 IR ``a``, VIS ``b`` and fused ``f``.

    ``variant``: "bits" (correct), "bits-saturating" (T22/T23), "nats" (CDD, sklearn), "nats-stretched" (VIFB).
    """
    if variant == "nats-stretched":
        a, b, f = stretch_to_u8(a), stretch_to_u8(b), stretch_to_u8(f)
    saturating = variant == "bits-saturating"
    bits = mutual_information(a, f, saturating_joint=saturating) + mutual_information(b, f, saturating_joint=saturating)
    return float(bits * np.log(2.0)) if variant.startswith("nats") else bits
