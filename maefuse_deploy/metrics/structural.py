"""Window-statistics metrics: SSIM (three published conventions) and VIF (Sheikh-Bovik pixel-domain VIFp).

Inputs are HxW uint8 grey images of equal shape; the statistics are float64 on 0-255 (float32 only where a
convention reproduces a float32 reference).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from .filtering import gaussian_1d, separable, separable_valid

_WANG_WINDOW = gaussian_1d(11, 1.5)
_WANG_C1 = (0.01 * 255.0) ** 2
_WANG_C2 = (0.03 * 255.0) ** 2
_VIF_SIGMA_N2 = 2.0
_VIF_EPS = 1e-10
_VIF_WINDOWS = tuple(gaussian_1d(n, n / 5.0) for n in (17, 9, 5, 3))


def ssim_gaussian(x: np.ndarray, y: np.ndarray, *, c1: float, c2: float, padding: str) -> float:
    """Mean SSIM map of two HxW float64 images with the 11x11 Gaussian (sigma 1.5) window.

    ``padding``: "valid" (Wang's ssim_index.m, VIFB) or "replicate" ('same' size, MATLAB's ssim()).
    """

    def window(img: np.ndarray) -> np.ndarray:
        if padding == "valid":
            return separable_valid(img, _WANG_WINDOW)
        return separable(img, _WANG_WINDOW, "replicate")

    mx, my = window(x), window(y)
    vx = window(x * x) - mx * mx
    vy = window(y * y) - my * my
    cxy = window(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def ssim_skimage019(x: np.ndarray, y: np.ndarray) -> float:
    """skimage 0.19 ``structural_similarity`` defaults on float32 0-255 images (CDD's call).

    7x7 uniform window (reflect padding), sample covariance (49/48), data_range 2 (the float dtype range, so
    C1 = 4e-4, C2 = 3.6e-3), mean of the map without its 3-px border; the arithmetic stays in float32 like the
    reference's, because with C ~ 0 the flat regions are decided by float32 rounding.
    """
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    cov_norm = 49.0 / 48.0
    mx = uniform_filter(x, size=7)
    my = uniform_filter(y, size=7)
    mxx = uniform_filter(x * x, size=7)
    myy = uniform_filter(y * y, size=7)
    mxy = uniform_filter(x * y, size=7)
    vx = cov_norm * (mxx - mx * mx)
    vy = cov_norm * (myy - my * my)
    vxy = cov_norm * (mxy - mx * my)
    c1 = (0.01 * 2.0) ** 2
    c2 = (0.03 * 2.0) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim_map[3:-3, 3:-3].mean(dtype=np.float64))


def ssim_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str = "wang-mean") -> float:
    """SSIM of F against both sources (HxW uint8 inputs).

    "wang-mean": (SSIM(F,A) + SSIM(F,B)) / 2 with Wang's constants (L=255), 'valid'; "wang-sum" (VIFB): the
    sum of the same; "matlab-dr1-mean" (T23): MATLAB ssim() on 0-255 with DynamicRange 1, replicate padding,
    halves; "skimage019-sum" (CDD): sum of skimage 0.19 defaults; "mef-ssim" (T22): not reproduced, NaN.
    """
    if variant == "mef-ssim":
        return float("nan")
    xa, xb, xf = (v.astype(np.float64) for v in (a, b, f))
    if variant == "skimage019-sum":
        return ssim_skimage019(xf, xa) + ssim_skimage019(xf, xb)
    if variant == "matlab-dr1-mean":
        pair = [ssim_gaussian(xf, s, c1=0.01**2, c2=0.03**2, padding="replicate") for s in (xa, xb)]
    else:
        pair = [ssim_gaussian(xf, s, c1=_WANG_C1, c2=_WANG_C2, padding="valid") for s in (xa, xb)]
    return pair[0] + pair[1] if variant == "wang-sum" else (pair[0] + pair[1]) / 2.0


def vifp_terms(ref: np.ndarray, dist: np.ndarray, *, u8_scale1: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-scale numerator and denominator sums (4 each) of LIVE's vifp_mscale for HxW 0-255 float64 images.

    ``u8_scale1`` reproduces T22, which passed uint8 images: at scale 1 the products ref.*ref, dist.*dist and
    ref.*dist saturate at 255 (the means do not), which zeroes most of scale 1's variances.
    """
    num = np.zeros(4)
    den = np.zeros(4)
    for s, window in enumerate(_VIF_WINDOWS):
        if s > 0:
            ref = separable_valid(ref, window)[::2, ::2]
            dist = separable_valid(dist, window)[::2, ::2]
        mu1 = separable_valid(ref, window)
        mu2 = separable_valid(dist, window)
        rr, dd, rd = ref * ref, dist * dist, ref * dist
        if u8_scale1 and s == 0:
            rr, dd, rd = np.minimum(rr, 255.0), np.minimum(dd, 255.0), np.minimum(rd, 255.0)
        sigma1_sq = np.maximum(separable_valid(rr, window) - mu1 * mu1, 0.0)
        sigma2_sq = np.maximum(separable_valid(dd, window) - mu2 * mu2, 0.0)
        sigma12 = separable_valid(rd, window) - mu1 * mu2
        # The fixes below follow vifp_mscale.m in order: each later rule overrides the earlier ones.
        g = sigma12 / (sigma1_sq + _VIF_EPS)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < _VIF_EPS
        g[flat_ref] = 0.0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0.0
        flat_dist = sigma2_sq < _VIF_EPS
        g[flat_dist] = 0.0
        sv_sq[flat_dist] = 0.0
        negative = g < 0
        sv_sq[negative] = sigma2_sq[negative]
        g[negative] = 0.0
        sv_sq = np.maximum(sv_sq, _VIF_EPS)
        num[s] = np.log10(1.0 + g * g * sigma1_sq / (sv_sq + _VIF_SIGMA_N2)).sum()
        den[s] = np.log10(1.0 + sigma1_sq / _VIF_SIGMA_N2).sum()
    return num, den


def vifp(ref: np.ndarray, dist: np.ndarray, *, u8_scale1: bool = False) -> float:
    """VIFp(ref, dist) for HxW 0-255 float64 images; NaN when ref has no variance at any scale."""
    num, den = vifp_terms(ref, dist, u8_scale1=u8_scale1)
    return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")


def vif_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray, variant: str = "float") -> float:
    """VIF = VIFp(A,F) + VIFp(B,F) for HxW uint8 inputs.

    "float": on 0-255 floats; "u8-scale1": T22's uint8 saturation at scale 1; "float-nan-is-1": CDD, which
    counts an undefined VIFp (flat source) as 1.
    """
    xf = f.astype(np.float64)
    total = 0.0
    for source in (a, b):
        value = vifp(source.astype(np.float64), xf, u8_scale1=variant == "u8-scale1")
        total += 1.0 if (variant == "float-nan-is-1" and np.isnan(value)) else value
    return total
