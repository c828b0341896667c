"""Checks every layer shares (bottom layer: imports nothing of the package but its errors)."""

from __future__ import annotations

import numpy as np

from .contract import parse_device
from .errors import InputError, NonFiniteError


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


def cuda_index(device: str) -> int | None:
    """A device string for a backend that runs on the CPU or one CUDA GPU (graphs, engines): ``cpu`` -> None,
    ``cuda`` -> 0, ``cuda:N`` -> N; ``auto`` (resolve it first) or anything else is a one-line error rather than a
    silent CPU run."""
    kind, index = parse_device(device)
    if kind == "auto":
        raise InputError(f"device {device!r} is not resolved", fix="use cpu, cuda or cuda:N (N: the GPU number)")
    return None if kind == "cpu" else (index or 0)
