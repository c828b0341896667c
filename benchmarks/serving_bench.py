"""Requests/s and latency through maefuse-serve vs direct Fuser calls, by concurrency (benchmarks/serving.md).

    python benchmarks/serving_bench.py --concurrency 1 4 8 --requests 24 [--crop HxW] [--protocol grpc]

Server: ``maefuse-serve`` from the serving venv on free loopback ports, built-in model, max batch 8; C client
threads, each with its own RemoteFuser sending one pair per request, back to back. Direct: one in-process Fuser
(what an embedding camera pipeline runs), C pairs per ``fuse_batch`` call (C cameras' frames fused together);
a request's latency is its call's. Inputs: real MSRS 640x480 pairs (or crops of them). Each line
ends with the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from maefuse_deploy import Fuser
from maefuse_deploy.io import read_image
from maefuse_deploy.serve.client import RemoteFuser
from maefuse_deploy.serve.process import ServerProcess

MSRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "MSRS6"  # the six shipped MSRS pairs


def load_pairs(crop: tuple[int, int] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for path in sorted((MSRS / "ir").glob("*.png")):
        ir, vis = read_image(path, "IR"), read_image(MSRS / "vi" / path.name, "VIS")
        if crop:
            ir, vis = ir[: crop[0], : crop[1]].copy(), vis[: crop[0], : crop[1]].copy()
        pairs.append((ir, vis))
    return pairs


def summarise(latencies: list[float], seconds: float) -> str:
    ms = np.array(latencies) * 1000
    return (f"{len(latencies) / seconds:6.2f} req/s  p50 {np.percentile(ms, 50):7.0f} ms  "
            f"p99 {np.percentile(ms, 99):7.0f} ms")


def through_server(url: str, pairs, concurrency: int, requests: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = max(requests // concurrency, 1)

    def client(number: int) -> None:
        with RemoteFuser(url, batch_size=1, timeout_s=600) as remote:
            for index in range(per_client):
                start = time.perf_counter()
                remote.fuse(*pairs[(number + index) % len(pairs)])
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def direct_calls(fuser: Fuser, pairs, concurrency: int, requests: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    calls = max(requests // concurrency, 1)
    start = time.perf_counter()
    for call in range(calls):
        batch = [pairs[(call * concurrency + i) % len(pairs)] for i in range(concurrency)]
        began = time.perf_counter()
        fuser.fuse_batch(batch)
        latencies.extend([time.perf_counter() - began] * concurrency)
    return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--crop", help="HxW crop of the 640x480 pairs (default: full frames)")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="grpc")
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, direct and server alike")
    args = parser.parse_args()
    crop = tuple(int(v) for v in args.crop.split("x")) if args.crop else None
    pairs = load_pairs(crop)  # type: ignore[arg-type]
    size = f"{pairs[0][1].shape[1]}x{pairs[0][1].shape[0]}"
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, {len(pairs)} MSRS pairs at {size}, {args.requests} requests "
          "per level")
    # Direct and server rows of one concurrency run back to back, so both see the same load on a shared machine.
    with Fuser.from_checkpoint(None) as fuser, tempfile.TemporaryDirectory() as folder, ServerProcess(
        Path(folder) / "serve.log", ["--max-batch", "8", "--queue-delay-us", str(args.queue_delay_us),
                                    "--threads", str(args.threads)]
    ) as server:
        server.wait_ready()
        url = server.grpc_url if args.protocol == "grpc" else server.http_url
        fuser.fuse_batch(pairs[:2])  # warm-up, both sides
        with RemoteFuser(url) as warm:
            warm.fuse_batch(pairs[:2])
        for concurrency in args.concurrency:
            latencies, seconds = direct_calls(fuser, pairs, concurrency, args.requests)
            print(f"direct  c={concurrency}: {summarise(latencies, seconds)}  load {os.getloadavg()[0]:.0f}",
                  flush=True)
            count, executions = server.metric("nv_inference_count"), server.metric("nv_inference_exec_count")
            latencies, seconds = through_server(url, pairs, concurrency, args.requests)
            count = server.metric("nv_inference_count") - count
            executions = server.metric("nv_inference_exec_count") - executions
            print(f"server  c={concurrency}: {summarise(latencies, seconds)}  load {os.getloadavg()[0]:.0f}  "
                  f"mean batch {count / executions:.2f}", flush=True)


if __name__ == "__main__":
    main()
