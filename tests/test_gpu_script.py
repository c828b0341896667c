"""benchmarks/gpu/run.sh, the one command of a lent GPU call: its dry run lists every step on the CPU (and runs the
CPU ones: machine facts, the torch matrix on maefuse-micro, the Fuser device-path check), so the script cannot rot
between the sessions that have a GPU; and its step runner (benchmarks/gpu/steps.py) records a failing, hanging or
unavailable step softly and still runs the next one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

STEP_NAMES = ["machine", "torch-matrix", "fuser-cuda-tensors", "cpp-build", "ctest", "compute-sanitizer-memcheck",
              "compute-sanitizer-racecheck", "compute-sanitizer-synccheck", "aoti-cuda"]
CPU_STEPS = {"machine", "torch-matrix", "fuser-cuda-tensors"}


def load_steps_module():
    """benchmarks/gpu/steps.py as a module (benchmarks/ is no package): the runner itself, not a stand-in."""
    spec = importlib.util.spec_from_file_location("gpu_steps", REPO / "benchmarks" / "gpu" / "steps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_steps"] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, ivif) -> Path:
    out = tmp_path_factory.mktemp("gpu")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return out


def test_gpu_benchmark_dry_run_writes_json_and_markdown(dry_run):
    data = json.loads((dry_run / "results.json").read_text())
    assert data["dry_run"] is True and data["model"].startswith("maefuse-micro")
    rows = data["rows"]
    measured = {(r["dtype"], r["mode"], r["batch"]) for r in rows if r["backend"] == "torch" and r["status"] == "ok"}
    assert measured == {(d, m, b) for d in ("float16", "bfloat16") for m in ("eager", "compile") for b in (1, 2)}
    for row in rows:
        if row["status"] == "ok":
            # Half precision against float32 on real pairs: the accuracy class the benchmark summary uses.
            assert row["identical"] or row["psnr_db"] >= 40.0, row
            assert row["p50_ms"] > 0 and row["floor_ms"] > 0 and row["x_floor"] > 0
        else:
            assert row["reason"], row
    graphs = [r for r in rows if r["mode"] == "cuda-graph"]
    assert len(graphs) == 2 and all("need a GPU" in r["reason"] for r in graphs)
    assert any(r["backend"].startswith("onnxruntime") and r["status"] == "ok" for r in rows)
    # Cheapest rows first, so a time-boxed GPU run loses compile rows only.
    torch_modes = [r["mode"] for r in rows if r["backend"] == "torch"]
    assert torch_modes == sorted(torch_modes, key=["eager", "cuda-graph", "compile"].index)
    table = (dry_run / "results.md").read_text()
    assert "DRY RUN" in table and "| torch | float16 | compile | 2 |" in table


def test_dry_run_lists_every_step_in_order_with_its_command(dry_run):
    report = json.loads((dry_run / "steps.json").read_text())
    steps = report["steps"]
    assert [s["name"] for s in steps] == STEP_NAMES
    assert report["dry_run"] is True
    # The budgets fit the device call: under 9 minutes in all, the torch matrix the largest.
    budgets = {s["name"]: s["budget_s"] for s in steps}
    assert sum(budgets.values()) < 540 and max(budgets, key=budgets.get) == "torch-matrix"
    for step in steps:
        assert step["command"], step
        if step["name"] in CPU_STEPS:
            assert step["status"] == "ok" and step["exit_status"] == 0, step
            assert "--dry-run" in step["command"] or step["name"] == "machine"
            assert step["gpu_command"] and "--dry-run" not in step["gpu_command"]
            assert 0 < step["duration_s"] < step["budget_s"]
        else:
            assert step["status"] == "dry-run" and step["exit_status"] is None, step
    commands = {s["name"]: s["command"] for s in steps}
    assert commands["cpp-build"].startswith("bash benchmarks/gpu/cpp_build.sh ")
    assert commands["ctest"].startswith("ctest --test-dir ")
    for tool in ("memcheck", "racecheck", "synccheck"):
        assert commands[f"compute-sanitizer-{tool}"].startswith(f"compute-sanitizer --tool {tool} ")
        assert commands[f"compute-sanitizer-{tool}"].endswith("engines/tests/test_device kernels")
    assert "aoti_cuda_check.py" in commands["aoti-cuda"]
    assert "--require-gpu" in next(s["gpu_command"] for s in steps if s["name"] == "machine")
    assert report["machine"]["summary"]["torch"], report["machine"]

    markdown = (dry_run / "steps.md").read_text()
    assert "TensorRT itself cannot run here: it is not installed on the lent GPU machines" in markdown
    assert "DRY RUN" in markdown
    positions = [markdown.index(f"| {name} |") for name in STEP_NAMES]
    assert positions == sorted(positions)
    for step in steps:
        if step["status"] == "dry-run":
            assert f"would run: `{step['command']}`" in markdown
    fuser = json.loads((dry_run / "fuser_device.json").read_text())
    assert fuser["ok"] and fuser["dry_run"] and {c["policy"] for c in fuser["cases"]} == {"native", "official"}
    assert all(c["max_abs"] <= c["tolerance_grey_levels"] for c in fuser["cases"])
    # Within what a device call brings back: at most 8 files, no folders.
    assert len(list(dry_run.iterdir())) <= 8 and all(p.is_file() for p in dry_run.iterdir())


def test_a_failing_or_hanging_step_is_recorded_and_the_next_step_still_runs(tmp_path):
    steps = load_steps_module()
    py = sys.executable
    child_pid = tmp_path / "child.pid"
    never = tmp_path / "never-created"
    plan = [
        steps.Step("fails", [py, "-c", "import sys; print('about to fail'); sys.exit(5)"], 30.0),
        # A hanging step with a child of its own: the timeout must end both, not only the direct process.
        steps.Step("hangs", [py, "-c", "import subprocess, sys, time; "
                             "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                             f"open({str(child_pid)!r}, 'w').write(str(c.pid)); print('hanging', flush=True); "
                             "time.sleep(60)"], 2.0),
        steps.Step("unavailable", [py, "-c", "import sys; print('not available: no such exporter option'); "
                                   "sys.exit(3)"], 30.0, may_be_unavailable=True),
        steps.Step("missing-tool", ["maefuse-no-such-tool-here", "--version"], 30.0),
        steps.Step("gpu-only", [py, "-c", f"open({str(never)!r}, 'w')"], 30.0, gpu_only=True),
        steps.Step("next", [py, "-c", "print('next step ran')"], 30.0),
    ]
    report = steps.run_steps(plan, tmp_path / "out", dry_run=False, command="test")
    by_name = {o.name: o for o in report.outcomes}
    assert [o.name for o in report.outcomes] == [s.name for s in plan]

    assert by_name["fails"].status == "failed" and by_name["fails"].exit_status == 5
    assert "about to fail" in by_name["fails"].log_tail

    hung = by_name["hangs"]
    assert hung.status == "timed-out" and hung.exit_status is not None and hung.exit_status < 0
    assert 2.0 <= hung.duration_s < 20 and "hanging" in hung.log_tail
    pid = int(child_pid.read_text())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text(), "the step's child outlived its timeout"

    assert by_name["unavailable"].status == "not-available"
    assert by_name["unavailable"].reason == "not available: no such exporter option"
    assert by_name["missing-tool"].status == "failed" and by_name["missing-tool"].exit_status == 127
    # Not a dry run: a GPU-only step runs like any other.
    assert by_name["gpu-only"].status == "ok" and never.exists()
    assert by_name["next"].status == "ok" and "next step ran" in by_name["next"].log_tail

    saved = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert [s["status"] for s in saved["steps"]] == ["failed", "timed-out", "not-available", "failed", "ok", "ok"]
    assert all(s["duration_s"] is not None for s in saved["steps"])
    markdown = (tmp_path / "out" / "steps.md").read_text()
    assert "| 2 | hangs | timed-out |" in markdown and "about to fail" in markdown
    log = (tmp_path / "out" / "steps.log").read_text()
    assert log.index("about to fail") < log.index("hanging") < log.index("next step ran")


def test_dry_run_lists_gpu_steps_without_running_them_and_the_deadline_skips(tmp_path):
    steps = load_steps_module()
    py = sys.executable
    never = tmp_path / "never-created"
    plan = [
        steps.Step("cpu", [py, "-c", "print('gpu form')"], 30.0, dry_argv=[py, "-c", "print('dry form')"]),
        steps.Step("gpu-only", [py, "-c", f"open({str(never)!r}, 'w')"], 30.0, gpu_only=True),
    ]
    report = steps.run_steps(plan, tmp_path / "dry", dry_run=True, command="test --dry-run")
    cpu, gpu = report.outcomes
    assert cpu.status == "ok" and "dry form" in cpu.log_tail and "gpu form" in cpu.gpu_command
    assert gpu.status == "dry-run" and not never.exists() and str(never) in gpu.command

    # The run's deadline bounds the steps' budgets: a slow first step is cut at it and the rest are skipped.
    plan = [steps.Step("slow", [py, "-c", "import time; time.sleep(30)"], 30.0),
            steps.Step("late", [py, "-c", "print('late')"], 30.0)]
    report = steps.run_steps(plan, tmp_path / "deadline", dry_run=False, command="test", deadline_s=1.5)
    slow, late = report.outcomes
    assert slow.status == "timed-out" and slow.duration_s < 10
    assert late.status == "skipped" and "deadline" in late.reason
