"""TensorRT engines: build (build.py), describe and check (sidecar.py), run (trt_backend.py).

Nothing here imports TensorRT or cuda-python at module level; they are the optional ``trt`` extra and are loaded
when a build starts or a backend is created (availability.py).
"""

from __future__ import annotations

from .build import BuildOptions, BuildResult, build_engine, prepare_build
from .profiles import BatchProfile, parse_batch
from .sidecar import RuntimeFacts, Sidecar, check_compatibility, read_sidecar, sidecar_path, write_sidecar
from .trt_backend import TensorRTBackend

__all__ = [
    "BatchProfile",
    "BuildOptions",
    "BuildResult",
    "RuntimeFacts",
    "Sidecar",
    "TensorRTBackend",
    "build_engine",
    "check_compatibility",
    "parse_batch",
    "prepare_build",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
