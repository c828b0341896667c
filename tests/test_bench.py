"""maefuse-bench: the JSON schema, every column computed from real pairs, the release-style baseline, the reports,
the stream and one-line errors. Micro config and a handful of calls: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from maefuse_deploy.backends.release_style import ReleaseStyleBackend
from maefuse_deploy.backends.torch import TorchBackend
from maefuse_deploy.bench.flops import count_flops, measure_peak
from maefuse_deploy.bench.settings import parse_peak
from maefuse_deploy.bench.stream import run_stream
from maefuse_deploy.bench.timing import summarize
from maefuse_deploy.cli.bench import main as bench_main
from maefuse_deploy.contract import FrameSize, parse_frame_size
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.processing import prepare_pair
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.sample_pairs import load_pairs

BACKENDS = "release-style,torch,torch-bf16,onnxruntime,tensorrt"
STATS = {"p50", "p90", "p99", "mean", "min", "max"}
ROW_TYPES = {
    "backend": str, "batch": int, "precision": str, "status": str, "io": str, "latency_ms": dict, "compute_ms": dict,
    "throughput_pairs_s": float, "peak_host_mb": float, "host_memory_scope": str, "load_s": float,
    "first_call_s": float, "max_abs_err": float, "accuracy_pairs": int, "floor_ms": float, "floor_ratio": float,
    "speedup": float, "samples_ms": list, "notes": list,
}
NULL_ON_CPU = ("h2d_ms", "d2h_ms", "peak_device_mb", "pre_ms", "post_ms")


def invoke(args):
    return CliRunner().invoke(bench_main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def bench(msrs, tmp_path_factory):
    """One CLI run over every backend kind, batches 1 and 2, on two real MSRS pairs; its JSON, markdown, plot."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench.png"}
    result = invoke([
        "--latency", "--model", "random:maefuse-micro", "--backends", BACKENDS, "--batches", "1,2", "--iterations", "2",
        "--warmup", "0", "--pairs", "2", "--pairs-dir", str(msrs), "--peak-tflops", "0.1",
        "--threads", "1", "--json", str(paths["json"]), "--markdown", str(paths["markdown"]),
        "--plot", str(paths["plot"]),
    ])
    assert result.exit_code == 0, result.output
    return result, json.loads(paths["json"].read_text()), paths


def rows_of(data, backend):
    return [row for row in data["rows"] if row["backend"] == backend]


def test_json_schema(bench):
    _, data, _ = bench
    assert set(data) == {"date", "command", "machine", "model", "settings", "flops", "peaks", "rows",
                         "release_check", "stream", "notes", "fastest"}
    assert data["command"].startswith("maefuse-bench --latency --model random:maefuse-micro")
    machine = data["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert machine["gpu"] is None or isinstance(machine["gpu"], dict)
    assert {"python", "torch", "numpy", "onnxruntime"} <= set(machine["libraries"])
    assert data["model"]["resolution"] == "64x64" and data["model"]["config"]["name"] == "maefuse-micro"
    assert set(data["flops"]["deployed"]) == {"encoder", "fusion", "decoder", "total"}
    for peak in data["peaks"].values():
        assert peak["source"] == "given" and peak["flops_per_s"] == pytest.approx(1e11)
    for row in data["rows"]:
        assert row["status"] in ("ok", "skipped", "failed")
        if row["status"] != "ok":
            assert isinstance(row["reason"], str) and row["reason"]
            continue
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (row["backend"], key, row[key])
        assert row["psnr_db"] == "inf" or isinstance(row["psnr_db"], float)
        assert set(row["latency_ms"]) == STATS and set(row["compute_ms"]) == STATS
        # 2 timed calls: too few for p90 and p99 (timing.PERCENTILE_MIN_SAMPLES), which are null.
        assert row["latency_ms"]["p90"] is None and row["latency_ms"]["p99"] is None
        assert all(isinstance(v, float) for k, v in row["latency_ms"].items() if k not in ("p90", "p99"))


def test_every_column_is_computed_from_real_pairs(bench):
    _, data, _ = bench
    ok = [row for row in data["rows"] if row["status"] == "ok"]
    assert {(r["backend"], r["batch"]) for r in ok} == {
        ("release-style", 1), ("torch", 1), ("torch", 2), ("torch-bf16", 1), ("torch-bf16", 2),
        ("onnxruntime", 1), ("onnxruntime", 2),
    }
    assert any("MSRS6" in note for note in data["notes"])
    for row in ok:
        latency = row["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["max"]
        assert len(row["samples_ms"]) == 2
        assert row["throughput_pairs_s"] > 0 and row["peak_host_mb"] > 0 and row["first_call_s"] > 0
        assert row["floor_ms"] == pytest.approx(data["flops"]["deployed"]["total"] / 1e11 * 1e3)
        assert row["floor_ratio"] > 0 and row["speedup"] > 0
        assert row["accuracy_pairs"] == 2  # every real pair was fused and compared
        for key in NULL_ON_CPU:  # no transfers on a CPU, no device, no host processing with --io float
            assert row[key] is None
    torch_rows = rows_of(data, "torch")
    assert all(r["max_abs_err"] == 0.0 and r["psnr_db"] == "inf" for r in torch_rows)  # it is the reference
    for row in rows_of(data, "torch-bf16"):  # a lower precision differs, measurably but slightly
        assert 0 < row["max_abs_err"] < 0.5 and 30 < row["psnr_db"] < math.inf
    for row in rows_of(data, "onnxruntime"):
        assert row["max_abs_err"] < 1e-4
        assert any("temporary fp32 ONNX" in note for note in row["notes"])


def test_release_style_row_is_the_baseline_and_matches_official(bench):
    _, data, _ = bench
    (row,) = rows_of(data, "release-style")
    assert row["status"] == "ok" and row["batch"] == 1 and row["precision"] == "float32"
    assert row["speedup"] == pytest.approx(1.0)
    check = data["release_check"]
    assert check["status"] == "passed" and check["max_abs_err"] <= 1e-4 and check["pairs"] == 2


def test_versus_times_the_model_it_replaces_in_the_same_run_and_is_the_speed_up_baseline(msrs, tmp_path):
    """The real-time question: the model under test against another model's torch float32 row, one run. The
    other model's row is timed like every row; the speed-ups and the fastest line are over it."""
    path = tmp_path / "versus.json"
    result = invoke(["--latency", "--model", "random:maefuse-micro", "--versus", "maefuse-tiny", "--backends",
                     "torch,torch-bf16", "--iterations", "2", "--warmup", "0", "--pairs", "2", "--pairs-dir",
                     str(msrs), "--resolution", "64x64", "--threads", "1", "--json", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    (versus,) = [row for row in data["rows"] if row["model"] is not None]
    assert versus["model"] == "maefuse-tiny" and versus["backend"] == "torch" and versus["precision"] == "float32"
    assert versus["speedup"] == pytest.approx(1.0) and versus["floor_ms"] is None and versus["psnr_db"] is None
    (micro,) = [row for row in rows_of(data, "torch") if row["model"] is None]
    # maefuse-micro (32 wide, 4x4 tokens) against maefuse-tiny at 64x64: the small model is the faster one.
    assert micro["speedup"] == pytest.approx(micro["throughput_pairs_s"] / versus["throughput_pairs_s"])
    assert micro["speedup"] > 1.0
    assert "torch (maefuse-tiny)" in result.output
    assert "x the pairs/s of torch float32 maefuse-tiny" in result.output
    assert data["fastest"] and all(best["speedup_over"] == "torch float32 maefuse-tiny" for best in data["fastest"])


def test_unavailable_backend_is_a_skipped_row(bench):
    result, data, _ = bench
    rows = rows_of(data, "tensorrt")
    assert [r["batch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["status"] == "skipped" and "TensorRT" in row["reason"]
    assert "tensorrt batch 1: skipped: TensorRT" in result.output


def test_markdown_and_plot_are_written(bench):
    _, _, paths = bench
    text = paths["markdown"].read_text()
    assert "| backend | batch | precision | p50 ms |" in text
    assert "| release-style | 1 | float32 |" in text and "tensorrt batch 1: skipped" in text
    assert "- machine: " in text and "- command: `maefuse-bench --latency" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_release_style_uses_multihead_attention_and_equals_official_at_batch_1(msrs):
    model = build_model(get_config("maefuse-micro"), seed=3)
    release = ReleaseStyleBackend(build_model(get_config("maefuse-micro"), seed=3))
    modules = [m for m in release.model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(modules) == 2 and not any(m.batch_first for m in modules)
    pairs = load_pairs(msrs, 2)
    inputs = [prepare_pair(p.ir, p.vis, "official", (64, 64), 16)[:2] for p in pairs]
    ir = torch.from_numpy(np.stack([i for i, _ in inputs]))
    vis = torch.from_numpy(np.stack([v for _, v in inputs]))
    ours = TorchBackend(model).run(ir, vis)  # official path, both pairs in one batch
    for k in range(2):
        theirs = release.run(ir[k : k + 1], vis[k : k + 1])
        assert (theirs - ours[k : k + 1]).abs().max().item() <= 1e-4


def test_io_uint8_times_host_processing(msrs):
    result = invoke(["--latency", "--model", "random:maefuse-micro", "--backends", "torch", "--io", "uint8",
                     "--iterations", "2", "--warmup", "0", "--pairs", "1", "--pairs-dir", str(msrs),
                     "--peak-tflops", "0.1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "pre ms" in result.output and "post ms" in result.output


def test_stream_counts_every_frame(msrs):
    pairs = load_pairs(msrs, 2)
    fuser = Fuser(TorchBackend(build_model(get_config("maefuse-micro"), seed=0)), model_size=(64, 64))
    stream = run_stream("torch", fuser, [(p.ir, p.vis) for p in pairs], fps=20, duration=1.0, queue_size=2)
    assert stream.offered == 20
    assert stream.processed + stream.dropped_capture + stream.dropped_output == stream.offered
    assert stream.latency_ms is not None and stream.latency_ms["min"] > 0
    assert len(stream.windows) == 1 and stream.windows[0]["processed"] == stream.processed


class SlowFuser:
    """A real Fuser that takes at least ``seconds`` per call: a model slower than the camera, without a big one."""

    def __init__(self, fuser, seconds):
        self.fuser, self.seconds, self.batch_size = fuser, seconds, fuser.batch_size

    def fuse_batch(self, pairs):
        import time

        time.sleep(self.seconds)
        return self.fuser.fuse_batch(pairs)


def test_stream_slower_than_the_camera_drops_and_counts_it(msrs):
    """20 fps into a fuser of at most 5 calls a second: pairs are lost before fusion, each counted once, and the
    ones fused waited (latency at least the call time)."""
    pairs = load_pairs(msrs, 1)
    fuser = SlowFuser(Fuser(TorchBackend(build_model(get_config("maefuse-micro"), seed=0)), model_size=(64, 64),
                            batch_size=1), 0.2)
    stream = run_stream("torch", fuser, [(p.ir, p.vis) for p in pairs], fps=20, duration=1.0, queue_size=2)
    assert stream.offered == 20 and stream.max_batch == 1
    assert 0 < stream.processed <= 10 and stream.dropped_capture >= 10
    assert stream.processed + stream.dropped_capture + stream.dropped_output == stream.offered
    assert stream.latency_ms is not None and stream.latency_ms["min"] >= 200
    assert sum(w["processed"] + w["dropped"] for w in stream.windows) == stream.offered


def test_bench_stream_drives_the_stream_pipeline(msrs, tmp_path, monkeypatch):
    """maefuse-bench --stream measures what users run: a stream.Pipeline fed by two push sources (issue 23)."""
    from maefuse_deploy.stream import Pipeline

    finished = []
    original = Pipeline.join

    def recording(self, timeout=None):
        stats = original(self, timeout)
        finished.append((self, stats))
        return stats

    monkeypatch.setattr(Pipeline, "join", recording)
    path = tmp_path / "stream.json"
    result = invoke(["--stream", "--model", "random:maefuse-micro", "--backends", "torch", "--fps", "20",
                     "--duration", "1", "--queue", "2", "--pairs", "2", "--pairs-dir", str(msrs), "--threads", "1",
                     "--json", str(path)])
    assert result.exit_code == 0, result.output
    [stream] = json.loads(path.read_text())["stream"]
    assert len(finished) == 1, "the bench did not run stream.Pipeline"
    pipeline, stats = finished[0]
    assert {type(source).__name__ for source in pipeline._sources.values()} == {"PushSource"}
    assert pipeline.policy == "drop-oldest"  # a live camera: it does not wait for the fuser
    assert stream["offered"] == 20 and stats.read_vis <= 20
    assert stream["processed"] == stats.written and stream["processed"] + stream["dropped_output"] == stats.fused
    assert stream["latency_ms"]["max"] == pytest.approx(stats.latency_ms["max"])


@pytest.mark.parametrize("package", ["bench", "export"])
def test_backends_are_opened_only_through_the_registry(package):
    """backends/registry.py's open_backend is the one way to build a backend: no backend class is called directly
    in bench/ or export/ (module level or inside a function)."""
    import ast
    from pathlib import Path

    import maefuse_deploy

    folder = Path(maefuse_deploy.__file__).parent / package
    # the registry and the base class/device helpers (devices; cpu_kernels: what the CPU's kernels can run), not
    # backends
    allowed = {"registry", "base", "devices", "cpu_kernels"}
    calls = []
    for source in sorted(folder.glob("*.py")):
        tree = ast.parse(source.read_text())
        classes = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module and node.module.startswith("backends.") and node.level
                   and node.module.split(".")[1] not in allowed for alias in node.names}
        calls += [f"{source.name}:{node.lineno} {node.func.id}(...)" for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes]
    assert not calls, calls


def test_flops_of_the_released_model_match_the_design():
    flops = count_flops(get_config("maefuse-l640"))  # docs/model.md §6: about 2.5 TFLOP per pair
    assert flops.encoder == pytest.approx(2.44e12, rel=0.01)
    assert flops.fusion == pytest.approx(0.03e12, rel=0.02)
    assert flops.decoder == pytest.approx(0.064e12, rel=0.01)
    assert count_flops(get_config("maefuse-l640"), form="release").total > flops.total


def test_peak_probe_and_percentiles():
    rate, size = measure_peak(torch.device("cpu"), torch.float32, budget_s=0.05)
    assert rate > 0 and size >= 256
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    assert stats["p50"] == 2.5 and stats["min"] == 1.0 and stats["max"] == 4.0 and stats["mean"] == 2.5


def test_parsers():
    assert parse_frame_size("640x480") == FrameSize(width=640, height=480)
    assert parse_frame_size("640 X 480").hw == (480, 640)
    assert parse_peak("0.2") == {"float32": 2e11, "bfloat16": 2e11, "float16": 2e11}
    assert parse_peak("bfloat16=0.8") == {"bfloat16": 8e11}


@pytest.mark.parametrize("args, expect", [
    (["--backends", "torch,warp"], "unknown backend 'warp'"),
    (["--batches", "0"], "every batch size must be at least 1"),
    (["--resolution", "640"], "is not WIDTHxHEIGHT"),
    (["--resolution", "70x64"], "not a multiple of the patch size 16"),
    (["--model", "MISSING.pth"], "checkpoint not found"),
    (["--model", "UNREADABLE.pth"], "not a readable torch checkpoint"),
    (["--model", "UNREADABLE.onnx"], "not a readable ONNX graph"),
    (["--plot", "out.gif"], "cannot write a plot"),
    ([], "nothing to measure"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, args, expect):
    for name in ("UNREADABLE.pth", "UNREADABLE.onnx"):
        (tmp_path / name).write_bytes(b"not a model")
    args = [str(tmp_path / a) if a.startswith(("MISSING", "UNREADABLE")) else a for a in args]
    if "--model" not in args:
        args = ["--model", "random:maefuse-micro", *args]
    if expect != "nothing to measure":
        args = ["--latency", *args]
    result = invoke([*args, "--iterations", "1", "--warmup", "0", "--pairs", "1"])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], result.output


def test_the_machine_record_says_which_kernel_limits_the_run_was_made_under(monkeypatch):
    """A run under ONEDNN_MAX_CPU_ISA stands for another CPU (no AMX, no BF16 for OpenVINO) while /proc/cpuinfo
    still lists them: the record names the variable, and only variables that are set."""
    from maefuse_deploy.bench.machine import KERNEL_ENVIRONMENT, describe_machine

    for name in KERNEL_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert describe_machine()["environment"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert describe_machine()["environment"] == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}
