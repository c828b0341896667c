"""Export time / peak memory of maefuse-l640 and onnxruntime-vs-torch CPU latency of the exported graph.

Usage: python benchmarks/export_l640.py OUT_DIR [--iterations N]
Random (seeded) weights: latency and export cost do not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend
from maefuse_deploy.backends.torch import TorchBackend
from maefuse_deploy.compare import psnr
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.sample_pairs import as_arrays, load_pairs, network_inputs


def timed(fn, iterations):
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(get_config("maefuse-l640"), seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report = export_onnx(model, args.out / "l640.onnx", ExportSpec(640, 640), verify=False)
    result = {"export_seconds": round(report.seconds, 1), "onnx_MiB": round(report.size_bytes / 2**20, 1),
              "peak_rss_GiB_before_export": round(rss_before, 2),
              "peak_rss_GiB_after_export": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "torch_threads": torch.get_num_threads()}
    pairs = as_arrays(load_pairs(count=1))
    ir, vis = network_inputs(pairs, (640, 640), 16)
    graph = OnnxRuntimeBackend(args.out / "l640.onnx")
    backends = {"onnxruntime fp32": lambda: graph.run(ir.numpy(), vis.numpy())}
    for dtype in ("float32", "bfloat16"):
        backend = TorchBackend(build_model(get_config("maefuse-l640"), seed=0), dtype=dtype)
        backends[f"torch {dtype}"] = lambda b=backend: b.run(ir.numpy(), vis.numpy())
    outputs = {}
    for name, fn in backends.items():
        outputs[name] = fn()  # first call: warm-up (allocations, kernel selection)
        samples = timed(fn, args.iterations)
        result[name] = {"mean_s": round(statistics.mean(samples), 2), "min_s": round(min(samples), 2)}
        print(name, result[name], flush=True)
    reference = outputs["torch float32"]
    fp32 = Fuser(TorchBackend(build_model(get_config("maefuse-l640"), seed=0)), model_size=(640, 640))
    expected = fp32.fuse(*pairs[0])
    for name in ("onnxruntime fp32", "torch bfloat16"):
        error = np.abs(outputs[name] - reference)
        result[name]["max_abs_vs_torch_fp32"] = float(error.max())
        result[name]["mean_abs_vs_torch_fp32"] = float(error.mean())
    graph_fuser = Fuser(graph)
    result["onnxruntime fp32"]["fused_psnr_db"] = psnr(graph_fuser.fuse(*pairs[0]), expected)
    bf16 = Fuser(TorchBackend(build_model(get_config("maefuse-l640"), seed=0), dtype="bfloat16"),
                 model_size=(640, 640))
    result["torch bfloat16"]["fused_psnr_db"] = psnr(bf16.fuse(*pairs[0]), expected)
    (args.out / "export_l640.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
