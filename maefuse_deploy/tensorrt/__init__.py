"""TensorRT engines: build (build.py), describe and check (sidecar.py); running one is backends/tensorrt.py.

Nothing here imports TensorRT or cuda-python at module level; they are the optional ``trt`` extra and are loaded
when a build starts or a backend is created (availability.py).
"""

from __future__ import annotations

from ..contract import BatchProfile, parse_batch_profile
from .build import BuildOptions, BuildResult, build_engine, prepare_build
from .sidecar import RuntimeFacts, Sidecar, check_compatibility, read_sidecar, sidecar_path, write_sidecar

__all__ = [
    "BatchProfile",
    "BuildOptions",
    "BuildResult",
    "RuntimeFacts",
    "Sidecar",
    "build_engine",
    "check_compatibility",
    "parse_batch_profile",
    "prepare_build",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
