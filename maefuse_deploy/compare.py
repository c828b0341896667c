"""Image-to-image agreement statistics shared by export verification, the benchmark and metric comparisons."""

from __future__ import annotations

import math

import numpy as np


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error on a 0..peak scale; inf for identical images."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images of one shape (peak 255); inf when they are identical."""
    return psnr_from_mse(float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)))
