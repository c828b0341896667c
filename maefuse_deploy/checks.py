"""Checks every layer shares (bottom layer: imports nothing of the package but its errors)."""

from __future__ import annotations

import numpy as np

from .errors import NonFiniteError


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    """Return ``array`` (any shape, floating or integer) unchanged if every value is finite; else raise
    :class:`NonFiniteError` naming ``what`` and how many values are NaN or infinite.

    Called where a backend's output comes back: a NaN cast to uint8 becomes a plausible-looking black pixel, so
    an overflowing network would otherwise write near-black images and exit 0.
    """
    finite = np.isfinite(array)
    if finite.all():
        return array
    bad = int(finite.size - np.count_nonzero(finite))
    raise NonFiniteError(
        f"{what} holds non-finite values (NaN or infinity) in {bad} of {finite.size} elements",
        fix="float16 overflows above 65504: run float32 or bfloat16, or check the weights",
    )
