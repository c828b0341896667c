"""Pixel statistics: SD, SF, AG (no reference) and CC, SCD, PSNR (against the sources).

Inputs are HxW uint8 grey images of equal shape; the arithmetic is float64 on 0-255 unless a variant says
otherwise.
"""

from __future__ import annotations

import numpy as np

_DB_0_255_OVER_UNIT = float(20.0 * np.log10(255.0))  # 48.13 dB: the Tang PSNR's offset from the standard one


def standard_deviation(f: np.ndarray, variant: str = "float") -> float:
    """SD of ``f``: "float" (population std on 0-255) or "u8-saturating" (T22).

    T22 ran sqrt(sum((F - mean).^2) / MN) on uint8 F: MATLAB rounds F - mean to uint8 (negatives become 0) and
    squares in uint8 (saturating at 255), so only pixels above the mean count and SD <= sqrt(255) = 15.97.
    """
    x = f.astype(np.float64)
    if variant == "float":
        return float(x.std())
    d = np.clip(np.floor(x - x.mean() + 0.5), 0.0, 255.0)
    return float(np.sqrt(np.minimum(d * d, 255.0).mean()))


def spatial_frequency(f: np.ndarray, variant: str = "0-255") -> float:
    """SF = sqrt(RF^2 + CF^2) of ``f``.

    "0-255": RF^2 and CF^2 are means over the M(N-1) row and (M-1)N column differences; "unit": the same on
    f/255 (T22); "0-255-over-MN": both difference sums divided by MN (VIFB).
    """
    x = f.astype(np.float64)
    dh = np.diff(x, axis=1)
    dv = np.diff(x, axis=0)
    if variant == "0-255-over-MN":
        return float(np.sqrt(((dh * dh).sum() + (dv * dv).sum()) / x.size))
    sf = float(np.sqrt((dh * dh).mean() + (dv * dv).mean()))
    return sf / 255.0 if variant == "unit" else sf


def average_gradient(f: np.ndarray, variant: str = "(M-1)(N-1)") -> float:
    """AG of ``f`` from MATLAB ``gradient`` (central inside, one-sided at the borders), 0-255.

    g = sqrt((gx^2 + gy^2) / 2); "(M-1)(N-1)": sum(g) / ((M-1)(N-1)) (T22/T23/VIFB); "MN": mean(g) (CDD).
    """
    gy, gx = np.gradient(f.astype(np.float64))
    g = np.sqrt((gx * gx + gy * gy) / 2.0)
    if variant == "MN":
        return float(g.mean())
    m, n = f.shape
    return float(g.sum() / ((m - 1) * (n - 1)))


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-shape arrays over all pixels; NaN when either is constant."""
    dx = x.astype(np.float64).ravel()
    dy = y.astype(np.float64).ravel()
    dx = dx - dx.mean()
    dy = dy - dy.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def cc_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """CC = (corr(A,F) + corr(B,F)) / 2."""
    return (correlation(a, f) + correlation(b, f)) / 2.0


def scd_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD = corr(F-B, A) + corr(F-A, B) (Aslantas & Bendes); NaN when F equals a source."""
    ff = f.astype(np.float64)
    return correlation(ff - b, a) + correlation(ff - a, b)


def psnr_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str = "standard") -> float:
    """PSNR of F against both sources; inf when F equals both.

    "standard": 10 log10(255^2 / MSE), MSE = (MSE(F,A) + MSE(F,B)) / 2 on 0-255. "tang" (T22/T23): the same MSE
    on [0,1] images with the 255 peak kept, i.e. standard + 48.13 dB. "cddfuse": peak max(F) instead of 255.
    "vifb": VIFB's "mse" = sqrt(SSE) / MN per source, averaged, then 20 log10(255 / sqrt(mse)).
    """
    ff = f.astype(np.float64)
    ea = ff - a
    eb = ff - b
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant == "vifb":
            mse = (np.sqrt((ea * ea).sum()) + np.sqrt((eb * eb).sum())) / (2.0 * ff.size)
            return float(10.0 * np.log10(255.0**2 / mse))
        mse = ((ea * ea).mean() + (eb * eb).mean()) / 2.0
        peak = float(ff.max()) if variant == "cddfuse" else 255.0
        psnr = float(10.0 * np.log10(peak**2 / mse))
    return psnr + _DB_0_255_OVER_UNIT if variant == "tang" else psnr
