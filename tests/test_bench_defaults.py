"""maefuse-bench as a user runs it, with no --backends: every backend that can run here is measured on real pairs,
the others are listed with the reason, and a summary line names the fastest row of each accuracy class. A graph
given as the model is measured with its own runtimes; a run that measures nothing is an error.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from maefuse_deploy.backends.cpu_kernels import ISA_CAP_VARIABLES, bf16_cap
from maefuse_deploy.bench.runner import Row, fastest_by_class
from maefuse_deploy.bench.settings import BACKENDS, plan_backends
from maefuse_deploy.cli.bench import main as bench_main
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import save_checkpoint
from maefuse_deploy.model.sources import resolve_torch_model

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
QUICK = ["--latency", "--iterations", "1", "--warmup", "0", "--pairs", "2", "--threads", "1",
         "--peak-tflops", "0.1", "--int8-calibration-pairs", "2"]


def invoke(args):
    return CliRunner().invoke(bench_main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def micro_graph(tmp_path_factory):
    model = resolve_torch_model("random:maefuse-micro", None).model
    path = tmp_path_factory.mktemp("graph") / "micro.onnx"
    export_onnx(model, path, ExportSpec(height=64, width=64, batch=(1, 1, 2)), verify=False)
    return path


def test_default_run_measures_every_backend_that_runs_here(ivif, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke(["--model", "random:maefuse-micro", "--pairs-dir", str(ivif / "MSRS6"), *QUICK, "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {row["backend"]: row for row in data["rows"]}
    assert list(rows) == list(BACKENDS)  # every backend has a row: measured, or skipped with its reason
    expected = {"release-style", "torch", "onnxruntime", "onnxruntime-int8"}
    if "avx512_bf16" in data["machine"]["cpu_flags"] or "amx_bf16" in data["machine"]["cpu_flags"]:
        expected |= {"torch-bf16"} | ({"openvino-bf16", "openvino-int8-bf16"} if HAS_OPENVINO else set())
    if HAS_OPENVINO:
        expected |= {"openvino", "openvino-int8"}
    for name, row in rows.items():
        if name in expected:
            assert row["status"] == "ok", (name, row["reason"])
            assert row["accuracy_pairs"] == 2 and row["psnr_db"] is not None
        else:
            assert row["status"] == "skipped" and row["reason"], name
            assert f"{name} batch 1: skipped: " in result.output
    assert rows["torch-fp16"]["reason"].startswith("not run by default")
    # The summary names the fastest row of each accuracy class, and it is the fastest of that class.
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    good = [r for r in ok if r["psnr_db"] == "inf" or r["psnr_db"] >= 40]
    best = min(good, key=lambda r: r["latency_ms"]["p50"])
    assert data["fastest"][0]["class"] == ">= 40 dB" and data["fastest"][0]["backend"] == best["backend"]
    assert f"fastest, fused PSNR vs float32 >= 40 dB: {best['backend']} batch 1" in result.output
    int8 = [r for r in ok if r["precision"] == "int8"]
    # int8 rows are held to an int8 floor: the FLOPs at the int8 matmul rate OpenVINO reaches on this CPU (VNNI or
    # AMX), probed with the toolchain those rows run, never a float probe standing in for it.
    for row in int8:
        peak = data["peaks"]["int8"]
        assert "OpenVINO int8 matmul" in peak["source"]
        assert row["floor_ms"] == pytest.approx(data["flops"]["deployed"]["total"] / peak["flops_per_s"] * 1e3)
    assert rows["openvino-weights"]["reason"].startswith("not run by default")


def test_graph_as_model_is_measured_with_its_runtimes(micro_graph, ivif):
    result = invoke(["--model", str(micro_graph), "--pairs-dir", str(ivif / "MSRS6"), *QUICK])
    assert result.exit_code == 0, result.output
    assert "onnxruntime  " in result.output and "onnxruntime-int8" in result.output
    if HAS_OPENVINO:
        assert "openvino-bf16" in result.output.split("torch batch 1: skipped")[0]
    assert "torch batch 1: skipped: --model is a graph file: torch rows need weights" in result.output
    assert "fastest, fused PSNR vs float32 accuracy unknown (no reference): " in result.output
    # With the weights as reference, the graph rows get accuracy columns.
    result = invoke(["--model", str(micro_graph), "--reference", "random:maefuse-micro", "--backends", "onnxruntime",
                     "--pairs-dir", str(ivif / "MSRS6"), *QUICK])
    assert result.exit_code == 0, result.output
    assert "fastest, fused PSNR vs float32 >= 40 dB: onnxruntime batch 1" in result.output


def test_a_run_that_measures_nothing_is_an_error(micro_graph, ivif):
    result = invoke(["--model", str(micro_graph), "--backends", "torch,tensorrt", "--pairs-dir",
                     str(ivif / "MSRS6"), *QUICK])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing was measured" in errors[0], result.output
    assert "torch batch 1: skipped" in result.output  # the reasons are still shown


def test_a_backend_that_cannot_compute_the_models_attention_is_a_skipped_row(ivif, tmp_path):
    """release-style re-implements the authors' softmax attention: for a linear-attention checkpoint its row is
    skipped with the backend's own reason (BackendBase.unsupported_block_attention), and the other rows run."""
    config = get_config("maefuse-micro").replace(name="micro-linear", block_attention="linear")
    checkpoint = save_checkpoint(build_model(config, seed=0), tmp_path / "linear.safetensors")
    result = invoke(["--model", str(checkpoint), "--backends", "torch,release-style", "--pairs-dir",
                     str(ivif / "MSRS6"), *QUICK])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("release-style batch 1: skipped")]
    assert len(skipped) == 1 and "softmax block attention only, not linear" in skipped[0], result.output
    assert "torch batch 1: skipped" not in result.output


def test_plan_lists_every_backend_with_reasons_per_device(monkeypatch):
    for variable in ISA_CAP_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    cpu = dict(plan_backends(None, "cpu", ["avx512f", "avx512_bf16"]))
    assert list(cpu) == list(BACKENDS)
    assert cpu["torch"] is None and cpu["openvino-int8"] is None and cpu["torch-bf16"] is None
    assert "float16" in cpu["torch-fp16"]
    old_cpu = dict(plan_backends(None, "cpu", ["avx2"]))
    assert "no AVX-512 BF16" in old_cpu["torch-bf16"] and "no AVX-512 BF16" in old_cpu["openvino-bf16"]
    gpu = dict(plan_backends(None, "cuda", []))
    assert gpu["torch-fp16"] is None and gpu["tensorrt"] is None and gpu["onnxruntime"] is None
    assert "CPU" in gpu["openvino"] and "CPU" in gpu["onnxruntime-int8"]
    assert plan_backends(("torch",), "cpu", []) == [("torch", None)]


def test_a_onednn_cap_without_bf16_leaves_the_bf16_rows_out_as_auto_does(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI (an emulation of a CPU without BF16) the CPU still reports BF16, but
    the kernels have none: the default run must not time emulated bf16 (maefuse-l640's openvino-bf16 row ran for
    minutes), and says why in the row, with the words auto uses."""
    for variable in ISA_CAP_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    amx = ["avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni")
    capped = dict(plan_backends(None, "cpu", amx))
    for name in ("torch-bf16", "openvino-bf16", "openvino-int8-bf16"):
        assert capped[name] and "ONEDNN_MAX_CPU_ISA=avx512_core_vnni" in capped[name] and "emulated" in capped[name]
    assert capped["openvino-int8"] is None and capped["torch"] is None
    assert bf16_cap() in capped["openvino-bf16"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX10_1_512_AMX")  # a cap that keeps AMX leaves the answer to the CPU
    assert dict(plan_backends(None, "cpu", amx))["openvino-bf16"] is None
    assert plan_backends(("openvino-bf16",), "cpu", amx) == [("openvino-bf16", None)]  # asked for: measured


def test_fastest_by_class_splits_at_40_db():
    def row(name, p50, psnr):
        return Row(name, 1, "float32", latency_ms={"p50": p50}, psnr_db=psnr)

    rows = [row("a", 10.0, float("inf")), row("b", 5.0, 52.0), row("c", 2.0, 39.9), row("d", 3.0, 20.0),
            Row("e", 1, "float32", status="skipped", reason="no")]
    best = fastest_by_class(rows, has_reference=True)
    assert [(b["class"], b["backend"]) for b in best] == [(">= 40 dB", "b"), ("< 40 dB", "c")]
    assert [b["backend"] for b in fastest_by_class(rows, has_reference=False)] == ["c"]
