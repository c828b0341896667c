"""A/B of the int8 attention kernel (maefuse_deploy/backends/openvino_attention.py) on one quantized graph.

The model is converted and quantized once by the openvino-weights backend with the kernel switched off (its cache
entry is OpenVINO's own attention); a copy of that graph gets the kernel in place of every attention it computes.
Both are compiled with the backend's settings and timed alternately in one process (so the VM's minute moves both
alike), on real MSRS pairs resized to the model size, and compared with each other and with torch float32 (fused
image PSNR, the benchmark's accuracy measure). With --profile, OpenVINO's PERF_COUNT says where the time goes. With
--copies a third graph has the kernel reading Q, K and V from transposed copies and writing heads first
(``use_int8_attention(..., in_place=False)``), to measure what reading the qkv projection in place saves.

    python benchmarks/int8_attention_ab.py --model random:maefuse-l640 --size 640x640 --precision int8
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python benchmarks/int8_attention_ab.py ...   # a CPU without BF16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import torch

from maefuse_deploy.backends.openvino import compile_config
from maefuse_deploy.backends.openvino_attention import SWITCH_ENV, attention_kernel, use_int8_attention
from maefuse_deploy.backends.openvino_weights import OpenVinoWeightsBackend, _grey8
from maefuse_deploy.bench.machine import cpu_generation, cpu_model, kernel_environment, load_average
from maefuse_deploy.compare import psnr
from maefuse_deploy.model.sources import resolve_torch_model
from maefuse_deploy.processing import prepare_pair
from maefuse_deploy.sample_pairs import load_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ivif"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:maefuse-l640")
    parser.add_argument("--size", default="640x640", help="WxH")
    parser.add_argument("--precision", default="int8", choices=["int8", "int8-bf16"])
    parser.add_argument("--pairs", type=int, default=3, help="MSRS pairs checked (the first is timed)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of --runs timed calls each")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="PERF_COUNT: time per node kind, every graph")
    parser.add_argument("--copies", action="store_true",
                        help="a third graph: the kernel on transposed copies of Q, K, V (in_place=False)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.lower().split("x"))

    resolved = resolve_torch_model(args.model, None)
    os.environ[SWITCH_ENV] = "off"  # the backend's graph keeps OpenVINO's attention: the A side
    with tempfile.TemporaryDirectory(prefix="maefuse-ab-") as cache:
        backend = OpenVinoWeightsBackend(resolved.model, dtype=args.precision, cache_dir=cache,
                                         calibration=DATA / "RoadScene", calibration_pairs=4)
        backend.prepare(height, width)
        print(backend.events[-1], flush=True)
        xml = next(Path(cache).glob("openvino-*/model.xml"))
        os.environ[SWITCH_ENV] = "on"  # the B side, on a CPU with AMX too (where auto leaves it off)
        kernel = attention_kernel(ov)
        if kernel.library is None:
            print(f"the kernel cannot run here: {kernel.why_not}", file=sys.stderr)
            return 1
        core = ov.Core()
        core.add_extension(str(kernel.library))
        models = {"stock": core.read_model(str(xml)), "kernel": core.read_model(str(xml))}
        replaced, total = use_int8_attention(models["kernel"], kernel.library)
        print(f"kernel on {replaced} of {total} attention ops", flush=True)
        if args.copies:
            models["kernel-copies"] = core.read_model(str(xml))
            use_int8_attention(models["kernel-copies"], kernel.library, in_place=False)
        config = compile_config(args.precision)
        requests = {name: core.compile_model(model, "CPU", config).create_infer_request()
                    for name, model in models.items()}

    feeds, references = [], []
    for sample in load_pairs(DATA / "MSRS6", args.pairs):
        ir = cv2.resize(sample.ir, (width, height), interpolation=cv2.INTER_AREA)
        vis = cv2.resize(sample.vis, (width, height), interpolation=cv2.INTER_AREA)
        ir_net, vis_net, _ = prepare_pair(ir, vis, resolved.model.config.policy, (height, width),
                                          resolved.model.config.patch_size, name=sample.name)
        feeds.append({0: ir_net[None], 1: vis_net[None]})
        with torch.inference_mode():
            references.append(resolved.model.float()(torch.from_numpy(ir_net[None]),
                                                     torch.from_numpy(vis_net[None])).numpy())
    outputs = {name: [request.infer(feed)[0].copy() for feed in feeds] for name, request in requests.items()}
    accuracy = {name: [round(psnr(_grey8(out), _grey8(ref)), 2) for out, ref in zip(outs, references, strict=True)]
                for name, outs in outputs.items()}
    between = [round(psnr(_grey8(a), _grey8(b)), 2)
               for a, b in zip(outputs["kernel"], outputs["stock"], strict=True)]
    print(f"fused PSNR vs torch float32: {accuracy} dB; kernel vs stock {between} dB")
    if args.copies:
        same = all(np.array_equal(a, b) for a, b in zip(outputs["kernel"], outputs["kernel-copies"], strict=True))
        print(f"kernel in place vs on copies: {'bit-identical' if same else 'DIFFERENT'}")

    times: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(args.rounds):
        for name, request in requests.items():
            request.infer(feeds[0])  # warm after the other graph ran
            for _ in range(args.runs):
                start = time.perf_counter()
                request.infer(feeds[0])
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{args.precision} {name}: min {1e3 * min(seconds):.0f} ms, median {1e3 * np.median(seconds):.0f} ms "
              f"({len(seconds)} calls)")

    profile = {}
    if args.profile:
        for name, model in models.items():
            request = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True}).create_infer_request()
            request.infer(feeds[0])
            request.infer(feeds[0])
            kinds: dict[str, float] = {}
            for node in request.profiling_info:
                key = f"{node.node_type}/{node.exec_type}"
                kinds[key] = kinds.get(key, 0.0) + node.real_time.total_seconds()
            profile[name] = dict(sorted(kinds.items(), key=lambda item: -item[1])[:8])
            print(f"{name}: " + "; ".join(f"{key} {value:.3f} s" for key, value in profile[name].items()))
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
            "machine": {"cpu": f"{cpu_model()} ({cpu_generation()})", "load_average_at_end": load_average(),
                        "environment": kernel_environment()},
            "model": args.model, "size": args.size, "precision": args.precision,
            "replaced": replaced, "attention_ops": total, "psnr_vs_float32_db": accuracy,
            "psnr_kernel_vs_stock_db": between, "seconds": times, "profile_s": profile}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
