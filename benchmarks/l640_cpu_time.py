"""Feasibility of the l640 CPU fast-path candidates on a BUSY machine: CPU seconds per pair on one thread.

Wall-clock latency means nothing while other jobs share the cores, but the CPU time a single-threaded call
consumes barely moves with the load (it is the work, not the wait). This script runs each candidate with one
intra-op thread, takes the process CPU time of a warm call, and predicts the quiet 2-core latency as
``cpu_s / 2`` (ideal scaling: an optimistic bound; `benchmarks/run_cpu_l640.sh` measures the real thing on a quiet
machine). Accuracy is the fused-image PSNR against torch float32 on real MSRS pairs, as in maefuse-bench.

Usage: python benchmarks/l640_cpu_time.py OUT_DIR [--pairs 2] [--only NAME,NAME] [--calibration-pairs 4]
Writes OUT_DIR/l640.onnx (kept for reruns), OUT_DIR/reference.npz and OUT_DIR/l640_cpu_time.json. Peak memory is
the export (~7 GB): a rerun with both files present starts without it. Run nothing else heavy beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from maefuse_deploy.compare import psnr
from maefuse_deploy.processing import finish_pair, prepare_pair
from maefuse_deploy.sample_pairs import load_pairs

IVIF = Path(__file__).resolve().parents[2] / "shared" / "data" / "ivif"  # the checkout's shared data
CANDIDATES = ("onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8", "torch",
              "torch-bf16")


def cpu_call(fn, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(ir, vis)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--calibration-pairs", type=int, default=4)
    parser.add_argument("--pairs-dir", type=Path, default=IVIF / "MSRS6")
    parser.add_argument("--calibration", type=Path, default=IVIF / "RoadScene")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    from maefuse_deploy.backends.torch import TorchBackend
    from maefuse_deploy.model.sources import resolve_torch_model

    pairs = load_pairs(args.pairs_dir, args.pairs)
    prepared = [prepare_pair(p.ir, p.vis, "official", (640, 640), 16) for p in pairs]
    graph = args.out / "l640.onnx"
    reference_file = args.out / "reference.npz"
    if not graph.is_file() or not reference_file.is_file():
        from maefuse_deploy.export import ExportSpec, export_onnx

        model = resolve_torch_model("maefuse-l640", None).model
        if not reference_file.is_file():
            backend = TorchBackend(model)
            decoded = [backend.run(ir[None], vis[None])[0] for ir, vis, _ in prepared]
            np.savez(reference_file, *decoded)
            model = backend.model
            del backend
        if not graph.is_file():
            start = time.perf_counter()
            export_onnx(model, graph, ExportSpec(640, 640), verify=False)
            print(f"exported {graph} in {time.perf_counter() - start:.0f} s", flush=True)
        del model
        gc.collect()
    stored = np.load(reference_file)
    reference = [finish_pair(stored[f"arr_{k}"], prepared[k][2], "official") for k in range(len(prepared))]

    results = {}
    for name in args.only.split(","):
        load = time.perf_counter()
        if name.startswith("torch"):
            backend = TorchBackend(resolve_torch_model("maefuse-l640", None).model,
                                   dtype="bfloat16" if name == "torch-bf16" else "float32")
        elif name == "onnxruntime":
            from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend

            backend = OnnxRuntimeBackend(graph, threads=1)
        elif name == "onnxruntime-int8":
            from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend
            from maefuse_deploy.backends.onnxruntime_int8 import quantize_dynamic_int8

            quantized = args.out / "l640-int8.onnx"
            if not quantized.is_file():
                quantize_dynamic_int8(graph, quantized)
            backend = OnnxRuntimeBackend(quantized, threads=1)
        else:
            from maefuse_deploy.backends.openvino import OpenVinoBackend

            precision = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
            backend = OpenVinoBackend(graph, precision=precision, threads=1, calibration=args.calibration,
                                      calibration_pairs=args.calibration_pairs)
        load_s = time.perf_counter() - load
        worst, cpu_s, wall_s = float("inf"), [], []
        for k, (ir, vis, context) in enumerate(prepared):
            out, cpu, wall = cpu_call(backend.run, ir[None], vis[None])
            if k == 0:  # the first call allocates and selects kernels: time a second one
                _, cpu, wall = cpu_call(backend.run, ir[None], vis[None])
            cpu_s.append(cpu)
            wall_s.append(wall)
            worst = min(worst, psnr(finish_pair(out[0], context, "official"), reference[k]))
        results[name] = {"cpu_s_per_pair_1_thread": round(float(np.median(cpu_s)), 2),
                         "predicted_quiet_2_core_s": round(float(np.median(cpu_s)) / 2, 2),
                         "wall_s_under_load": round(float(np.median(wall_s)), 2), "load_s": round(load_s, 1),
                         "psnr_db_worst": round(worst, 2), "load_average": [round(v, 2) for v in os.getloadavg()],
                         "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        print(name, results[name], flush=True)
        backend.close()
        del backend
        gc.collect()
        previous = json.loads((args.out / "l640_cpu_time.json").read_text()) if (
            args.out / "l640_cpu_time.json").is_file() else {}
        previous.update(results)
        (args.out / "l640_cpu_time.json").write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
