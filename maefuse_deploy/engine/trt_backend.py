"""The TensorRT backend of :class:`maefuse_deploy.Fuser` (``backend="tensorrt"``).

Layouts are the backend contract (runtime/backend.py). How a call runs:

- The engine's sidecar is checked against this machine first (sidecar.check_compatibility); an engine built for
  another GPU architecture or TensorRT version is refused before TensorRT sees it.
- Execution contexts are not thread-safe, so each calling thread borrows one from a :class:`ContextPool` for the
  length of the call. Each pooled slot owns one CUDA stream, pinned host buffers and device buffers sized for the
  profile's largest batch (allocated once), and, with ``cuda_graph=True``, one captured CUDA graph per batch size.
- numpy in: copy into the pinned buffers, async host-to-device, enqueue (``execute_async_v3`` on tensor addresses
  set once, or a graph launch), async device-to-host, synchronise the stream, copy out.
- torch CUDA tensors in (:meth:`TensorRTBackend.run_torch`): TensorRT reads and writes the tensors' memory directly,
  enqueued on torch's current stream, with no copy and no host synchronisation; the result is ordered on that
  stream like any torch op. A slot used from another stream waits for its previous work through a CUDA event.
- Batches above the profile's maximum are split; batches below its minimum are padded with the last pair (every
  pair is computed independently, so padding cannot change the others) and the padding is dropped.

TensorRT and cuda-python are imported when a backend is created, never at module import.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, GraphInfo
from ..errors import InputError
from . import availability
from .cuda import checked
from .errors import EngineError
from .pool import ContextPool
from .sidecar import check_compatibility, read_sidecar, sidecar_path

DEFAULT_POOL_SIZE = 2  # each context holds the engine's activation memory; two keep a second thread busy
_TRT_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8}  # what the contract allows at io


class TensorRTBackend:
    """Runs a maefuse TensorRT engine; see the module docstring for the data path."""

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        device: int = 0,
        cuda_graph: bool = False,
        allow_incompatible: bool = False,
        pool_size: int | None = None,
        onnx_path: str | Path | None = None,
    ) -> None:
        self._pool: ContextPool[_Slot] | None = None
        self._engine = self._runtime = None
        self.engine_path = Path(engine_path)
        self.device = device
        self.cuda_graph = cuda_graph
        sidecar = read_sidecar(self.engine_path)
        trt, cudart, gpu = availability.require(device)
        self._trt, self._cudart = trt, cudart
        # Refuse before deserialising: TensorRT's own failure for a foreign plan does not say what to do.
        self.notes: list[str] = check_compatibility(
            sidecar,
            availability.runtime_facts(trt, gpu),
            onnx_path,
            allow_incompatible,
            engine_path=self.engine_path,
        )
        info = GraphInfo.from_metadata(sidecar.graph_metadata, source=str(sidecar_path(self.engine_path)))
        self.io = info.io
        self.patch_size = int(info.config.get("patch_size", 16))
        self.max_batch = sidecar.max_batch
        self.min_batch = sidecar.min_batch

        checked(cudart, cudart.cudaSetDevice(device), f"selecting CUDA device {device}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if sidecar.version_compat:
            # Version-compatible plans carry their own lean runtime (host code), which TensorRT only loads
            # when allowed; the sidecar says this plan was built that way on purpose.
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"TensorRT could not load engine {self.engine_path}",
                fix=f"rebuild it with maefuse-build-engine {sidecar.onnx_path} -o {self.engine_path} on this machine",
            )
        self._tensors = _io_tensors(trt, self._engine, self.engine_path)
        ir_shape = self._tensors[INPUT_IR].sample_shape
        self.input_size: tuple[int, int] | None = (
            (ir_shape[1], ir_shape[2]) if self.io == "float" else (ir_shape[0], ir_shape[1])
        )
        self._pool = ContextPool(lambda: _Slot(self), pool_size or DEFAULT_POOL_SIZE, destroy=_Slot.close)

    # -- Backend protocol -------------------------------------------------------------------------------------

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, layouts of the io mode (runtime/backend.py)."""
        pool = self._open_pool()
        ir, vis = np.asarray(ir), np.asarray(vis)
        self._check_inputs(ir.shape, vis.shape, ir.dtype, vis.dtype, "numpy arrays")
        out_spec = self._tensors[OUTPUT_FUSED]
        count = ir.shape[0]
        if count == 0:
            return np.empty((0, *out_spec.sample_shape), dtype=self._result_dtype())
        results = []
        with pool.acquire() as slot:
            slot.activate()
            for start in range(0, count, self.max_batch):
                chunk = slice(start, min(start + self.max_batch, count))
                a, b = _pad(ir[chunk], self.min_batch), _pad(vis[chunk], self.min_batch)
                results.append(slot.run_host(a, b)[: chunk.stop - chunk.start])
        fused = results[0] if len(results) == 1 else np.concatenate(results)
        return fused.astype(self._result_dtype(), copy=False)

    def close(self) -> None:
        """Wait for running calls, then free every context, buffer, stream, graph and the engine. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._engine = None
        self._runtime = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- torch ------------------------------------------------------------------------------------------------

    def run_torch(self, ir: Any, vis: Any) -> Any:
        """torch CUDA tensors in and out, same layouts; no copies when dtype matches and tensors are contiguous.

        The work is enqueued on torch's current stream of the tensors' device and not waited for, like any torch
        op. CUDA graphs are not used here: the tensor addresses change from call to call.
        """
        import torch

        pool = self._open_pool()
        for tensor, what in ((ir, "ir"), (vis, "vis")):
            if not isinstance(tensor, torch.Tensor) or tensor.device != torch.device("cuda", self.device):
                raise InputError(
                    f"run_torch needs {what} as a torch tensor on cuda:{self.device}",
                    fix="move it with .to('cuda:N'), or call run() with numpy arrays",
                )
        self._check_inputs(tuple(ir.shape), tuple(vis.shape), ir.dtype, vis.dtype, "torch tensors")
        specs = self._tensors
        ir = ir.to(_torch_dtype(torch, specs[INPUT_IR].dtype)).contiguous()
        vis = vis.to(_torch_dtype(torch, specs[INPUT_VIS].dtype)).contiguous()
        out_spec = specs[OUTPUT_FUSED]
        count = ir.shape[0]
        out = torch.empty((count, *out_spec.sample_shape), dtype=_torch_dtype(torch, out_spec.dtype), device=ir.device)
        if count == 0:
            return out
        stream = torch.cuda.current_stream(ir.device).cuda_stream
        with pool.acquire() as slot:
            slot.activate()
            for start in range(0, count, self.max_batch):
                stop = min(start + self.max_batch, count)
                a, b, target = ir[start:stop], vis[start:stop], out[start:stop]
                if stop - start < self.min_batch:
                    a, b = _pad_torch(torch, a, self.min_batch), _pad_torch(torch, b, self.min_batch)
                    padded = torch.empty((self.min_batch, *out_spec.sample_shape), dtype=out.dtype, device=out.device)
                    slot.run_device(a.data_ptr(), b.data_ptr(), padded.data_ptr(), self.min_batch, stream)
                    target.copy_(padded[: stop - start])
                else:
                    slot.run_device(a.data_ptr(), b.data_ptr(), target.data_ptr(), stop - start, stream)
        return out

    # -- internals --------------------------------------------------------------------------------------------

    def _open_pool(self) -> ContextPool[_Slot]:
        pool = self._pool
        if pool is None:
            raise EngineError(
                f"the TensorRT backend for {self.engine_path} is closed", fix="create a new backend to run more images"
            )
        return pool

    def _result_dtype(self) -> type:
        return np.float32 if self.io == "float" else np.uint8

    def _check_inputs(self, ir_shape: tuple, vis_shape: tuple, ir_dtype: Any, vis_dtype: Any, kind: str) -> None:
        height, width = self.input_size
        if self.io == "float":
            expected = f"ir and vis (B, 3, {height}, {width}) floating point"
            ok = (
                tuple(ir_shape[1:]) == (3, height, width) == tuple(vis_shape[1:])
                and _is_float(ir_dtype)
                and _is_float(vis_dtype)
            )
        else:
            expected = f"ir (B, {height}, {width}) uint8 grey and vis (B, {height}, {width}, 3) uint8 BGR"
            ok = (
                tuple(ir_shape[1:]) == (height, width)
                and tuple(vis_shape[1:]) == (height, width, 3)
                and str(ir_dtype).endswith("uint8")
                and str(vis_dtype).endswith("uint8")
            )
        if not ok or len(ir_shape) < 1 or ir_shape[0] != vis_shape[0]:
            raise InputError(
                f"engine {self.engine_path.name} ({self.io} io) takes {expected} with the same B; got {kind} "
                f"ir {tuple(ir_shape)} {ir_dtype} and vis {tuple(vis_shape)} {vis_dtype}",
                fix="let Fuser prepare the images, or resize them to the engine's input size",
            )


class _TensorSpec:
    __slots__ = ("dtype", "input", "sample_shape")

    def __init__(self, is_input: bool, dtype: type, sample_shape: tuple[int, ...]) -> None:
        self.input = is_input
        self.dtype = dtype
        self.sample_shape = sample_shape

    @property
    def sample_bytes(self) -> int:
        return math.prod(self.sample_shape) * np.dtype(self.dtype).itemsize


class _Slot:
    """One execution context with its stream, event, buffers and CUDA graphs; used by one thread at a time."""

    def __init__(self, backend: TensorRTBackend) -> None:
        self._backend = backend
        self._cudart: ModuleType = backend._cudart
        self.context = None
        self.stream = self.done = None
        self.host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
        self._device_ptr: dict[str, int] = {}
        self._graphs: dict[int, tuple[Any, Any]] = {}
        self._shape_batch: int | None = None
        self._own_addresses = False
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    def _allocate(self) -> None:
        cudart, backend = self._cudart, self._backend
        self.activate()
        self.context = backend._engine.create_execution_context()
        if self.context is None:
            raise EngineError(
                f"TensorRT could not create an execution context for {backend.engine_path} (GPU memory?)",
                fix="use a smaller pool_size or --batch maximum",
            )
        # Non-blocking: the stream must not serialise with other threads' work on the legacy default stream.
        self.stream = checked(
            cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "creating a stream"
        )
        self.done = checked(cudart, cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming), "creating an event")
        for name, spec in backend._tensors.items():
            nbytes = backend.max_batch * spec.sample_bytes
            self._host_ptr[name] = checked(cudart, cudart.cudaMallocHost(nbytes), f"pinning {nbytes} host bytes")
            self._device_ptr[name] = checked(cudart, cudart.cudaMalloc(nbytes), f"allocating {nbytes} GPU bytes")
            raw = (ctypes.c_byte * nbytes).from_address(self._host_ptr[name])
            self.host[name] = np.frombuffer(raw, dtype=spec.dtype).reshape(backend.max_batch, *spec.sample_shape)

    def activate(self) -> None:
        """Make the backend's GPU current for this thread (CUDA keeps the current device per thread)."""
        cudart = self._cudart
        checked(cudart, cudart.cudaSetDevice(self._backend.device), f"selecting CUDA device {self._backend.device}")

    def run_host(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Pinned copy in, H2D, enqueue, D2H, synchronise; returns a copy of the output (the buffer is reused)."""
        cudart, stream = self._cudart, self.stream
        count = ir.shape[0]
        self._wait_previous(stream)
        self._use_own_addresses()
        self._set_batch(count)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        specs = self._backend._tensors
        for name, array in ((INPUT_IR, ir), (INPUT_VIS, vis)):
            np.copyto(self.host[name][:count], array, casting="same_kind")
            nbytes = count * specs[name].sample_bytes
            checked(
                cudart,
                cudart.cudaMemcpyAsync(self._device_ptr[name], self._host_ptr[name], nbytes, h2d, stream),
                f"copying {name} to the GPU",
            )
        self._enqueue(count, stream, use_graph=self._backend.cuda_graph)
        nbytes = count * specs[OUTPUT_FUSED].sample_bytes
        checked(
            cudart,
            cudart.cudaMemcpyAsync(self._host_ptr[OUTPUT_FUSED], self._device_ptr[OUTPUT_FUSED], nbytes, d2h, stream),
            "copying the fused images from the GPU",
        )
        checked(cudart, cudart.cudaEventRecord(self.done, stream), "recording an event")
        checked(cudart, cudart.cudaStreamSynchronize(stream), "running the engine")
        return self.host[OUTPUT_FUSED][:count].copy()

    def run_device(self, ir_ptr: int, vis_ptr: int, out_ptr: int, count: int, stream: int) -> None:
        """Enqueue on ``stream`` with caller-owned device memory; returns without waiting."""
        cudart, context = self._cudart, self.context
        self._wait_previous(stream)
        for name, ptr in ((INPUT_IR, ir_ptr), (INPUT_VIS, vis_ptr), (OUTPUT_FUSED, out_ptr)):
            context.set_tensor_address(name, ptr)
        self._own_addresses = False
        self._set_batch(count)
        self._enqueue(count, stream, use_graph=False)
        checked(cudart, cudart.cudaEventRecord(self.done, stream), "recording an event")

    def close(self) -> None:
        """Free everything this slot holds; best effort, so one failure does not leak the rest."""
        cudart = self._cudart
        cudart.cudaSetDevice(self._backend.device)  # close() may run on a thread whose current GPU is another
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        for graph, graph_exec in self._graphs.values():
            cudart.cudaGraphExecDestroy(graph_exec)
            cudart.cudaGraphDestroy(graph)
        self._graphs.clear()
        self.context = None  # TensorRT frees the context's activation memory with the object
        self.host.clear()  # the numpy views must go before the pinned memory under them
        for ptr in self._device_ptr.values():
            cudart.cudaFree(ptr)
        for ptr in self._host_ptr.values():
            cudart.cudaFreeHost(ptr)
        self._device_ptr.clear()
        self._host_ptr.clear()
        if self.done is not None:
            cudart.cudaEventDestroy(self.done)
            self.done = None
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def _wait_previous(self, stream: Any) -> None:
        # This context's activation memory may still be in use by work enqueued on another stream.
        cudart = self._cudart
        checked(cudart, cudart.cudaStreamWaitEvent(stream, self.done, 0), "ordering after the previous run")

    def _use_own_addresses(self) -> None:
        if not self._own_addresses:
            for name, ptr in self._device_ptr.items():
                self.context.set_tensor_address(name, ptr)
            self._own_addresses = True

    def _set_batch(self, count: int) -> None:
        if self._shape_batch == count:
            return
        specs = self._backend._tensors
        for name in (INPUT_IR, INPUT_VIS):
            if not self.context.set_input_shape(name, (count, *specs[name].sample_shape)):
                raise EngineError(
                    f"engine {self._backend.engine_path.name} does not accept batch {count}",
                    fix=f"use batches of {self._backend.min_batch}..{self._backend.max_batch}, or rebuild with --batch",
                )
        self._shape_batch = count

    def _enqueue(self, count: int, stream: Any, *, use_graph: bool) -> None:
        if not use_graph:
            self._execute(stream)
            return
        if count not in self._graphs:
            self._graphs[count] = self._capture(count, stream)
        cudart = self._cudart
        checked(cudart, cudart.cudaGraphLaunch(self._graphs[count][1], stream), "launching the CUDA graph")

    def _execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(int(stream)):
            raise EngineError(
                f"TensorRT failed to enqueue engine {self._backend.engine_path.name}",
                fix="run again with cuda_graph=False; if it persists, rebuild the engine",
            )

    def _capture(self, count: int, stream: Any) -> tuple[Any, Any]:
        cudart = self._cudart
        # After a shape change TensorRT does deferred work in the first enqueue that a capture cannot record.
        self._execute(stream)
        # Thread-local mode: other threads may allocate (cudaMalloc) while this one captures.
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        checked(cudart, cudart.cudaStreamBeginCapture(stream, mode), "starting CUDA graph capture")
        try:
            enqueued = self.context.execute_async_v3(int(stream))
        finally:
            graph = checked(cudart, cudart.cudaStreamEndCapture(stream), "ending CUDA graph capture")
        if not enqueued:
            cudart.cudaGraphDestroy(graph)
            raise EngineError(
                f"TensorRT could not enqueue engine {self._backend.engine_path.name} into a CUDA graph (batch {count})",
                fix="use cuda_graph=False",
            )
        try:
            graph_exec = checked(cudart, cudart.cudaGraphInstantiate(graph, 0), "instantiating the CUDA graph")
        except EngineError:
            cudart.cudaGraphDestroy(graph)
            raise
        return graph, graph_exec


def _io_tensors(trt: ModuleType, engine: Any, path: Path) -> dict[str, _TensorSpec]:
    tensors = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype_name = getattr(engine.get_tensor_dtype(name), "name", "")
        if dtype_name not in _TRT_DTYPES:
            raise EngineError(
                f"engine {path} tensor {name!r} has unsupported type {dtype_name}",
                fix="export the graph with maefuse-export --onnx",
            )
        shape = tuple(engine.get_tensor_shape(name))
        if any(d < 0 for d in shape[1:]):
            raise EngineError(
                f"engine {path} tensor {name!r} has a dynamic image axis {shape}",
                fix="export one static resolution per graph",
            )
        tensors[name] = _TensorSpec(is_input, _TRT_DTYPES[dtype_name], tuple(int(d) for d in shape[1:]))
    expected = {INPUT_IR: True, INPUT_VIS: True, OUTPUT_FUSED: False}
    if {name: spec.input for name, spec in tensors.items()} != expected:
        raise EngineError(
            f"engine {path} has io tensors {sorted(tensors)}; a maefuse engine has inputs ir, vis and output fused",
            fix="build it from a maefuse-export graph",
        )
    return tensors


def _pad(batch: np.ndarray, minimum: int) -> np.ndarray:
    if batch.shape[0] >= minimum:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], minimum - batch.shape[0], axis=0)])


def _pad_torch(torch: ModuleType, batch: Any, minimum: int) -> Any:
    return torch.cat([batch, batch[-1:].expand(minimum - batch.shape[0], *batch.shape[1:])])


def _torch_dtype(torch: ModuleType, dtype: type) -> Any:
    return {np.float32: torch.float32, np.float16: torch.float16, np.uint8: torch.uint8}[dtype]


def _is_float(dtype: Any) -> bool:
    return "float" in str(dtype)
