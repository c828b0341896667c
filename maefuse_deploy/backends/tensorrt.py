"""The TensorRT backend (``backend="tensorrt"``): runs an engine built by ``maefuse-build-engine``.

Layouts are the io-mode contract (backends/base.py); the base checks inputs, splits batches above the profile's
maximum and pads those below its minimum. How a call runs:

- The engine's sidecar is checked against this machine first (tensorrt/sidecar.check_compatibility); an engine built
  for another GPU architecture or TensorRT version is refused before TensorRT sees it.
- Execution contexts are not thread-safe, so each calling thread borrows one from a :class:`ContextPool` for the
  length of the call. Each pooled slot owns one CUDA stream, two events, pinned host buffers and device buffers
  sized for the profile's largest batch (allocated once), and, with ``cuda_graph=True``, the CUDA graph captured
  for the context's current input shape (:class:`GraphBook`).
- Optimization profiles: TensorRT requires each execution context in concurrent use of a dynamic-shape engine to
  have its own profile, so such an engine's pool holds at most as many contexts as the engine has profiles, slot
  N on profile N (the C++ runtime does the same); a static-shape engine's contexts share its one profile.
- Every address bound with ``set_tensor_address`` is checked (TensorRT's refusal, and 256-byte alignment, which
  it requires); a call makes the backend's GPU current and puts the caller's current device back.
- numpy in: copy into the pinned buffers, async host-to-device, enqueue (``execute_async_v3`` on tensor addresses
  set once, or a graph launch), async device-to-host, synchronise the slot's stream, copy out.
- torch CUDA tensors in (the tensor path): TensorRT reads and writes the tensors' memory directly, with no copy and
  no host synchronisation, on the slot's own stream: an event recorded on the caller's current stream orders the
  slot after the caller's producers, another recorded on the slot's stream orders the caller's consumers after the
  engine. Torch's caching allocator reuses the tensors' memory in the caller's stream order, which already comes
  after the engine (no ``record_stream`` on the slot's stream, which ``close()`` destroys while the tensors may
  live on). ``close()`` synchronises every slot's stream, so it waits for that work too.

TensorRT and cuda-python are imported when a backend is created, never at module import.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import cuda_index
from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, BatchProfile
from ..errors import InputError
from ..tensorrt import availability
from ..tensorrt.cuda import CudaRuntime, checked, on_device
from ..tensorrt.errors import EngineError
from ..tensorrt.pool import DEFAULT_POOL_SIZE, ContextPool
from ..tensorrt.sidecar import check_compatibility, graph_info_of, read_sidecar
from .base import BackendBase

if TYPE_CHECKING:  # checked against tensorrt-stubs (.ci/typecheck); imported for real when a backend opens
    import tensorrt

TENSOR_ALIGNMENT = 256  # bytes: set_tensor_address refuses (or misreads) addresses off this grid
_TRT_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8}  # what the contract allows at io


class TensorRTBackend(BackendBase):
    """Runs a maefuse TensorRT engine; see the module docstring for the data path."""

    name = "tensorrt"
    native = "numpy"

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        device: str | int = "cuda",
        *,
        cuda_graph: bool = False,
        allow_incompatible: bool = False,
        pool_size: int | None = None,
        onnx_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._pool: ContextPool[_Slot] | None = None
        self._engine: Any = None
        self._runtime: Any = None
        self.engine_path = Path(engine_path)
        index = device if isinstance(device, int) else cuda_index(device)
        if index is None:
            raise InputError(f"TensorRT engines run on a CUDA device, not {device!r}", fix="pass device='cuda'")
        self.device = index
        self.cuda_graph = cuda_graph
        sidecar = read_sidecar(self.engine_path)
        info = graph_info_of(sidecar, self.engine_path)  # like the sidecar itself, refused before TensorRT is needed
        trt, cudart, gpu = availability.require(self.device)
        self._trt, self._cudart = trt, cudart
        # Refuse before deserialising: TensorRT's own failure for a foreign plan does not say what to do.
        self.notes: list[str] = check_compatibility(
            sidecar,
            availability.runtime_facts(trt, gpu),
            onnx_path,
            allow_incompatible,
            engine_path=self.engine_path,
        )
        self.io = "uint8" if info.io == "uint8" else "float"
        self.patch_size = int(info.config.get("patch_size", 16))
        self.model_size = (info.height, info.width)
        self.profile = BatchProfile(sidecar.min_batch, sidecar.min_batch, sidecar.max_batch)
        self.description = f"tensorrt: {self.engine_path} ({sidecar.precision}, io {self.io}, batch {self.profile})"

        self._logger = availability.shared_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if sidecar.version_compat:
            # Version-compatible plans carry their own lean runtime (host code), which TensorRT only loads
            # when allowed; the sidecar says this plan was built that way on purpose.
            self._runtime.engine_host_code_allowed = True
        with on_device(cudart, self.device):
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"TensorRT could not load engine {self.engine_path}",
                fix=f"rebuild it with maefuse-build-engine {sidecar.onnx_path} -o {self.engine_path} on this machine",
            )
        self._tensors = _io_tensors(trt, self._engine, self.engine_path)
        ir_shape = self._tensors[INPUT_IR].sample_shape
        self.input_size = (ir_shape[1], ir_shape[2]) if self.io == "float" else (ir_shape[0], ir_shape[1])
        dynamic = any(int(self._engine.get_tensor_shape(name)[0]) < 0 for name in (INPUT_IR, INPUT_VIS))
        size, note = _pool_size(pool_size or DEFAULT_POOL_SIZE, dynamic_batch=dynamic,
                                profiles=int(self._engine.num_optimization_profiles), requested=pool_size is not None)
        if note is not None:
            self.notes.append(note)
        # The pool's place numbers are unique among its live slots: a dynamic-shape engine's slot uses that profile.
        self._pool = ContextPool(lambda place: _Slot(self, place if dynamic else None), size, destroy=_Slot.close)

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cuda", dtype: str | None = None,
             config: str | None = None, **options: Any) -> TensorRTBackend:
        if source is None:
            raise InputError("the tensorrt backend needs an engine file", fix="pass the .engine/.plan path")
        return cls(source, device, **options)

    def _run_impl(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """numpy batch inside the profile -> numpy output (pinned copies, one stream synchronisation)."""
        with self._open_pool().acquire() as slot, slot.activate():
            return slot.run_host(ir, vis)

    def _run_tensor_impl(self, ir: Any, vis: Any) -> Any:
        """CUDA tensors on this backend's GPU run in place on the device; any other tensors take the numpy path."""
        import torch

        here = torch.device("cuda", self.device)
        if ir.device != here or vis.device != here:
            return super()._run_tensor_impl(ir, vis)
        specs = self._tensors
        # A batch the base class sliced off a larger one can start anywhere (a uint8 frame of H*W bytes): copy it
        # to aligned memory on the caller's stream, which the slot's stream waits for.
        ir = _aligned(torch, ir.to(_torch_dtype(torch, specs[INPUT_IR].dtype)).contiguous())
        vis = _aligned(torch, vis.to(_torch_dtype(torch, specs[INPUT_VIS].dtype)).contiguous())
        out_spec = specs[OUTPUT_FUSED]
        out = torch.empty((ir.shape[0], *out_spec.sample_shape), dtype=_torch_dtype(torch, out_spec.dtype),
                          device=here)
        caller = torch.cuda.current_stream(here)
        with self._open_pool().acquire() as slot, slot.activate():
            # No record_stream on the slot's stream: the caller's stream already waits for the slot's `done`, so
            # memory the caching allocator hands out again is only touched after the engine; and close() destroys
            # that stream while these tensors may live on, which torch would then record events on.
            slot.run_device(ir.data_ptr(), vis.data_ptr(), out.data_ptr(), int(ir.shape[0]), caller.cuda_stream)
        return out

    @property
    def tensor_device(self) -> Any:
        import torch

        return torch.device("cuda", self.device)

    def close(self) -> None:
        """Wait for running calls, then free every context, buffer, stream, graph and the engine. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self._engine = None
        self._runtime = None

    def _open_pool(self) -> ContextPool[_Slot]:
        pool = self._pool
        if pool is None:
            raise EngineError(
                f"the TensorRT backend for {self.engine_path} is closed", fix="create a new backend to run more images"
            )
        return pool


class GraphBook:
    """Which captured CUDA graph may be replayed on which execution context (pure bookkeeping, no CUDA).

    A graph records the kernels and parameters of the context state it was captured from; setting another input
    shape on that context changes that state, so the graph is valid only while the context keeps the shape it was
    captured at (trtexec likewise keeps one graph per context). A shape change releases the context's graph; a
    failed capture is remembered so the context runs plain enqueues from then on (trtexec's endCaptureOnError).
    """

    def __init__(self, release: Callable[[Any], None]) -> None:
        self._release = release
        self._shape: dict[int, tuple[int, ...]] = {}
        self._graph: dict[int, tuple[tuple[int, ...], Any]] = {}
        self._failed: set[int] = set()

    def is_set(self, context: int, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` is the one last set on ``context`` (then set_input_shape is not needed)."""
        return self._shape.get(context) == shape

    def forget(self, context: int) -> None:
        """The context's shape is about to change, or may have (a failed set): unknown shape, graph released."""
        self._shape.pop(context, None)
        held = self._graph.pop(context, None)
        if held is not None:
            self._release(held[1])

    def shape_set(self, context: int, shape: tuple[int, ...]) -> None:
        """Record ``shape`` on ``context``; only after set_input_shape accepted it for every input."""
        if self._shape.get(context) != shape:
            self.forget(context)
        self._shape[context] = shape

    def graph(self, context: int) -> Any:
        """The graph captured at the context's current shape, or None."""
        held = self._graph.get(context)
        return held[1] if held is not None and held[0] == self._shape.get(context) else None

    def may_capture(self, context: int) -> bool:
        return context not in self._failed

    def captured(self, context: int, graph: Any) -> None:
        self._graph[context] = (self._shape[context], graph)

    def capture_failed(self, context: int) -> None:
        self._failed.add(context)

    def clear(self) -> None:
        for _, graph in self._graph.values():
            self._release(graph)
        self._graph.clear()
        self._shape.clear()


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
    """One execution context with its stream, events, buffers and CUDA graph; used by one thread at a time."""

    def __init__(self, backend: TensorRTBackend, profile: int | None) -> None:
        self._backend = backend
        self._cudart: CudaRuntime = backend._cudart
        self.profile = profile  # this context's own optimization profile (dynamic shapes), None: static shapes
        self.context: tensorrt.IExecutionContext | None = None
        self.stream: Any = None
        self.done: Any = None  # recorded on this slot's stream after each run: "the context is free again"
        self.ready: Any = None  # recorded on a caller's stream before a device run: "the inputs are written"
        self.host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
        self._device_ptr: dict[str, int] = {}
        self.graphs = GraphBook(self._destroy_graph)
        self._own_addresses = False
        try:
            with self.activate():
                self._allocate()
        except BaseException:
            self.close()
            raise

    def _allocate(self) -> None:
        cudart, backend = self._cudart, self._backend
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
        flags = cudart.cudaEventDisableTiming
        self.done = checked(cudart, cudart.cudaEventCreateWithFlags(flags), "creating an event")
        self.ready = checked(cudart, cudart.cudaEventCreateWithFlags(flags), "creating an event")
        if self.profile:  # a new context starts on profile 0
            if not self.context.set_optimization_profile_async(self.profile, int(self.stream)):
                raise EngineError(
                    f"TensorRT could not select optimization profile {self.profile} of {backend.engine_path}",
                    fix="use a smaller pool_size",
                )
            checked(cudart, cudart.cudaStreamSynchronize(self.stream), "selecting an optimization profile")
        max_batch = backend.max_batch or 1
        for name, spec in backend._tensors.items():
            nbytes = max_batch * spec.sample_bytes
            self._host_ptr[name] = checked(cudart, cudart.cudaMallocHost(nbytes), f"pinning {nbytes} host bytes")
            self._device_ptr[name] = checked(cudart, cudart.cudaMalloc(nbytes), f"allocating {nbytes} GPU bytes")
            raw = (ctypes.c_byte * nbytes).from_address(self._host_ptr[name])
            self.host[name] = np.frombuffer(memoryview(raw), dtype=spec.dtype).reshape(max_batch, *spec.sample_shape)

    def _context(self) -> tensorrt.IExecutionContext:
        context = self.context
        if context is None:
            raise EngineError(f"the execution context of {self._backend.engine_path.name} is closed",
                              fix="create a new backend")
        return context

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """The backend's GPU current for a ``with`` block, the caller's current device put back after it."""
        return on_device(self._cudart, self._backend.device)

    def run_host(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Pinned copy in, H2D, enqueue, D2H, synchronise; returns a copy of the output (the buffer is reused)."""
        cudart, stream = self._cudart, self.stream
        count = ir.shape[0]
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
        self._enqueue(stream, use_graph=self._backend.cuda_graph)
        nbytes = count * specs[OUTPUT_FUSED].sample_bytes
        checked(
            cudart,
            cudart.cudaMemcpyAsync(self._host_ptr[OUTPUT_FUSED], self._device_ptr[OUTPUT_FUSED], nbytes, d2h, stream),
            "copying the fused images from the GPU",
        )
        checked(cudart, cudart.cudaEventRecord(self.done, stream), "recording an event")
        checked(cudart, cudart.cudaStreamSynchronize(stream), "running the engine")
        return self.host[OUTPUT_FUSED][:count].copy()

    def run_device(self, ir_ptr: int, vis_ptr: int, out_ptr: int, count: int, caller_stream: int) -> None:
        """Run on caller-owned device memory on this slot's stream, ordered after and before ``caller_stream``.

        Order: ready on the caller's stream -> the slot's stream waits for it -> enqueue -> done on the slot's
        stream -> the caller's stream waits for done. Returns without waiting on the host.
        """
        cudart, context, stream = self._cudart, self._context(), self.stream
        checked(cudart, cudart.cudaEventRecord(self.ready, caller_stream), "recording an event on the caller's stream")
        checked(cudart, cudart.cudaStreamWaitEvent(stream, self.ready, 0), "ordering after the caller's work")
        self._own_addresses = False
        for name, ptr in ((INPUT_IR, ir_ptr), (INPUT_VIS, vis_ptr), (OUTPUT_FUSED, out_ptr)):
            self._bind(context, name, ptr)
        self._set_batch(count)
        # Graphs are not used here: a graph records tensor addresses, and the caller's change from call to call.
        self._enqueue(stream, use_graph=False)
        checked(cudart, cudart.cudaEventRecord(self.done, stream), "recording an event")
        checked(cudart, cudart.cudaStreamWaitEvent(caller_stream, self.done, 0), "ordering the caller after the engine")

    def close(self) -> None:
        """Free everything this slot holds; best effort, so one failure does not leak the rest."""
        with self.activate():  # close() may run on a thread whose current GPU is another
            self._free()

    def _free(self) -> None:
        cudart = self._cudart
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)  # device runs are on this stream too, so this waits for them
        self.graphs.clear()
        self.context = None  # TensorRT frees the context's activation memory with the object
        self.host.clear()  # the numpy views must go before the pinned memory under them
        for ptr in self._device_ptr.values():
            cudart.cudaFree(ptr)
        for ptr in self._host_ptr.values():
            cudart.cudaFreeHost(ptr)
        self._device_ptr.clear()
        self._host_ptr.clear()
        for event in (self.done, self.ready):
            if event is not None:
                cudart.cudaEventDestroy(event)
        self.done = self.ready = None
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def _destroy_graph(self, graph: tuple[Any, Any]) -> None:
        cudart = self._cudart
        cudart.cudaGraphExecDestroy(graph[1])
        cudart.cudaGraphDestroy(graph[0])

    def _use_own_addresses(self) -> None:
        if not self._own_addresses:
            for name, ptr in self._device_ptr.items():
                self._bind(self._context(), name, ptr)
            self._own_addresses = True

    def _bind(self, context: tensorrt.IExecutionContext, name: str, ptr: int) -> None:
        engine = self._backend.engine_path.name
        if ptr % TENSOR_ALIGNMENT:
            raise EngineError(
                f"the address of tensor {name!r} for engine {engine} is not {TENSOR_ALIGNMENT}-byte aligned",
                fix="pass tensors that start at their own allocation (e.g. .clone() a slice)",
            )
        if not context.set_tensor_address(name, ptr):
            raise EngineError(f"TensorRT refused the address of tensor {name!r} for engine {engine}",
                              fix="pass contiguous CUDA tensors on the backend's GPU")

    def _set_batch(self, count: int) -> None:
        specs, key = self._backend._tensors, id(self.context)
        if self.graphs.is_set(key, (count,)):
            return
        self.graphs.forget(key)  # from here the context's shape changes, also when a set below is refused
        for name in (INPUT_IR, INPUT_VIS):
            if not self._context().set_input_shape(name, (count, *specs[name].sample_shape)):
                raise EngineError(
                    f"engine {self._backend.engine_path.name} does not accept batch {count}",
                    fix=f"use batches of {self._backend.min_batch}..{self._backend.max_batch}, or rebuild with --batch",
                )
        self.graphs.shape_set(key, (count,))

    def _enqueue(self, stream: Any, *, use_graph: bool) -> None:
        key = id(self.context)
        if not use_graph or not self.graphs.may_capture(key):
            self._execute(stream)
            return
        graph = self.graphs.graph(key)
        if graph is None:
            graph = self._capture(stream)
            if graph is None:  # capture failed: this run and the slot's later ones use plain enqueues
                self._execute(stream)
                return
            self.graphs.captured(key, graph)
        cudart = self._cudart
        checked(cudart, cudart.cudaGraphLaunch(graph[1], stream), "launching the CUDA graph")

    def _execute(self, stream: Any) -> None:
        if not self._context().execute_async_v3(int(stream)):
            raise EngineError(
                f"TensorRT failed to enqueue engine {self._backend.engine_path.name}",
                fix="run again with cuda_graph=False; if it persists, rebuild the engine",
            )

    def _capture(self, stream: Any) -> tuple[Any, Any] | None:
        """Capture one enqueue into a graph; None (and remembered) when the capture fails."""
        cudart = self._cudart
        success = cudart.cudaError_t.cudaSuccess
        # After a shape change TensorRT does deferred work in the first enqueue that a capture cannot record.
        self._execute(stream)
        # Thread-local mode: other threads may allocate (cudaMalloc) while this one captures.
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        checked(cudart, cudart.cudaStreamBeginCapture(stream, mode), "starting CUDA graph capture")
        enqueued = False
        try:
            enqueued = bool(self._context().execute_async_v3(int(stream)))
        finally:
            err, graph = cudart.cudaStreamEndCapture(stream)
        if err != success or not enqueued:
            # e.g. cudaErrorStreamCaptureInvalidated: drop the partial graph, clear the sticky error, and remember.
            if graph is not None and err == success:
                cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()
            self.graphs.capture_failed(id(self.context))
            return None
        err, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
        if err != success:
            cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()
            self.graphs.capture_failed(id(self.context))
            return None
        return graph, graph_exec


def _io_tensors(trt: ModuleType, engine: tensorrt.ICudaEngine, path: Path) -> dict[str, _TensorSpec]:
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
        dims = engine.get_tensor_shape(name)
        shape = tuple(int(dims[i]) for i in range(len(dims)))
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


def _pool_size(wanted: int, *, dynamic_batch: bool, profiles: int, requested: bool) -> tuple[int, str | None]:
    """How many contexts may run at once, and a note when fewer than ``requested`` (an explicit pool_size).

    Each context of a dynamic-shape engine in concurrent use needs its own optimization profile (TensorRT's
    IExecutionContext contract), so there are at most as many as the engine has; static-shape contexts share one.
    """
    if not dynamic_batch or wanted <= profiles:
        return wanted, None
    size = max(profiles, 1)
    note = (f"pool_size {wanted} lowered to {size}: the engine has {profiles} optimization profiles and each "
            "concurrent context of a dynamic-batch engine needs its own; rebuild it with maefuse-build-engine "
            f"--profiles {wanted} for {wanted} at once") if requested else None
    return size, note


def _aligned(torch: ModuleType, tensor: Any) -> Any:
    """``tensor`` (contiguous) when its data starts on the TENSOR_ALIGNMENT grid, else an aligned copy of it."""
    if tensor.data_ptr() % TENSOR_ALIGNMENT == 0:
        return tensor
    nbytes = tensor.numel() * tensor.element_size()
    raw = torch.empty(nbytes + TENSOR_ALIGNMENT, dtype=torch.uint8, device=tensor.device)
    start = -raw.data_ptr() % TENSOR_ALIGNMENT  # allocations are at least 64-byte aligned: fine for any itemsize
    return raw[start:start + nbytes].view(tensor.dtype).view(tensor.shape).copy_(tensor)


def _torch_dtype(torch: ModuleType, dtype: Any) -> Any:
    return {np.float32: torch.float32, np.float16: torch.float16, np.uint8: torch.uint8}[dtype]
