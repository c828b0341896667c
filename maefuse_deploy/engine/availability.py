"""Is TensorRT here, and a CUDA GPU to run it on? Every TensorRT command asks before doing anything else.

TensorRT and cuda-python are the optional ``trt`` extra, so they are imported here, inside functions, and nowhere
at module level: ``import maefuse_deploy`` must work on a machine without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import UnavailableError
from .sidecar import RuntimeFacts

INSTALL_FIX = 'pip install "maefuse-deploy[trt]" on a machine with an NVIDIA GPU'


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes


def import_tensorrt() -> ModuleType:
    trt, why = _try_tensorrt()
    if trt is None:
        raise UnavailableError(why, fix=INSTALL_FIX)
    return trt


def import_cudart() -> ModuleType:
    cudart, why = _try_cudart()
    if cudart is None:
        raise UnavailableError(why, fix=INSTALL_FIX)
    return cudart


def gpu_info(cudart: ModuleType, device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``; :class:`UnavailableError` when there is none."""
    err, count = cudart.cudaGetDeviceCount()
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
    return GpuInfo(device, _text(props.name), (int(props.major), int(props.minor)), int(props.totalGlobalMem))


def require(device: int = 0) -> tuple[ModuleType, ModuleType, GpuInfo]:
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


def cuda_error_name(cudart: ModuleType, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
    except Exception:  # an error while naming an error must not hide the original one
        return str(err)
    return _text(name)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value).strip()


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _try_tensorrt() -> tuple[ModuleType | None, str | None]:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer cannot be loaded
        return None, f"TensorRT is not available ({_reason(exc)})"
    return tensorrt, None


def _try_cudart() -> tuple[ModuleType | None, str | None]:
    try:
        from cuda.bindings import runtime as cudart
    except (ImportError, OSError) as exc:
        return None, f"cuda-python is not available ({_reason(exc)})"
    return cudart, None
