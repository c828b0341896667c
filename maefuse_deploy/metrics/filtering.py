"""Linear filtering shared by the metrics, in the MATLAB shapes the reference code uses ('valid', 'same').

All arrays are HxW float64 (or float32 where a caller says so). OpenCV does the arithmetic: its separable
filters are several times faster than scipy.ndimage on the 640x480 images the metrics run on.
"""

from __future__ import annotations

import cv2
import numpy as np

BORDERS = {
    "zero": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    # MATLAB's 'symmetric' repeats the edge pixel (d c b a | a b c d), which is OpenCV's REFLECT.
    "symmetric": cv2.BORDER_REFLECT,
    # Mirror WITHOUT repeating the edge (d c b | a b c d): numpy's 'reflect', OpenCV's REFLECT_101. The reference
    # Nabf code's per_extn_im_fn extends the image this way (docs/metrics.md, "Border rules").
    "reflect": cv2.BORDER_REFLECT_101,
}


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of odd ``size``; its outer product is MATLAB's fspecial('gaussian', size, sigma)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def separable(image: np.ndarray, kernel: np.ndarray, border: str = "zero") -> np.ndarray:
    """'same'-size correlation of ``image`` with outer(kernel, kernel); ``border`` is a key of BORDERS."""
    return cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=BORDERS[border])


def separable_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB filter2(outer(kernel, kernel), image, 'valid'): output (H-k+1)x(W-k+1)."""
    r = (kernel.size - 1) // 2
    full = separable(image, kernel)
    return full[r : full.shape[0] - r, r : full.shape[1] - r]


def correlate_same(image: np.ndarray, kernel: np.ndarray, border: str) -> np.ndarray:
    """'same'-size 2-D correlation with an odd-sized kernel (MATLAB imfilter)."""
    return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=BORDERS[border])


def convolve_same(image: np.ndarray, kernel: np.ndarray, border: str = "zero") -> np.ndarray:
    """'same'-size 2-D convolution with an odd-sized kernel (MATLAB conv2(..., 'same') for border 'zero')."""
    return correlate_same(image, np.ascontiguousarray(kernel[::-1, ::-1]), border)
