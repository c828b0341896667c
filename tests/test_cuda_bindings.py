"""availability and checked() against the real cuda-python bindings (cuda-bindings imports without a GPU; on a
machine without a driver or GPU each call returns its error code), and the TensorRT import check.
"""

from __future__ import annotations

import sys

import pytest

from maefuse_deploy.errors import UnavailableError
from maefuse_deploy.tensorrt import availability
from maefuse_deploy.tensorrt.cuda import checked, cuda_error_name
from maefuse_deploy.tensorrt.errors import EngineError

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is part of the dev extra")


def has_gpu() -> bool:
    err, count = runtime.cudaGetDeviceCount()
    return err == runtime.cudaError_t.cudaSuccess and count > 0


def test_import_cudart_gives_the_real_bindings():
    assert availability.import_cudart() is runtime


def test_checked_names_the_real_error_in_one_line():
    assert checked(runtime, (runtime.cudaError_t.cudaSuccess, 7), "anything") == 7
    assert checked(runtime, (runtime.cudaError_t.cudaSuccess,), "anything") is None
    assert checked(runtime, (runtime.cudaError_t.cudaSuccess, 1, 2), "anything") == (1, 2)
    with pytest.raises(EngineError) as info:
        checked(runtime, (runtime.cudaError_t.cudaErrorInvalidValue, None), "copying ir to the GPU")
    assert str(info.value).startswith("CUDA failed copying ir to the GPU: cudaErrorInvalidValue")
    assert cuda_error_name(runtime, runtime.cudaError_t.cudaErrorMemoryAllocation) == "cudaErrorMemoryAllocation"


@pytest.mark.skipif(has_gpu(), reason="checks the no-GPU path")
def test_gpu_info_without_a_gpu_is_one_line_naming_the_extra():
    with pytest.raises(UnavailableError) as info:
        availability.gpu_info(runtime, 0)
    text = str(info.value)
    assert "\n" not in text and "cudaError" in text
    if "InsufficientDriver" in text:  # no driver here, or one older than these bindings need
        assert "trt-cu12" in text and "R580" in text
    with pytest.raises(EngineError, match="selecting CUDA device 0"):
        checked(runtime, runtime.cudaSetDevice(0), "selecting CUDA device 0")


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu(), reason="needs a CUDA GPU")
def test_gpu_info_reads_the_real_gpu():
    info = availability.gpu_info(runtime, 0)
    assert info.name and info.compute_capability >= (5, 0) and info.total_memory > 0


def test_type_stubs_alone_are_not_tensorrt(tmp_path, monkeypatch):
    """tensorrt-stubs puts a folder of .pyi files named tensorrt on the path; it imports as an empty package."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    try:
        with pytest.raises(UnavailableError) as info:
            availability.import_tensorrt()
    finally:
        sys.modules.pop("tensorrt", None)  # the empty package must not stay imported for later tests
    assert "only its type stubs" in str(info.value) and "trt-cu12" in str(info.value)
