"""Timing one benchmark call, with its stages apart, and summarising many.

Stages of one call (seconds for the whole batch; ``None`` where a stage does not exist or cannot be separated):

``pre``     host pre-processing of uint8 frames into network tensors (processing.prepare_pair), ``--io uint8`` only
``h2d``     host-to-device copy of the inputs (CUDA, timed with CUDA events)
``compute`` the network, inputs already where it reads them
``d2h``     device-to-host copy of the output (CUDA, CUDA events)
``post``    host post-processing into the fused image (processing.finish_pair), ``--io uint8`` only
``total``   the whole call on the host clock, from the caller's arrays to the caller's arrays

On a CPU torch reads numpy memory in place, so there is no transfer stage: only ``total`` and ``compute``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np
import torch

from ..backends import BackendBase as Backend
from ..processing import PairContext, Policy, finish_pair, prepare_pair

STAGES = ("pre", "h2d", "compute", "d2h", "post", "total")


@dataclass
class StageTimes:
    total: float
    compute: float
    h2d: float | None = None
    d2h: float | None = None
    pre: float | None = None
    post: float | None = None


# The fewest samples that put at least one sample above a tail percentile: with fewer, the interpolated "p99"
# of 3 calls is just the largest call rounded down, so it is omitted (None) rather than printed as a tail latency.
PERCENTILE_MIN_SAMPLES: dict[Literal["p90", "p99"], int] = {"p90": 10, "p99": 100}


class LatencySummary(TypedDict):
    """:func:`summarize`'s result: only the tail percentiles can be missing (None, too few samples)."""

    p50: float
    p90: float | None
    p99: float | None
    mean: float
    min: float
    max: float


SummaryKey = Literal["p50", "p90", "p99", "mean", "min", "max"]


def summarize(values: Sequence[float]) -> LatencySummary:
    """p50 / p90 / p99 / mean / min / max of ``values`` (linear interpolation between order statistics); p90 and
    p99 are None with fewer samples than :data:`PERCENTILE_MIN_SAMPLES` asks for."""
    data = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90) if data.size >= PERCENTILE_MIN_SAMPLES["p90"] else None,
        "p99": float(p99) if data.size >= PERCENTILE_MIN_SAMPLES["p99"] else None,
        "mean": float(data.mean()),
        "min": float(data.min()),
        "max": float(data.max()),
    }


def has_tensor_path(backend: Any) -> bool:
    """Whether ``backend`` computes on torch tensors on a device of its own, so its transfers can be timed apart."""
    return isinstance(backend.tensor_device, torch.device)


class NetworkCall:
    """Times ``backend`` on prepared network inputs: float32 (B, 3, H, W) arrays, or uint8 frames for graphs that
    do their own processing (``io == "uint8"``). Returns the backend's numpy output and the stage times.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tensor_path = has_tensor_path(backend)
        self.device: torch.device = backend.tensor_device if self.tensor_path else torch.device("cpu")
        self._pinned: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, StageTimes]:
        if not self.tensor_path:
            start = time.perf_counter()
            out = self.backend.run(ir, vis)
            elapsed = time.perf_counter() - start
            return out, StageTimes(total=elapsed, compute=elapsed)
        if self.device.type == "cuda":
            return self._cuda(ir, vis)
        start = time.perf_counter()
        ir_t, vis_t = torch.from_numpy(ir), torch.from_numpy(vis)
        out_t = self.backend.run(ir_t, vis_t)
        computed = time.perf_counter()
        out = out_t.numpy()
        return out, StageTimes(total=time.perf_counter() - start, compute=computed - start)

    def _pinned_like(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        # A camera pipeline stages frames in page-locked memory so the copy can run asynchronously: so do we,
        # allocating once per shape outside the timed path.
        key = (role, shape)
        if key not in self._pinned:
            self._pinned[key] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return self._pinned[key]

    def _cuda(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, StageTimes]:
        stream = torch.cuda.current_stream(self.device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        ir_host = self._pinned_like("ir", ir.shape, torch.float32)
        vis_host = self._pinned_like("vis", vis.shape, torch.float32)
        start = time.perf_counter()
        ir_host.numpy()[...] = ir
        vis_host.numpy()[...] = vis
        events[0].record(stream)
        ir_dev = ir_host.to(self.device, non_blocking=True)
        vis_dev = vis_host.to(self.device, non_blocking=True)
        events[1].record(stream)
        out_dev = self.backend.run(ir_dev, vis_dev)
        events[2].record(stream)
        out_host = self._pinned_like("out", tuple(out_dev.shape), out_dev.dtype)
        out_host.copy_(out_dev, non_blocking=True)
        events[3].record(stream)
        events[3].synchronize()
        total = time.perf_counter() - start
        h2d, compute, d2h = (events[k].elapsed_time(events[k + 1]) / 1000.0 for k in range(3))
        return out_host.numpy().copy(), StageTimes(total=total, compute=compute, h2d=h2d, d2h=d2h)


class PipelineCall:
    """Times the camera-frame path on the host: uint8 frames -> prepare_pair -> network -> finish_pair -> fused.

    The same pre/post functions the Fuser uses (one processing path for every backend); stages are timed apart.
    Returns the decoder output (B, 3, H, W) float32 and the fused images (OpenCV layout) with the stage times.
    """

    def __init__(self, network: NetworkCall, policy: Policy, model_size: tuple[int, int]) -> None:
        self.network = network
        self.policy: Policy = policy
        self.model_size = model_size

    def __call__(
        self, frames: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, list[np.ndarray], StageTimes]:
        start = time.perf_counter()
        prepared: list[tuple[np.ndarray, np.ndarray, PairContext]] = [
            prepare_pair(ir, vis, self.policy, self.model_size, self.network.backend.patch_size) for ir, vis in frames
        ]
        ir = np.stack([p[0] for p in prepared])
        vis = np.stack([p[1] for p in prepared])
        pre = time.perf_counter() - start
        decoded, net = self.network(ir, vis)
        post_start = time.perf_counter()
        fused = [finish_pair(decoded[k], prepared[k][2], self.policy) for k in range(len(prepared))]
        end = time.perf_counter()
        times = StageTimes(
            total=end - start, compute=net.compute, h2d=net.h2d, d2h=net.d2h, pre=pre, post=end - post_start
        )
        return decoded, fused, times
