"""Concurrency and memory-stability figures for docs/reliability.md, per backend, with the built-in model.

For each backend (torch; onnxruntime on a graph exported from the built-in model at the crop size):
- threads x calls: THREADS threads share one Fuser and each fuses CALLS pairs; every result must be
  bit-identical to the serial result of the same pair;
- RSS over N calls: resident memory after a warm-up, then every N/10 calls, of one Fuser fusing one pair N times.

Kept short on purpose (the machine is shared): small crops (--crop, default 128x128) of the shipped 640x480
samples.

    python benchmarks/reliability.py [--calls 1000] [--threads 4] [--per-thread 25] [--crop 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from maefuse_deploy import Fuser
from maefuse_deploy.cli.export import main as export_main
from maefuse_deploy.io import read_image
from maefuse_deploy.runtime.files import SAMPLES_DIR


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_pairs(crop: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for ir_path in sorted((SAMPLES_DIR / "ir").glob("*.png")):
        ir, vis = read_image(ir_path), read_image(SAMPLES_DIR / "vi" / ir_path.name)
        for top, left in ((0, 0), (224, 384), (100, 200)):
            pairs.append((ir[top : top + crop, left : left + crop].copy(), vis[top : top + crop, left : left + crop]
                          .copy()))
    return pairs


def concurrency(fuser: Fuser, pairs: list, threads: int, per_thread: int) -> tuple[int, int]:
    serial = [fuser.fuse(ir, vis) for ir, vis in pairs]
    jobs = [(i % len(pairs)) for i in range(threads * per_thread)]

    def work(index: int) -> bool:
        ir, vis = pairs[index]
        return bool(np.array_equal(fuser.fuse(ir, vis), serial[index]))

    with ThreadPoolExecutor(threads) as pool:
        same = list(pool.map(work, jobs))
    return sum(same), len(same)


def memory(fuser: Fuser, pair: tuple, calls: int) -> list[tuple[int, float]]:
    for _ in range(20):
        fuser.fuse(*pair)
    trace = [(0, rss_mib())]
    print(f"  warm: {trace[0][1]:.0f} MiB", file=sys.stderr)
    step = max(calls // 10, 1)
    for call in range(1, calls + 1):
        fuser.fuse(*pair)
        if call % step == 0:
            trace.append((call, rss_mib()))
            print(f"  {call} calls: {trace[-1][1]:.0f} MiB", file=sys.stderr)
    return trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--per-thread", type=int, default=25)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated subset")
    args = parser.parse_args()
    pairs = sample_pairs(args.crop)
    print(f"{len(pairs)} pairs of {args.crop}x{args.crop}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "tiny.onnx"
        size = str(args.crop)
        export = ["--onnx", str(graph), "--height", size, "--width", size, "--no-verify"]
        result = CliRunner().invoke(export_main, export)
        assert result.exit_code == 0, result.output
        rows = []
        for name, source in (("torch", None), ("onnxruntime", graph)):
            if name not in args.backends.split(","):
                continue
            with Fuser.from_checkpoint(source, batch_size=1) as fuser:
                start = time.perf_counter()
                same, total = concurrency(fuser, pairs, args.threads, args.per_thread)
                print(f"{name}: {same}/{total} identical, {time.perf_counter() - start:.0f} s", file=sys.stderr)
                trace = memory(fuser, pairs[0], args.calls)
                seconds = time.perf_counter() - start
            growth = trace[-1][1] - trace[0][1]
            rows.append(f"| {name} | {args.threads} x {args.per_thread}: {same}/{total} bit-identical | "
                        f"{trace[0][1]:.0f} -> {trace[-1][1]:.0f} MiB ({growth:+.1f}) over {args.calls} calls | "
                        f"{' '.join(f'{m:.0f}' for _, m in trace)} | {seconds:.0f} s |")
    print("| backend | threads x calls vs serial | RSS after warm-up -> after the calls | RSS every "
          f"{args.calls // 10} calls (MiB) | wall |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
