"""NLPD: normalised Laplacian pyramid distance (Laparra, Balle, Berardino, Simoncelli 2016).

Grey images on [0,1] (HxW float64). A 6-level Laplacian pyramid with the 5-tap binomial-like kernel, each band
divided by a local amplitude estimate, and the RMS difference per band averaged over the bands.
"""

from __future__ import annotations

import numpy as np

from .filtering import convolve_same, separable

LEVELS = 6
_PYRAMID_KERNEL = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
SIGMAS = (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)
# Neighbour weights per level as (row offset, column offset): weight, placed in a 5x5 kernel around its centre.
_NEIGHBOURS: tuple[dict[tuple[int, int], float], ...] = (
    {(-1, 0): 0.1011, (0, -1): 0.1493, (0, 1): 0.1460, (0, 2): 0.0072, (1, 0): 0.1015},
    {(-1, 0): 0.0757, (0, -1): 0.1986, (0, 1): 0.1846, (1, 0): 0.0837},
    {(-1, 0): 0.0477, (0, -1): 0.2138, (0, 1): 0.2243, (1, 0): 0.0467},
    {(0, -1): 0.2503, (0, 1): 0.2616},
    {(0, -1): 0.2598, (0, 1): 0.2552},
    {(0, -1): 0.2215, (0, 1): 0.0717},
)


def _kernel(taps: dict[tuple[int, int], float]) -> np.ndarray:
    k = np.zeros((5, 5))
    for (dr, dc), weight in taps.items():
        k[2 + dr, 2 + dc] = weight
    return k


NEIGHBOUR_KERNELS = tuple(_kernel(taps) for taps in _NEIGHBOURS)


def _down(image: np.ndarray) -> np.ndarray:
    return separable(image, _PYRAMID_KERNEL, "symmetric")[::2, ::2]


def _up(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Expand ``coarse`` to ``shape``: replicate-pad 1, zero-insert, x4, filter with zero padding, crop."""
    padded = np.pad(coarse, 1, mode="edge")
    inserted = np.zeros((2 * padded.shape[0], 2 * padded.shape[1]))
    inserted[::2, ::2] = 4.0 * padded
    # Output pixel k of the finer level sits at index k + 2 of the zero-inserted padded grid.
    return separable(inserted, _PYRAMID_KERNEL, "zero")[2 : 2 + shape[0], 2 : 2 + shape[1]]


def laplacian_pyramid(image: np.ndarray, levels: int = LEVELS) -> list[np.ndarray]:
    """Band-pass levels, finest first, then the low-pass residual as the last of ``levels`` arrays."""
    bands = []
    current = image
    for _ in range(levels - 1):
        coarse = _down(current)
        bands.append(current - _up(coarse, current.shape))
        current = coarse
    bands.append(current)
    return bands


def normalised_pyramid(image: np.ndarray) -> list[np.ndarray]:
    """Each band L_k divided by sigma_k + P_k * |L_k| (2-D convolution, 'same', zero padding)."""
    return [
        band / (sigma + convolve_same(np.abs(band), kernel, "zero"))
        for band, sigma, kernel in zip(laplacian_pyramid(image), SIGMAS, NEIGHBOUR_KERNELS, strict=True)
    ]


def _distance(px: list[np.ndarray], py: list[np.ndarray]) -> float:
    return float(np.mean([np.sqrt(np.mean((bx - by) ** 2)) for bx, by in zip(px, py, strict=True)]))


def nlpd(x: np.ndarray, y: np.ndarray) -> float:
    """NLPD between two HxW [0,1] float64 images: mean over the 6 bands of the RMS of the normalised difference."""
    return _distance(normalised_pyramid(x), normalised_pyramid(y))


def nlpd_fusion(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """(NLPD(F,A) + NLPD(F,B)) / 2 for HxW uint8 IR ``a``, VIS ``b``, fused ``f``. Lower is better."""
    pf = normalised_pyramid(f.astype(np.float64) / 255.0)
    pa = normalised_pyramid(a.astype(np.float64) / 255.0)
    pb = normalised_pyramid(b.astype(np.float64) / 255.0)
    return (_distance(pf, pa) + _distance(pf, pb)) / 2.0
