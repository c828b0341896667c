"""The TensorRT layer's own logic on the CPU (issue 11 item 4): graph bookkeeping per (context, shape), stream
hand-off order, capture-failure fallback, timing-cache serialisation, the shared logger and profile errors.

TensorRT and a GPU are not on this machine, so the CUDA runtime and TensorRT objects below are recorders that
return what the real calls return (an error code first, like cuda-python's bindings); the code under test is ours.
The GPU tests in test_tensorrt_gpu.py (marked ``tensorrt``) run the same paths on a real engine.
"""

from __future__ import annotations

import ctypes
import itertools
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from maefuse_deploy.backends.tensorrt import TENSOR_ALIGNMENT, GraphBook, _aligned, _pool_size, _Slot, _TensorSpec
from maefuse_deploy.contract import BatchProfile
from maefuse_deploy.tensorrt.availability import LogRouter
from maefuse_deploy.tensorrt.build import add_profile, save_timing_cache
from maefuse_deploy.tensorrt.errors import EngineError

SLOT_STREAM, CALLER_STREAM, DONE, READY = 501, 502, 601, 602  # handles, as cuda-python's int() gives them


class Err(Enum):
    cudaSuccess = 0
    cudaErrorStreamCaptureInvalidated = 901


class RecordingRuntime:
    """cuda.bindings.runtime's calling convention: every call returns (cudaError_t, *values); calls are recorded."""

    cudaError_t = Err
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")

    cudaStreamNonBlocking = 1
    cudaEventDisableTiming = 2

    def __init__(self, end_capture_error: Err = Err.cudaSuccess, current_device: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.end_capture_error = end_capture_error
        self.current_device = current_device  # CUDA's per-thread current device, as cudaSetDevice leaves it
        self._events = itertools.cycle([DONE, READY])
        self._device_addresses = itertools.count(TENSOR_ALIGNMENT, TENSOR_ALIGNMENT)  # cudaMalloc: 256-aligned
        self._pinned: list[Any] = []  # host memory behind cudaMallocHost's addresses, kept alive

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> tuple[Any, ...]:
            self.calls.append((name, *args))
            if name == "cudaSetDevice":
                self.current_device = args[0]
            if name == "cudaGetDevice":
                return (Err.cudaSuccess, self.current_device)
            if name == "cudaStreamCreateWithFlags":
                return (Err.cudaSuccess, SLOT_STREAM)
            if name == "cudaEventCreateWithFlags":
                return (Err.cudaSuccess, next(self._events))
            if name == "cudaMalloc":
                return (Err.cudaSuccess, next(self._device_addresses))
            if name == "cudaMallocHost":
                self._pinned.append((ctypes.c_byte * args[0])())
                return (Err.cudaSuccess, ctypes.addressof(self._pinned[-1]))
            if name == "cudaStreamEndCapture":
                error = self.end_capture_error
                return (error, None if error != Err.cudaSuccess else "graph")
            if name == "cudaGraphInstantiate":
                return (Err.cudaSuccess, "graph-exec")
            if name == "cudaGetLastError":
                return (Err.cudaSuccess,)
            return (Err.cudaSuccess,)

        return call

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


class RecordingContext:
    """An execution context's calls, returning what TensorRT returns (False for a refused address or shape)."""

    def __init__(self, calls: list[tuple[Any, ...]], enqueue_ok: bool = True) -> None:
        self.calls = calls
        self.enqueue_ok = enqueue_ok
        self.refused_address: str | None = None  # the tensor whose set_tensor_address returns False
        self.max_batch = 4  # set_input_shape returns False above it

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.calls.append(("set_tensor_address", name, ptr))
        return name != self.refused_address

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.calls.append(("set_input_shape", name, shape))
        return shape[0] <= self.max_batch

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.calls.append(("set_optimization_profile_async", index, stream))
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.calls.append(("execute_async_v3", stream))
        return self.enqueue_ok


def fake_backend(cudart: RecordingRuntime, cuda_graph: bool = False) -> SimpleNamespace:
    """What a slot reads from its backend; the engine creates recording contexts."""
    tensors = {name: _TensorSpec(name != "fused", np.float32, (3, 16, 16)) for name in ("ir", "vis", "fused")}
    engine = SimpleNamespace(create_execution_context=lambda: RecordingContext(cudart.calls))
    return SimpleNamespace(device=0, cuda_graph=cuda_graph, _tensors=tensors, engine_path=Path("m.engine"),
                           min_batch=1, max_batch=4, profile=BatchProfile(1, 1, 4), _engine=engine, _cudart=cudart)


def make_slot(cudart: RecordingRuntime, cuda_graph: bool = False) -> _Slot:
    """A slot over recorders, built without allocating."""
    backend = fake_backend(cudart, cuda_graph)
    slot = _Slot.__new__(_Slot)
    slot._backend = backend
    slot._cudart = cudart
    slot.context = RecordingContext(cudart.calls)
    slot.stream, slot.done, slot.ready = SLOT_STREAM, DONE, READY
    slot.host, slot._host_ptr, slot._device_ptr = {}, {}, {"ir": 1024, "vis": 1280, "fused": 1536}
    slot.graphs = GraphBook(slot._destroy_graph)
    slot._own_addresses = False
    slot.profile = None
    return slot


# -- 4a: one graph per (context, shape) ------------------------------------------------------------------------------


def test_a_graph_is_replayed_only_at_the_shape_it_was_captured_at():
    released = []
    book = GraphBook(released.append)
    assert not book.is_set(1, (4,))
    book.shape_set(1, (4,))
    assert book.graph(1) is None
    book.captured(1, "g4")
    assert book.is_set(1, (4,)) and book.graph(1) == "g4"  # same shape: no set_input_shape, same graph
    book.shape_set(1, (2,))
    assert released == ["g4"]  # another shape was set: the graph is gone
    assert book.graph(1) is None
    book.shape_set(1, (4,))
    assert book.graph(1) is None  # back at 4 the old graph is not replayed: the context state changed in between
    book.shape_set(2, (4,))
    book.captured(2, "other")
    assert book.graph(2) == "other" and book.graph(1) is None  # contexts are independent
    book.clear()
    assert released == ["g4", "other"]


def test_slot_recaptures_after_a_shape_change():
    cudart = RecordingRuntime()
    slot = make_slot(cudart, cuda_graph=True)
    for count in (4, 4, 2, 4):
        slot._set_batch(count)
        slot._enqueue(slot.stream, use_graph=True)
    names = cudart.names()
    assert names.count("cudaStreamBeginCapture") == 3  # 4, then 2, then 4 again after the change
    assert names.count("cudaGraphLaunch") == 4
    assert names.count("cudaGraphExecDestroy") == 2  # each shape change released the graph of the old shape


# -- 4e: a failed capture falls back and is remembered ---------------------------------------------------------------


def test_failed_capture_falls_back_to_plain_enqueue_and_is_remembered():
    cudart = RecordingRuntime(end_capture_error=Err.cudaErrorStreamCaptureInvalidated)
    slot = make_slot(cudart, cuda_graph=True)
    slot._set_batch(2)
    slot._enqueue(slot.stream, use_graph=True)
    names = cudart.names()
    assert names.count("cudaStreamBeginCapture") == 1
    assert "cudaGetLastError" in names  # the sticky capture error is cleared
    assert "cudaGraphInstantiate" not in names and "cudaGraphLaunch" not in names
    assert names[-1] == "execute_async_v3"  # the run still happens, as a plain enqueue
    cudart.calls.clear()
    slot._set_batch(4)
    slot._enqueue(slot.stream, use_graph=True)
    assert "cudaStreamBeginCapture" not in cudart.names()  # remembered for the slot: no second try
    assert cudart.names()[-1] == "execute_async_v3"


def test_failed_enqueue_inside_capture_also_falls_back():
    cudart = RecordingRuntime()
    slot = make_slot(cudart, cuda_graph=True)
    slot._set_batch(2)
    outcomes = iter([True, False, True])  # warm-up enqueue ok, the captured one fails, the fallback runs
    slot.context.execute_async_v3 = lambda stream: (cudart.calls.append(("execute_async_v3", stream)),
                                                    next(outcomes))[1]
    slot._enqueue(slot.stream, use_graph=True)
    names = cudart.names()
    assert "cudaGraphDestroy" in names and "cudaGraphLaunch" not in names
    assert not slot.graphs.may_capture(id(slot.context))


# -- 4b: device runs on the slot's stream, ordered both ways ---------------------------------------------------------


def test_device_run_hands_off_between_streams_in_order():
    cudart = RecordingRuntime()
    slot = make_slot(cudart)
    slot.run_device(256, 512, 768, 2, CALLER_STREAM)
    calls = [c for c in cudart.calls if c[0] != "set_tensor_address" and c[0] != "set_input_shape"]
    assert calls == [
        ("cudaEventRecord", READY, CALLER_STREAM),  # the caller's producers are done
        ("cudaStreamWaitEvent", SLOT_STREAM, READY, 0),  # ... before the slot's stream starts
        ("execute_async_v3", SLOT_STREAM),  # the engine runs on the slot's own stream, not the caller's
        ("cudaEventRecord", DONE, SLOT_STREAM),
        ("cudaStreamWaitEvent", CALLER_STREAM, DONE, 0),  # the caller's consumers wait for the engine
    ]
    addresses = {c[1]: c[2] for c in cudart.calls if c[0] == "set_tensor_address"}
    assert addresses == {"ir": 256, "vis": 512, "fused": 768}


def test_close_waits_on_the_stream_device_runs_used():
    cudart = RecordingRuntime()
    slot = make_slot(cudart)
    slot.run_device(256, 512, 768, 2, CALLER_STREAM)
    cudart.calls.clear()
    slot.close()
    names = cudart.names()
    assert names.index("cudaStreamSynchronize") < names.index("cudaFree")
    assert ("cudaStreamSynchronize", SLOT_STREAM) in cudart.calls


# -- issue 27: bound addresses checked and aligned, the caller's device kept, shapes recorded after success, one
#    optimization profile per context ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["host", "device"])
def test_a_refused_tensor_address_is_a_one_line_error_naming_the_tensor(path):
    cudart = RecordingRuntime()
    slot = make_slot(cudart)
    slot.context.refused_address = "vis"
    with pytest.raises(EngineError, match="'vis'") as info:
        if path == "host":
            slot.run_host(np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 3, 16, 16), np.float32))
        else:
            slot.run_device(256, 512, 768, 1, CALLER_STREAM)
    assert "\n" not in str(info.value) and "m.engine" in str(info.value)
    assert "execute_async_v3" not in cudart.names()  # nothing runs on an address TensorRT did not take


def test_a_misaligned_device_address_is_refused_before_tensorrt_sees_it():
    cudart = RecordingRuntime()
    slot = make_slot(cudart)
    with pytest.raises(EngineError, match=f"'ir'.*{TENSOR_ALIGNMENT}-byte"):
        slot.run_device(256 + 100, 512, 768, 1, CALLER_STREAM)
    assert "set_tensor_address" not in cudart.names() and "execute_async_v3" not in cudart.names()


def test_tensors_at_unaligned_offsets_are_copied_to_aligned_memory():
    """A uint8 batch sliced at a row (H*W = 100 bytes) starts off the 256-byte grid set_tensor_address needs."""
    import torch

    raw = torch.arange(4096, dtype=torch.int64).remainder(251).to(torch.uint8)
    base = -raw.data_ptr() % TENSOR_ALIGNMENT
    batch = raw[base:base + 400].view(4, 10, 10)  # starts on the grid; its row 1 is 100 bytes past it
    halves = raw[base + 128:base + 328].view(torch.float16).view(10, 10)  # 128 bytes past it
    assert _aligned(torch, batch).data_ptr() == batch.data_ptr()  # aligned already: used in place, no copy
    for tensor in (batch[1:3], batch[3:], halves):
        assert tensor.data_ptr() % TENSOR_ALIGNMENT != 0
        aligned = _aligned(torch, tensor)
        assert aligned.data_ptr() % TENSOR_ALIGNMENT == 0 and aligned.is_contiguous()
        assert aligned.dtype == tensor.dtype and aligned.shape == tensor.shape
        assert torch.equal(aligned.view(torch.uint8), tensor.contiguous().view(torch.uint8))


def test_activate_puts_the_callers_current_device_back():
    cudart = RecordingRuntime(current_device=1)  # the caller works on GPU 1; the backend runs on GPU 0
    slot = make_slot(cudart)
    with slot.activate():
        assert cudart.current_device == 0
    assert cudart.current_device == 1
    with pytest.raises(RuntimeError), slot.activate():
        raise RuntimeError("the run failed")
    assert cudart.current_device == 1  # also after a failure
    slot.close()
    assert cudart.current_device == 1  # close() frees on GPU 0 and puts GPU 1 back too
    cudart = RecordingRuntime(current_device=0)
    with make_slot(cudart).activate():
        pass
    assert "cudaSetDevice" not in cudart.names()  # already current: nothing to change


def test_a_refused_batch_is_refused_every_time_not_recorded_as_set():
    cudart = RecordingRuntime()
    slot = make_slot(cudart)
    slot._set_batch(4)
    for _ in range(2):  # the second try used to find batch 6 "already set" and enqueue at the old shape
        with pytest.raises(EngineError, match="does not accept batch 6"):
            slot._set_batch(6)
    cudart.calls.clear()
    slot._set_batch(4)  # a failed set may have changed part of the context's state: 4 is set again
    assert [c for c in cudart.calls if c[0] == "set_input_shape"] == [
        ("set_input_shape", "ir", (4, 3, 16, 16)), ("set_input_shape", "vis", (4, 3, 16, 16))]


@pytest.mark.parametrize("profile", [None, 0, 2])
def test_each_slot_selects_its_own_optimization_profile(profile):
    cudart = RecordingRuntime()
    slot = _Slot(fake_backend(cudart), profile)
    selected = [c for c in cudart.calls if c[0] == "set_optimization_profile_async"]
    if profile:
        assert selected == [("set_optimization_profile_async", profile, SLOT_STREAM)]
        names = cudart.names()
        # selecting is asynchronous: the stream is synchronised before the slot is used
        assert names.index("cudaStreamSynchronize") > names.index("set_optimization_profile_async")
    else:
        assert selected == []  # a new context starts on profile 0
    slot._set_batch(2)
    assert ("set_input_shape", "ir", (2, 3, 16, 16)) in cudart.calls
    slot.close()


def test_pool_size_is_limited_to_the_profiles_of_a_dynamic_engine():
    assert _pool_size(2, dynamic_batch=True, profiles=1, requested=False) == (1, None)
    size, note = _pool_size(3, dynamic_batch=True, profiles=2, requested=True)
    assert size == 2 and note is not None and "2 optimization profiles" in note and "\n" not in note
    assert _pool_size(3, dynamic_batch=True, profiles=4, requested=True) == (3, None)
    assert _pool_size(3, dynamic_batch=False, profiles=1, requested=True) == (3, None)  # static shapes: shared


# -- 4d: the timing cache saved is the one the build filled ----------------------------------------------------------


class Cache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.combined: list[tuple[Cache, bool]] = []

    def combine(self, other: Cache, ignore_mismatch: bool) -> bool:
        self.combined.append((other, ignore_mismatch))
        self.blob += other.blob
        return True

    def serialize(self) -> bytes:
        return self.blob


class Config:
    def __init__(self) -> None:
        self.in_use = Cache(b"built;")

    def get_timing_cache(self) -> Cache:
        return self.in_use

    def create_timing_cache(self, blob: bytes) -> Cache:
        return Cache(blob)


def test_timing_cache_is_serialised_from_the_config_and_merged(tmp_path):
    path = tmp_path / "cache.bin"
    config = Config()
    save_timing_cache(config, path)
    assert path.read_bytes() == b"built;"  # get_timing_cache(), not an object created before the build
    path.write_bytes(b"other-build;")  # another build wrote the file meanwhile
    config = Config()
    save_timing_cache(config, path)
    (older, ignore), = config.in_use.combined
    assert older.blob == b"other-build;" and ignore is True
    assert path.read_bytes() == b"built;other-build;"


# -- 4g: one logger, per-build sinks ---------------------------------------------------------------------------------


def test_log_router_sends_each_message_to_the_sinks_attached_now():
    router = LogRouter(min_level=4)
    first: list[str] = []
    second: list[str] = []
    router.emit(1, "ERROR", "nobody listening")
    with router.attached(lambda level, name, msg: first.append(msg)):
        router.emit(2, "WARNING", "one")
        with router.attached(lambda level, name, msg: second.append(msg)):
            router.emit(3, "INFO", "two")
    router.emit(3, "INFO", "three")
    assert first == ["one", "two"] and second == ["two"] and not router.has_sinks()


# -- 4h: profile refusals are one-line errors ------------------------------------------------------------------------


class Profile:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        if self.fail:
            raise RuntimeError("set_shape: min dimensions\n exceed max")


def test_profile_refusals_are_one_line_errors():
    plan = SimpleNamespace(shapes={"ir": ((1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))}, onnx_path=Path("g.onnx"),
                           profile=BatchProfile(1, 1, 2), graph=SimpleNamespace(static_batch=None))
    builder = SimpleNamespace(create_optimization_profile=lambda: Profile(fail=True))
    with pytest.raises(EngineError, match="refused the shapes") as info:
        add_profile(builder, SimpleNamespace(add_optimization_profile=lambda p: 0), plan)
    assert "\n" not in str(info.value) and "g.onnx" in str(info.value)
    builder = SimpleNamespace(create_optimization_profile=lambda: Profile(fail=False))
    with pytest.raises(EngineError, match="returned -1") as info:
        add_profile(builder, SimpleNamespace(add_optimization_profile=lambda p: -1), plan)
    assert "fix:" in str(info.value)
