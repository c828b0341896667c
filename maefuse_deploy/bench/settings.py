"""What a benchmark run measures: the settings and the parsers for their command-line forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..backends.cpu_kernels import bf16_cap
from ..backends.registry import backend_names, get_entry
from ..contract import parse_device
from ..errors import InputError

BACKENDS = backend_names()  # every registry entry, variants included
PRECISIONS = ("float32", "bfloat16", "float16")
IoMode = Literal["float", "uint8"]
DEFAULT_CALIBRATION_PAIRS = 8
# Backends the default run (no --backends) leaves out although they could run, and why: listed as skipped rows.
NOT_BY_DEFAULT = {
    "cpu": {
        "torch-fp16": "not run by default on a CPU: float16 has no native units here (emulated, slower than "
                      "float32); name it in --backends to measure it",
        "torch-compile": "not run by default: torch.compile takes minutes per input shape on a CPU; name it in "
                         "--backends to measure it",
        "openvino-weights": "not run by default: its compiled models are the openvino and openvino-int8 rows'; "
                            "name it in --backends to time backend auto's choice",
    },
    "cuda": {
        "torch-compile": "not run by default: compilation takes minutes; name it in --backends to measure it",
    },
}
NEEDS_BF16 = ("torch-bf16", "openvino-bf16", "openvino-int8-bf16")


def plan_backends(requested: tuple[str, ...] | None, device: str, cpu_flags: list[str]) -> list[tuple[str, str | None]]:
    """Each backend row to report and, where it is not run, why: ``requested`` as given, or (None) every backend
    that can run on ``device``, the others listed with the reason.
    """
    if requested is not None:
        return [(name, None) for name in requested]
    kind = torch.device(device).type
    # The same rule as auto's (backends/cpu_kernels.py): the CPU's bf16 units, less a oneDNN cap that leaves them out.
    no_bf16 = ("this CPU has no AVX-512 BF16 or AMX" if not {"avx512_bf16", "amx_bf16"} & set(cpu_flags)
               else bf16_cap())
    plan: list[tuple[str, str | None]] = []
    for name in BACKENDS:
        reason = NOT_BY_DEFAULT.get(kind, {}).get(name)
        devices = get_entry(name).devices
        if kind not in devices:
            reason = f"runs on {' or '.join(d.upper() for d in devices)} only: pass --device {devices[0]}"
        elif kind == "cpu" and name in NEEDS_BF16 and no_bf16:
            reason = f"{no_bf16}: bfloat16 would be emulated; name it in --backends"
        plan.append((name, reason))
    return plan


def parse_backends(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise InputError("--backends is empty", fix=f"name one or more of {', '.join(BACKENDS)}")
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise InputError(f"unknown backend {unknown[0]!r}", fix=f"use {', '.join(BACKENDS)}")
    return names


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise InputError(f"--batches {text!r} is not a list of integers", fix="e.g. --batches 1,4,8") from None
    if not batches or min(batches) < 1:
        raise InputError(f"--batches {text!r}: every batch size must be at least 1", fix="e.g. --batches 1,4,8")
    return batches


def parse_peak(text: str) -> dict[str, float]:
    """``"0.2"`` (TFLOP/s for every precision) or ``"float32=0.197,bfloat16=0.81"`` -> FLOP/s per precision."""
    peaks: dict[str, float] = {}
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.rpartition("=")
            for precision in ([key] if key else PRECISIONS):
                if precision not in PRECISIONS:
                    raise InputError(f"--peak-tflops: unknown precision {precision!r}",
                                     fix=f"use {', '.join(PRECISIONS)}")
                peaks[precision] = float(value) * 1e12
    except ValueError:
        raise InputError(f"--peak-tflops {text!r} is not a number", fix="e.g. --peak-tflops 0.197") from None
    if not peaks or min(peaks.values()) <= 0:
        raise InputError(f"--peak-tflops {text!r} must be positive", fix="e.g. --peak-tflops 0.197")
    return peaks


@dataclass
class BenchSettings:
    """What to measure. ``model``: a checkpoint, a config name (random weights), an .onnx graph or an engine;
    ``reference``: torch weights for the reference and the torch rows when ``model`` is a graph or engine.
    """

    model: str | None = None
    config: str | None = None
    reference: str | None = None
    backends: tuple[str, ...] | None = None  # None: every backend that can run on the device (plan_backends)
    batches: tuple[int, ...] = (1,)
    iterations: int = 10
    warmup: int = 2
    resolution: tuple[int, int] | None = None  # (H, W) of the network input; None: the model's own
    io: IoMode = "float"
    device: str = "cpu"
    peak_flops: dict[str, float] = field(default_factory=dict)  # per precision, FLOP/s; missing: measured
    pairs: int = 6
    pairs_dir: Path | None = None
    cuda_graph: bool = True
    threads: int | None = None  # CPU threads of torch, onnxruntime and OpenVINO (intra-op); None: their defaults
    calibration_dir: Path | None = None  # INT8 calibration pairs (ir/, vi/); None: the benchmark's own pairs
    calibration_pairs: int = DEFAULT_CALIBRATION_PAIRS
    stream: bool = False
    latency: bool = True
    fps: float = 30.0
    duration: float = 10.0
    queue: int = 2
    versus: str | None = None  # torch weights timed in float32 in the same run; the speed-up column's baseline

    def validate(self) -> None:
        if self.backends is not None:
            parse_backends(",".join(self.backends))
        if self.calibration_pairs < 1:
            raise InputError(f"--calibration-pairs must be at least 1, got {self.calibration_pairs}")
        if self.config and not self.model:
            raise InputError(
                f"--config {self.config} without --model: it only describes the weights of a --model checkpoint",
                fix=f"pass --model CHECKPOINT with it, or --model {self.config} for random weights of that config",
            )
        if not self.batches or min(self.batches) < 1:
            raise InputError(f"batch sizes must be at least 1, got {list(self.batches)}")
        if self.iterations < 1:
            raise InputError(f"--iterations must be at least 1, got {self.iterations}")
        if self.pairs < 1:
            raise InputError(f"--pairs must be at least 1, got {self.pairs}")
        if self.warmup < 0:
            raise InputError(f"--warmup cannot be negative, got {self.warmup}")
        if self.io not in ("float", "uint8"):
            raise InputError(f"unknown --io {self.io!r}", fix="use float or uint8")
        if not self.latency and not self.stream:
            raise InputError("nothing to measure", fix="pass --latency, --stream or both")
        if self.stream and (self.fps <= 0 or self.duration <= 0 or self.queue < 1):
            raise InputError("--fps and --duration must be positive and --queue at least 1")
        if self.versus is not None and not self.latency:
            raise InputError("--versus times a latency row", fix="pass --latency with it")
        if parse_device(self.device)[0] == "auto":  # the CLI resolves auto (backends.devices) before this
            raise InputError("device 'auto' is not resolved here", fix="use cpu, cuda or cuda:N")
