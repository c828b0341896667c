"""Is TensorRT here, and a CUDA GPU to run it on? Every TensorRT command asks before doing anything else.

TensorRT and cuda-python are the optional ``trt`` extra, so they are imported here, inside functions, and nowhere
at module level: ``import maefuse_deploy`` must work on a machine without them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import UnavailableError
from .cuda import CudaRuntime, cuda_error_name, text
from .sidecar import RuntimeFacts

INSTALL_FIX = (
    'on a machine with an NVIDIA GPU: pip install "maefuse-deploy[trt-cu12]" (CUDA 12.x, driver R525 or newer) '
    'or "maefuse-deploy[trt-cu13]" (CUDA 13.x, driver R580 or newer)'
)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes


def import_tensorrt() -> ModuleType:
    trt, why = _try_tensorrt()
    if trt is None:
        raise UnavailableError(why or "TensorRT is not available", fix=INSTALL_FIX)
    return trt


def import_cudart() -> CudaRuntime:
    cudart, why = _try_cudart()
    if cudart is None:
        raise UnavailableError(why or "cuda-python is not available", fix=INSTALL_FIX)
    return cudart


def gpu_info(cudart: CudaRuntime, device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``; :class:`UnavailableError` when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        raise UnavailableError(
            f"TensorRT needs a CUDA GPU, but CUDA reports cudaErrorInsufficientDriver: no NVIDIA driver, or one older "
            f"than cuda-python {_cuda_python_version()} needs (12.x: R525+, 13.x: R580+)",
            fix='on a driver older than R580 use pip install "maefuse-deploy[trt-cu12]"; check the driver with '
            "nvidia-smi",
        )
    if err != cudart.cudaError_t.cudaSuccess:
        raise UnavailableError(
            f"TensorRT needs a CUDA GPU, but CUDA reports {cuda_error_name(cudart, err)}", fix=INSTALL_FIX
        )
    if count == 0:
        raise UnavailableError("TensorRT needs a CUDA GPU, but no CUDA GPU is visible", fix=INSTALL_FIX)
    if not 0 <= device < count:
        raise UnavailableError(
            f"CUDA device {device} does not exist (this machine has {count})", fix=f"choose a device in 0..{count - 1}"
        )
    err, props = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise UnavailableError(f"cannot query CUDA device {device}: {cuda_error_name(cudart, err)}", fix=INSTALL_FIX)
    return GpuInfo(device, text(props.name), (int(props.major), int(props.minor)), int(props.totalGlobalMem))


def require(device: int = 0) -> tuple[ModuleType, CudaRuntime, GpuInfo]:
    """Return (tensorrt, cudart, GpuInfo), or raise one :class:`UnavailableError` naming everything missing."""
    trt, trt_missing = _try_tensorrt()
    cudart, cuda_missing = _try_cudart()
    if trt is None or cudart is None:
        missing = [why for why in (trt_missing, cuda_missing) if why]
        if cudart is None:
            missing.append("without cuda-python no CUDA GPU could be looked for")
        raise UnavailableError("; ".join(missing), fix=INSTALL_FIX)
    return trt, cudart, gpu_info(cudart, device)


def runtime_facts(trt: ModuleType, gpu: GpuInfo) -> RuntimeFacts:
    return RuntimeFacts(trt.__version__, gpu.name, gpu.compute_capability)



def _cuda_python_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cuda-bindings")
    except PackageNotFoundError:
        return "(unknown version)"



def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _try_tensorrt() -> tuple[ModuleType | None, str | None]:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer cannot be loaded
        return None, f"TensorRT is not available ({_reason(exc)})"
    if getattr(tensorrt, "__file__", None) is None or not hasattr(tensorrt, "__version__"):
        # tensorrt-stubs (the type checker's stubs) installs a folder of .pyi files that imports as an empty
        # namespace package: TensorRT itself is not there.
        return None, "TensorRT is not available (only its type stubs, tensorrt-stubs, are installed)"
    return tensorrt, None


def _try_cudart() -> tuple[CudaRuntime | None, str | None]:
    try:
        from cuda.bindings import runtime as cudart
    except (ImportError, OSError) as exc:
        return None, f"cuda-python is not available ({_reason(exc)})"
    checked_module: CudaRuntime = cudart  # the type checker holds the real bindings to CudaRuntime here
    return checked_module, None


class LogRouter:
    """Routes log messages to the sinks registered now (pure Python; the TensorRT logger below wraps it).

    Older TensorRT keeps the first logger it was given for the whole process, so the process has one TensorRT
    logger, and each build or runtime attaches its own sink (a build log file) for as long as it runs.
    """

    def __init__(self, min_level: int) -> None:
        self.min_level = min_level  # lower numbers are more severe in TensorRT's ILogger.Severity
        self._sinks: list[Callable[[int, str, str], None]] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def attached(self, sink: Callable[[int, str, str], None]) -> Iterator[None]:
        with self._lock:
            self._sinks.append(sink)
        try:
            yield
        finally:
            with self._lock:
                self._sinks.remove(sink)

    def has_sinks(self) -> bool:
        return bool(self._sinks)

    def emit(self, level: int, name: str, message: str) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            sink(level, name, message)


_SHARED: dict[int, Any] = {}


def shared_logger(trt: ModuleType) -> Any:
    """The process's one TensorRT logger (a ``trt.ILogger`` whose ``router`` reaches the attached sinks).

    Without a sink, warnings and errors go to stderr, as TensorRT's own default logger does.
    """
    key = id(trt)
    if key not in _SHARED:
        severity = trt.ILogger.Severity
        warning = int(severity.WARNING)

        class SharedLogger(trt.ILogger):  # type: ignore[name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.router = LogRouter(int(severity.VERBOSE))

            def log(self, level: Any, msg: str) -> None:
                name = getattr(level, "name", str(level))
                if self.router.has_sinks():
                    self.router.emit(int(level), name, msg)
                elif int(level) <= warning:
                    print(f"[TensorRT {name}] {msg}", file=sys.stderr)

        _SHARED[key] = SharedLogger()
    return _SHARED[key]
