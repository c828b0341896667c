"""Errors raised by the engine builder and the TensorRT runtime (all :class:`MaeFuseError`, exit code 1)."""

from __future__ import annotations

from ..errors import MaeFuseError


class EngineError(MaeFuseError):
    """TensorRT or CUDA failed while building, loading or running an engine."""


class EngineCompatibilityError(EngineError):
    """An engine that does not belong on this machine: other TensorRT, other GPU architecture, changed ONNX."""
