"""The GPU speed matrix of maefuse-l640 (random weights): torch fp16/bf16 with SDPA, eager / CUDA graphs /
torch.compile, batch 1 and 8, each checked against torch float32 on real pairs; onnxruntime-gpu where it is
installed. Writes results.json and results.md to the output folder (the markdown is the table for
benchmarks/README.md). One row at a time; the JSON is rewritten after each row, so a run cut short keeps its rows.

    python benchmarks/gpu/gpu_bench.py --out OUT            # an H100/H200: about 5 minutes
    python benchmarks/gpu/gpu_bench.py --out OUT --dry-run  # maefuse-micro on the CPU: the same code paths, CI

benchmarks/gpu/run.sh runs it as its step torch-matrix, time-boxed, with a smaller --budget-s. Rows run cheapest
first (every eager row, then CUDA graphs, then torch.compile), so a run cut short by its time box loses compile rows
only.

--dry-run runs every row the CPU can run (CUDA graphs are listed as skipped: they need a GPU) with a tiny config
and ``torch.compile(backend="eager")`` (dynamo's tracing without inductor's minutes of code generation), so the
script cannot rot between the rare sessions that have a GPU. Layouts: inputs are (B, 3, H, W) float32 NCHW
ImageNet-normalised arrays prepared by ``processing.prepare_pair`` (official policy), as in maefuse-bench.

Timing: CUDA events around each call (the network only, inputs already on the device), after warm-up calls; a
row's time per pair is the call's time divided by its batch. The arithmetic floor is the FLOPs of one pair
(bench/flops.py) at the matmul rate measured on this GPU for the row's dtype.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a plain checkout (the GPU machine has no editable install)

from maefuse_deploy.backends.torch import TorchBackend  # noqa: E402
from maefuse_deploy.bench.flops import count_flops, floor_seconds, measure_peak  # noqa: E402
from maefuse_deploy.compare import psnr  # noqa: E402
from maefuse_deploy.model.sources import resolve_torch_model  # noqa: E402
from maefuse_deploy.processing import finish_pair, prepare_pair  # noqa: E402
from maefuse_deploy.sample_pairs import load_pairs  # noqa: E402

DTYPES = ("float16", "bfloat16")
MODES = ("eager", "cuda-graph", "compile")
FULL = {"config": "maefuse-l640", "batches": (1, 8), "iterations": 30, "warmup": 5, "pairs": 8}
DRY = {"config": "maefuse-micro", "batches": (1, 2), "iterations": 2, "warmup": 1, "pairs": 2}
BUDGET_S = 390.0  # compile rows start only while the run is inside this (--budget-s; run.sh's step passes less)


def now() -> float:
    return time.perf_counter()


class Timer:
    """Per-call milliseconds: CUDA events on a GPU, the wall clock on the CPU (dry run)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        if self.cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            stop.record()
            stop.synchronize()
            return out, start.elapsed_time(stop)
        began = now()
        out = fn()
        return out, (now() - began) * 1e3


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}")
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def onnxruntime_gpu_reason() -> str | None:
    """None where onnxruntime's CUDA provider is installed, else why the row cannot run."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return ("onnxruntime-gpu is not installed (its wheel, ~250 MB, does not fit the 64 MiB carried to the GPU "
                "machine; pip install onnxruntime-gpu where a registry is reachable)")
    return None


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = DRY if args.dry_run else FULL
        self.device = torch.device("cpu" if args.dry_run else "cuda")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: no CUDA GPU visible to torch (fix: run on the GPU machine, or pass --dry-run)")
        self.started = now()
        self.timer = Timer(self.device)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        config_name = self.plan["config"]
        self.model_source = f"random:{config_name}"  # the config's network with random weights (seed 0)
        model = resolve_torch_model(self.model_source, None).model
        assert model is not None
        self.config = model.config
        self.size = tuple(self.config.img_size)
        pairs = load_pairs(Path(args.pairs_dir) if args.pairs_dir else None, self.plan["pairs"])
        prepared = [prepare_pair(p.ir, p.vis, "official", self.size, self.config.patch_size) for p in pairs]
        self.contexts = [c for _, _, c in prepared]
        self.ir = torch.from_numpy(np.stack([a for a, _, _ in prepared]))
        self.vis = torch.from_numpy(np.stack([b for _, b, _ in prepared]))
        self.flops = count_flops(self.config, (self.size[0] // self.config.patch_size,
                                               self.size[1] // self.config.patch_size)).total
        self.peaks: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self.reference = self._reference(model)
        self.result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "dry_run": args.dry_run, "machine": machine(self.device), "model": f"{config_name} random weights (seed 0)",
            "resolution": f"{self.size[1]}x{self.size[0]}", "gflop_per_pair": self.flops / 1e9,
            "pairs": [p.name for p in pairs], "peaks_tflops": {}, "rows": self.rows,
        }

    def _reference(self, model: torch.nn.Module) -> list[np.ndarray]:
        """torch float32 (TF32 off) at batch 1: the fused image of each pair."""
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        backend = TorchBackend(model, device=self.device)
        fused = []
        for k in range(self.ir.shape[0]):
            decoded = backend.run(self.ir[k : k + 1], self.vis[k : k + 1]).cpu().numpy()[0]
            fused.append(finish_pair(decoded, self.contexts[k], "official"))
        backend.close()
        return fused

    def _fresh_model(self) -> torch.nn.Module:
        model = resolve_torch_model(self.model_source, None).model
        assert model is not None
        return model

    def _peak(self, dtype: str) -> float:
        if dtype not in self.peaks:
            self.peaks[dtype] = measure_peak(self.device, getattr(torch, dtype))[0]
            self.result["peaks_tflops"][dtype] = self.peaks[dtype] / 1e12
        return self.peaks[dtype]

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.result, indent=2, allow_nan=False, default=str) + "\n")
        (self.out / "results.md").write_text(markdown(self.result))

    def measure(self, name: str, dtype: str, mode: str, batch: int,
                call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """Time ``call`` on device tensors of ``batch`` pairs (rotating through the real pairs) and check every
        pair's output against the float32 reference.
        """
        row: dict[str, Any] = {"backend": name, "dtype": dtype, "mode": mode, "batch": batch, "status": "ok"}
        count = self.ir.shape[0]
        index = [(k % count) for k in range(batch)]
        ir = self.ir[index].to(self.device)
        vis = self.vis[index].to(self.device)
        began = now()
        out, _ = self.timer(lambda: call(ir, vis))
        row["first_call_s"] = now() - began
        for _ in range(self.plan["warmup"]):
            self.timer(lambda: call(ir, vis))
        samples = [self.timer(lambda: call(ir, vis))[1] / batch for _ in range(self.plan["iterations"])]
        worst = math.inf
        decoded = out.float().cpu().numpy()
        for row_index, pair in enumerate(index):
            fused = finish_pair(decoded[row_index], self.contexts[pair], "official")
            worst = min(worst, psnr(fused, self.reference[pair]))
        floor_ms = floor_seconds(self.flops, self._peak(dtype)) * 1e3
        p50 = statistics.median(samples)
        row.update(p50_ms=p50, mean_ms=statistics.fmean(samples), min_ms=min(samples), max_ms=max(samples),
                   pairs_per_s=1e3 / statistics.fmean(samples), psnr_db=None if math.isinf(worst) else worst,
                   identical=math.isinf(worst), floor_ms=floor_ms, x_floor=p50 / floor_ms)
        self.rows.append(row)
        self.save()
        print(f"{name} {dtype} {mode} batch {batch}: p50 {p50:.3f} ms/pair, {row['x_floor']:.2f}x floor, "
              f"PSNR {worst:.1f} dB", flush=True)

    def skip(self, name: str, dtype: str, mode: str, batch: int | None, reason: str) -> None:
        self.rows.append({"backend": name, "dtype": dtype, "mode": mode, "batch": batch, "status": "skipped",
                          "reason": reason})
        self.save()
        print(f"{name} {dtype} {mode}: skipped: {reason}", flush=True)

    def torch_rows(self) -> None:
        # Modes outside dtypes: the compile rows (tens of seconds of inductor each) come last, after every fast row.
        for mode in MODES:
            for dtype in DTYPES:
                if mode == "cuda-graph" and self.device.type != "cuda":
                    self.skip("torch", dtype, mode, None, "CUDA graphs need a GPU (dry run on the CPU)")
                    continue
                if mode == "compile" and now() - self.started > self.args.budget_s:
                    self.skip("torch", dtype, mode, None,
                              f"time budget: {self.args.budget_s:.0f} s spent before compiling")
                    continue
                torch._dynamo.reset()
                backend = TorchBackend(self._fresh_model(), device=self.device, dtype=dtype,
                                       cuda_graph=mode == "cuda-graph")
                if mode == "compile":
                    compiled = torch.compile(backend.model, backend="eager" if self.args.dry_run else "inductor")
                    backend.model = compiled  # type: ignore[assignment]
                for batch in self.plan["batches"]:
                    self.measure("torch", dtype, mode, batch, backend.run)
                backend.close()
                del backend
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def onnxruntime_rows(self) -> None:
        reason = onnxruntime_gpu_reason() if self.device.type == "cuda" else None
        if reason is not None:
            self.skip("onnxruntime-gpu", "float16", "session", None, reason)
            return
        from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend
        from maefuse_deploy.export import ExportSpec, export_onnx

        batches = self.plan["batches"]
        graph = self.out / "model-fp16.onnx"
        precision = "fp16" if self.device.type == "cuda" else "fp32"  # the CPU provider's fp16 is slow emulation
        export_onnx(self._fresh_model(), graph, ExportSpec(*self.size, batch=(min(batches), min(batches),
                                                                              max(batches)), precision=precision),
                    verify=False)
        backend = OnnxRuntimeBackend(graph, device=str(self.device) if self.device.type == "cuda" else "cpu",
                                     io_binding=self.device.type == "cuda")
        name = "onnxruntime-gpu" if self.device.type == "cuda" else "onnxruntime (cpu, dry run)"

        def call(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(backend.run(ir.cpu().numpy(), vis.cpu().numpy()))

        for batch in batches:
            self.measure(name, "float16" if precision == "fp16" else "float32", "session", batch, call)
        backend.close()
        graph.unlink(missing_ok=True)
        for extra in self.out.glob("model-fp16.onnx*"):
            extra.unlink()


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"- command: `{result['command']}`" + (" (DRY RUN: tiny config on the CPU)" if result["dry_run"] else ""),
        f"- date: {result['date']}",
        f"- machine: {m.get('gpu') or m.get('cpu')} ({m['device']}), torch {m['torch']}, CUDA {m['cuda']}",
        f"- model: {result['model']}, {result['resolution']}, {result['gflop_per_pair']:.4g} GFLOP per pair; "
        f"accuracy vs torch float32 (TF32 off) on {len(result['pairs'])} real pairs",
        "- peaks (measured matmul): " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in result["peaks_tflops"].items()),
        "",
        "| backend | dtype | mode | batch | p50 ms/pair | mean | min | max | pairs/s | first call s | PSNR dB | "
        "floor ms | x floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for row in result["rows"]:
        if row["status"] != "ok":
            skipped.append(f"- {row['backend']} {row['dtype']} {row['mode']}: skipped: {row['reason']}")
            continue
        psnr_text = "inf" if row["identical"] else f"{row['psnr_db']:.1f}"
        lines.append(f"| {row['backend']} | {row['dtype']} | {row['mode']} | {row['batch']} | {row['p50_ms']:.3f} | "
                     f"{row['mean_ms']:.3f} | {row['min_ms']:.3f} | {row['max_ms']:.3f} | {row['pairs_per_s']:.1f} | "
                     f"{row['first_call_s']:.2f} | {psnr_text} | {row['floor_ms']:.3f} | {row['x_floor']:.2f} |")
    return "\n".join([*lines, "", *skipped]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder for results.json and results.md")
    parser.add_argument("--dry-run", action="store_true", help="maefuse-micro on the CPU: every code path, fast")
    parser.add_argument("--pairs-dir", help="folder with ir/ and vi/ [default: the 3 shipped samples]")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"start torch.compile rows only within this many seconds of the start [{BUDGET_S:.0f}]")
    args = parser.parse_args()
    run = Run(args)
    run.torch_rows()
    run.onnxruntime_rows()
    run.skip("C++ runtime CUDA kernels", "-", "-", None, "not timed here: benchmarks/gpu/run.sh builds and tests them "
             "in its steps cpp-build, ctest and compute-sanitizer-* (steps.md)")
    run.skip("TensorRT / cuda-python", "-", "-", None, "TensorRT is not on the GPU machines (and its wheel does not "
             "fit the 64 MiB carried there): build an engine with maefuse-build-engine where it is installed")
    run.result["wall_s"] = now() - run.started
    run.save()
    print(f"wrote {run.out / 'results.json'} and {run.out / 'results.md'} in {run.result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
