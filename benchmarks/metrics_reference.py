"""Measure the metrics and write benchmarks/metrics.md.

1. Time all 13 metrics (every convention, and per metric for the default) on one 640x480 MSRS pair.
2. Reference rows: mean fusion ((IR + VIS grey) / 2) and max fusion on RoadScene test50, for every convention,
   evaluated end to end from PNG files the way ``maefuse-eval`` does.

    .venv/bin/python benchmarks/metrics_reference.py [--data $MAEFUSE_DATA] [--out benchmarks/metrics.md]

It needs RoadScene (not shipped, tests/data/SOURCES.md) and MSRS6 in the data folder.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from maefuse_deploy.metrics import CONVENTIONS, METRIC_NAMES, evaluate, evaluate_folder

REPEATS = 10


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def best_and_median(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    fn()  # warm-up: imports, OpenCV thread pool, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, float(np.median(times)) * 1e3


def timing_section(msrs: Path) -> list[str]:
    name = "00537D"
    ir = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(msrs / "vi" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    fused = ((ir.astype(np.uint16) + cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY) + 1) // 2).astype(np.uint8)
    lines = [
        f"One MSRS pair ({name}, {ir.shape[1]}x{ir.shape[0]}, VIS colour), mean-fused grey F; `evaluate(F, IR, VIS, "
        f"convention)` with all 13 metrics, grey conversion included. {REPEATS} runs after one warm-up; OpenCV's "
        f"default threading ({cv2.getNumThreads()} threads).",
        "",
        "| convention | best (ms) | median (ms) |",
        "|---|---:|---:|",
    ]
    for convention in CONVENTIONS:
        best, median = best_and_median(lambda c=convention: evaluate(fused, ir, vis, c))
        lines.append(f"| {convention} | {best:.0f} | {median:.0f} |")
    cv2.setNumThreads(1)
    best, median = best_and_median(lambda: evaluate(fused, ir, vis))
    cv2.setNumThreads(-1)
    lines.append(f"| default, OpenCV on 1 thread (as in `--jobs` workers) | {best:.0f} | {median:.0f} |")
    lines += ["", "Per metric, default convention (median ms):", "", "| " + " | ".join(METRIC_NAMES) + " |"]
    lines.append("|" + "---:|" * len(METRIC_NAMES))
    per_metric = [best_and_median(lambda m=m: evaluate(fused, ir, vis, metrics=[m]))[1] for m in METRIC_NAMES]
    lines.append("| " + " | ".join(f"{t:.0f}" for t in per_metric) + " |")
    return lines


def write_fused(roadscene: Path, names: list[str], out: Path) -> None:
    """mean/<name>.png = round((IR + VIS grey) / 2) (halves up), max/<name>.png = max(IR, VIS grey)."""
    for sub in ("mean", "max"):
        (out / sub).mkdir(parents=True)
    for name in names:
        ir = cv2.imread(str(roadscene / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        grey = cv2.cvtColor(cv2.imread(str(roadscene / "vi" / f"{name}.jpg")), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(out / "mean" / f"{name}.png"), ((ir.astype(np.uint16) + grey + 1) // 2).astype(np.uint8))
        cv2.imwrite(str(out / "max" / f"{name}.png"), np.maximum(ir, grey))


def fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.4f}"


def reference_section(roadscene: Path) -> list[str]:
    names = (roadscene / "test50.txt").read_text().split()
    lines = [
        f"RoadScene test split ({len(names)} pairs from `test50.txt`). IR is grey JPEG, VIS colour JPEG; VIS grey = "
        "cv2 BGR2GRAY. Mean fusion F = round((IR + VIS grey) / 2) with halves rounded up, max fusion F = "
        "max(IR, VIS grey), both saved as 8-bit grey PNG and evaluated from the files (`evaluate_folder`, i.e. "
        "`maefuse-eval --fused DIR --ir DIR --vis DIR --convention NAME`). Means over the 50 images.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        sources = Path(tmp) / "sources"
        for sub in ("ir", "vi"):
            (sources / sub).mkdir(parents=True)
            for name in names:
                (sources / sub / f"{name}.jpg").symlink_to(roadscene / sub / f"{name}.jpg")
        write_fused(roadscene, names, Path(tmp) / "fused")
        for convention in CONVENTIONS.values():
            lines += [f"### {convention.name}", ""]
            lines += [f"- {line}" for line in convention.header()[1:]]
            results = {
                kind: evaluate_folder(Path(tmp) / "fused" / kind, sources / "ir", sources / "vi", convention, jobs=2)
                for kind in ("mean", "max")
            }
            columns = results["mean"].columns
            lines += ["", "| fusion | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            for kind, result in results.items():
                lines.append(f"| {kind} | " + " | ".join(fmt(result.means[c]) for c in columns) + " |")
            lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    default_data = os.environ.get("MAEFUSE_DATA") or here.parents[1] / "shared" / "data" / "ivif"
    parser.add_argument("--data", type=Path, default=Path(default_data), help="$MAEFUSE_DATA, else ../shared")
    parser.add_argument("--out", type=Path, default=here / "metrics.md")
    args = parser.parse_args()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    timing = timing_section(args.data / "MSRS6")
    reference = reference_section(args.data / "RoadScene")
    lines = [
        "# Fusion metrics: speed and reference rows",
        "",
        f"- Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} CPU cores; Python "
        f"{platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}",
        "- Command: `.venv/bin/python benchmarks/metrics_reference.py`",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Total run time of the script: {time.perf_counter() - started:.0f} s; 1-minute load average when the "
        f"timing started: {load:.1f} (other jobs sharing the {len(os.sched_getaffinity(0))} cores inflate times)",
        "- Definitions and conventions: `docs/metrics.md`; every table names its convention's "
        "variants. Values are per-image metrics averaged over images.",
        "",
        "## Time for all 13 metrics on one 640x480 pair",
        "",
        *timing,
        "",
        "## Reference rows: mean and max fusion on RoadScene test50",
        "",
        *reference,
    ]
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
