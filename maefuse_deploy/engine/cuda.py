"""Checked calls into cuda-python's runtime bindings (``cuda.bindings.runtime``).

Every binding returns a tuple whose first item is a ``cudaError_t``; :func:`checked` turns a failure into an
:class:`EngineError` naming the call, and returns the remaining items (None, one value, or a tuple).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .availability import cuda_error_name
from .errors import EngineError


def checked(cudart: ModuleType, result: tuple, what: str) -> Any:
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"CUDA failed {what}: {cuda_error_name(cudart, err)}", fix="check the GPU with nvidia-smi")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)
