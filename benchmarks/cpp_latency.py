"""C++ vs Python per-pair latency on this CPU with the same AOTInductor package (benchmarks/cpp.md).

Python side: ``torch._inductor.aoti_load_package`` on the package the C++ tests use, called with the pair as uint8
tensors (the backend itself), and the Python ``Fuser`` (torch eager, native policy) for context. C++ side: run
``maefuse-fuse-cpp --repeat N`` separately. Usage: python benchmarks/cpp_latency.py PACKAGE.pt2 [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from maefuse_deploy import Fuser
from maefuse_deploy.io import read_image

SAMPLES = Path(__file__).resolve().parents[1] / "maefuse_deploy" / "samples"


def median_ms(call, repeat: int) -> tuple[float, float]:
    call()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    ir = read_image(SAMPLES / "ir" / "00537D.png", "IR")
    vis = read_image(SAMPLES / "vi" / "00537D.png", "VIS")
    runner = torch._inductor.aoti_load_package(str(args.package))
    ir_t, vis_t = torch.from_numpy(ir)[None], torch.from_numpy(vis)[None]
    with torch.no_grad():
        med, low = median_ms(lambda: runner(ir_t, vis_t), args.repeat)
    print(f"python aoti_load_package {vis.shape[1]}x{vis.shape[0]}: median {med:.1f} ms, min {low:.1f} ms, "
          f"{args.repeat} pairs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with Fuser.from_checkpoint(None, "torch") as fuser:
        med, low = median_ms(lambda: fuser.fuse(ir, vis), args.repeat)
    print(f"python Fuser (torch eager, {fuser.policy}): median {med:.1f} ms, min {low:.1f} ms")


if __name__ == "__main__":
    main()
