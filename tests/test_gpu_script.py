"""benchmarks/gpu/run.sh --dry-run: the GPU benchmark's one command runs end to end on the CPU (maefuse-micro), so
that it cannot rot between the sessions that have a GPU. It checks the outputs a reader of the GPU table needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_benchmark_dry_run_writes_json_and_markdown(tmp_path, ivif):
    out = tmp_path / "gpu"
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
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
    table = (out / "results.md").read_text()
    assert "DRY RUN" in table and "| torch | float16 | compile | 2 |" in table
