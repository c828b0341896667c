"""The backend layer: one module per backend, one base class (base.py) and the registry (registry.py).

Layers: runtime (Fuser) and bench open backends through :func:`open_backend`; backends import engine, model,
processing and contract, never upward. Backend modules load their library (torch, onnxruntime, TensorRT) when
imported, so this package imports them only on use.
"""

from __future__ import annotations

from .base import BackendBase, IoMode, is_tensor
from .devices import resolve_device
from .registry import (
    AUTO,
    FUSER_BACKENDS,
    REGISTRY,
    BackendEntry,
    backend_names,
    choose_backend,
    entry_for,
    get_entry,
    open_backend,
)

__all__ = [
    "AUTO",
    "FUSER_BACKENDS",
    "REGISTRY",
    "BackendBase",
    "BackendEntry",
    "IoMode",
    "backend_names",
    "choose_backend",
    "entry_for",
    "get_entry",
    "is_tensor",
    "open_backend",
    "resolve_device",
]
