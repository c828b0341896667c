"""Checked calls into cuda-python's runtime bindings (``cuda.bindings.runtime``).

Every binding returns a tuple whose first item is a ``cudaError_t``; :func:`checked` turns a failure into an
:class:`EngineError` naming the call, and returns the remaining items (None, one value, or a tuple).

:class:`CudaRuntime` names every part of ``cuda.bindings.runtime`` this package uses. The type checker (.ci/run)
checks the real module against it (availability.py assigns one to the other), with stubs generated from the
installed cuda-bindings, so a call the bindings do not have is a type error, not a crash on the first GPU run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .errors import EngineError

CudaCall = Callable[..., Any]  # every binding returns (cudaError_t, *values)


class CudaRuntime(Protocol):
    """The parts of ``cuda.bindings.runtime`` used here (module objects satisfy protocols structurally)."""

    cudaError_t: Any
    cudaMemcpyKind: Any
    cudaStreamCaptureMode: Any
    cudaStreamNonBlocking: int
    cudaEventDisableTiming: int
    cudaEventCreateWithFlags: CudaCall
    cudaEventDestroy: CudaCall
    cudaEventRecord: CudaCall
    cudaFree: CudaCall
    cudaFreeHost: CudaCall
    cudaGetDevice: CudaCall
    cudaGetDeviceCount: CudaCall
    cudaGetDeviceProperties: CudaCall
    cudaGetErrorName: CudaCall
    cudaGetLastError: CudaCall
    cudaGraphDestroy: CudaCall
    cudaGraphExecDestroy: CudaCall
    cudaGraphInstantiate: CudaCall
    cudaGraphLaunch: CudaCall
    cudaMalloc: CudaCall
    cudaMallocHost: CudaCall
    cudaMemcpyAsync: CudaCall
    cudaSetDevice: CudaCall
    cudaStreamBeginCapture: CudaCall
    cudaStreamCreateWithFlags: CudaCall
    cudaStreamDestroy: CudaCall
    cudaStreamEndCapture: CudaCall
    cudaStreamSynchronize: CudaCall
    cudaStreamWaitEvent: CudaCall


def checked(cudart: CudaRuntime, result: tuple[Any, ...], what: str) -> Any:
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineError(f"CUDA failed {what}: {cuda_error_name(cudart, err)}", fix="check the GPU with nvidia-smi")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@contextlib.contextmanager
def on_device(cudart: CudaRuntime, device: int) -> Iterator[None]:
    """Make ``device`` current for the block, then put back the device that was current before.

    CUDA keeps the current device per host thread, and a library call must not change the caller's: a caller
    working on another GPU would find its next allocations and launches there.
    """
    previous = checked(cudart, cudart.cudaGetDevice(), "reading the current CUDA device")
    if previous == device:
        yield
        return
    checked(cudart, cudart.cudaSetDevice(device), f"selecting CUDA device {device}")
    try:
        yield
    except BaseException:
        cudart.cudaSetDevice(previous)  # best effort: the error being raised is the one to report
        raise
    checked(cudart, cudart.cudaSetDevice(previous), f"selecting CUDA device {previous} again")


def cuda_error_name(cudart: CudaRuntime, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
    except Exception:  # an error while naming an error must not hide the original one
        return str(err)
    return text(name)


def text(value: Any) -> str:
    """A C string from the bindings (bytes with a NUL terminator, or str) as a Python str."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value).strip()
