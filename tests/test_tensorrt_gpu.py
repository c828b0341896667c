"""Real engines on a GPU (marked tensorrt): build, run, CUDA graphs, threads, memory, refusal.

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from engine_support import (
    REPO,
)

from maefuse_deploy.cli.build_engine import main as build_engine_cli
from maefuse_deploy.contract import BatchProfile
from maefuse_deploy.errors import InputError, UnavailableError
from maefuse_deploy.hashing import file_sha256
from maefuse_deploy.tensorrt import availability
from maefuse_deploy.tensorrt.build import (
    TYPING_FP16_FLAG,
    TYPING_STRONG,
)
from maefuse_deploy.tensorrt.errors import EngineCompatibilityError
from maefuse_deploy.tensorrt.pool import DEFAULT_POOL_SIZE
from maefuse_deploy.tensorrt.sidecar import (
    check_compatibility,
    read_sidecar,
    write_sidecar,
)


def _tensorrt_or_skip() -> None:
    try:
        availability.require(0)
    except UnavailableError as exc:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {exc}")


def _export_micro(folder: Path, precision: str, io_mode: str = "float") -> Path:
    """maefuse-micro (random weights, seed 0) through the real exporter, dynamic batch 1:2:4."""
    from maefuse_deploy.export import ExportSpec, export_onnx
    from maefuse_deploy.model import build_model, get_config

    path = folder / f"micro-{precision}-{io_mode}.onnx"
    spec = ExportSpec(height=64, width=64, batch=(1, 2, 4), precision=precision, io=io_mode)
    export_onnx(build_model(get_config("maefuse-micro"), seed=0), path, spec, verify=False)
    return path


def _build(onnx_path: Path, engine: Path, *args: str):
    return CliRunner().invoke(build_engine_cli, [str(onnx_path), "-o", str(engine), *args])


@pytest.fixture(scope="module")
def gpu_dir(tmp_path_factory) -> Path:
    _tensorrt_or_skip()
    return tmp_path_factory.mktemp("trt")


@pytest.fixture(scope="module")
def micro_onnx(gpu_dir) -> Path:
    # The FP16 graph builds on TensorRT 10 and 11 alike (strongly typed).
    return _export_micro(gpu_dir, "fp16")


@pytest.fixture(scope="module")
def micro_engine(gpu_dir, micro_onnx) -> Path:
    engine = gpu_dir / "micro.engine"
    result = _build(micro_onnx, engine, "--precision", "fp16", "--timing-cache", str(gpu_dir / "timing.cache"))
    assert result.exit_code == 0, result.output
    print(result.output)  # the attention report, visible with pytest -s
    return engine


def _micro_inputs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((count, 3, 64, 64)).astype(np.float32),
        rng.standard_normal((count, 3, 64, 64)).astype(np.float32),
    )


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_writes_engine_sidecar_and_layers(micro_engine, micro_onnx, gpu_dir):
    sidecar = read_sidecar(micro_engine)
    assert sidecar.onnx_sha256 == file_sha256(micro_onnx)
    # The range the exporter recorded, once per context of the default pool (each concurrent context needs one).
    assert sidecar.profiles == (BatchProfile(1, 2, 4),) * DEFAULT_POOL_SIZE
    assert sidecar.io == "float" and sidecar.precision == "fp16" and sidecar.typing == TYPING_STRONG
    assert Path(f"{micro_engine}.layers.json").is_file() and Path(f"{micro_engine}.build.log").is_file()
    assert (gpu_dir / "timing.cache").is_file()
    assert sidecar.attention_fused in ("fused", "partly-fused", "myelin", "not-fused", "unknown")
    trt, _, gpu = availability.require(0)
    assert check_compatibility(sidecar, availability.runtime_facts(trt, gpu), micro_onnx) == []


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_graph_with_fp16_precision_per_tensorrt_version(gpu_dir, micro_engine):
    # micro_engine wrote the timing cache this build loads.
    trt = availability.import_tensorrt()
    onnx_path = _export_micro(gpu_dir, "fp32")
    engine = gpu_dir / "micro-fp32-graph.engine"
    result = _build(onnx_path, engine, "--precision", "fp16", "--timing-cache", str(gpu_dir / "timing.cache"))
    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10.x: the FP16 builder flag
        assert result.exit_code == 0, result.output
        assert "timing cache" in result.output and "loaded" in result.output
        assert read_sidecar(engine).typing == TYPING_FP16_FLAG
    else:  # TensorRT 11: strongly typed only
        assert result.exit_code == 1
        assert "strongly typed" in result.output and not engine.exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_uint8_io_engine(gpu_dir):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    engine = gpu_dir / "micro-uint8.engine"
    result = _build(_export_micro(gpu_dir, "fp16", "uint8"), engine)
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    vis = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with TensorRTBackend(engine) as backend:
        assert (backend.io, backend.input_size, backend.max_batch) == ("uint8", (64, 64), 4)
        fused = backend.run(ir, vis)
        assert fused.dtype == np.uint8 and fused.shape == (3, 64, 64, 3)
        assert np.array_equal(backend.run(ir[:1], vis[:1]), fused[:1])
        with pytest.raises(InputError, match="uint8"):
            backend.run(ir.astype(np.float32), vis)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fuser_tensorrt_matches_torch_float32(micro_engine):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from maefuse_deploy.backends.torch import TorchBackend
    from maefuse_deploy.io import read_image
    from maefuse_deploy.model import build_model, get_config
    from maefuse_deploy.runtime.fuser import Fuser

    model = build_model(get_config("maefuse-micro"), seed=0)
    samples = REPO / "maefuse_deploy" / "samples"
    pairs = [
        (read_image(ir, "ir"), read_image(samples / "vi" / ir.name, "vis"))
        for ir in sorted((samples / "ir").glob("*.png"))
    ]
    with (
        Fuser(TorchBackend(model, device="cuda", dtype="float32"), model_size=model.config.img_size) as reference,
        Fuser.from_checkpoint(micro_engine, backend="tensorrt") as engine,
    ):
        expected, actual = reference.fuse_batch(pairs), engine.fuse_batch(pairs)
    for want, got in zip(expected, actual, strict=True):
        mse = np.mean((want.astype(np.float64) - got.astype(np.float64)) ** 2)
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        assert psnr >= 40.0, psnr


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cuda_graph_on_and_off_identical(micro_engine):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(micro_engine) as plain, TensorRTBackend(micro_engine, cuda_graph=True) as graphed:
        for count in (1, 2, 3, 4, 7):  # 7 > max batch 4: split into 4 + 3
            ir, vis = _micro_inputs(count, seed=count)
            first = graphed.run(ir, vis)
            assert np.array_equal(plain.run(ir, vis), first)
            assert np.array_equal(graphed.run(ir, vis), first)  # the replayed graph


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_threads_equal_serial(micro_engine):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    inputs = [_micro_inputs(1 + i % 3, seed=i) for i in range(8 * 50)]
    with TensorRTBackend(micro_engine, pool_size=3) as backend:
        serial = [backend.run(ir, vis) for ir, vis in inputs]
        results: list = [None] * len(inputs)

        def worker(offset: int) -> None:
            for index in range(offset, len(inputs), 8):
                results[index] = backend.run(*inputs[index])

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for want, got in zip(serial, results, strict=True):
        assert np.array_equal(want, got)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_run_torch_matches_numpy(micro_engine):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    ir, vis = _micro_inputs(5, seed=3)
    with TensorRTBackend(micro_engine) as backend:
        out = backend.run(torch.from_numpy(ir).cuda(), torch.from_numpy(vis).cuda())
        torch.cuda.synchronize()
        assert out.is_cuda
        assert np.array_equal(out.cpu().numpy(), backend.run(ir, vis))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_create_destroy_cycles_do_not_leak(micro_engine):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    cudart = availability.import_cudart()
    ir, vis = _micro_inputs(2, seed=0)

    def cycle() -> None:
        with TensorRTBackend(micro_engine, cuda_graph=True) as backend:
            backend.run(ir, vis)

    for _ in range(5):  # let lazy CUDA/TensorRT initialisation settle
        cycle()
    free_before = cudart.cudaMemGetInfo()[1]
    for _ in range(1000):
        cycle()
    free_after = cudart.cudaMemGetInfo()[1]
    assert free_before - free_after < 32 * 2**20, (free_before - free_after) / 2**20


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_for_another_gpu_is_refused(micro_engine, tmp_path):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    engine = tmp_path / "copy.engine"
    engine.write_bytes(micro_engine.read_bytes())
    real = read_sidecar(micro_engine)
    other = (real.compute_capability[0] + 1, 0)
    write_sidecar(engine, replace(real, gpu_name="Some Other GPU", compute_capability=other))
    for allow in (False, True):  # built without --hardware-compat: the override cannot help
        with pytest.raises(EngineCompatibilityError, match="Some Other GPU"):
            TensorRTBackend(engine, allow_incompatible=allow)
