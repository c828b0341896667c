"""``--stream``: the real :class:`~maefuse_deploy.stream.Pipeline` fed by two simulated cameras at a fixed rate.

    camera thread --push--> IR PushSource  --\\
                                              Pipeline (timestamp pairing, drop-oldest queues, micro-batched
                  --push--> VIS PushSource --/  Fuser.fuse_batch) --> callback sink

The camera offers pair n (the same frame time n / fps on both sources) at start + n / fps whether or not the fuser
keeps up: the pipeline runs as ``maefuse-stream`` runs live cameras (drop-oldest, every queue ``queue_size`` deep,
the fuse stage taking up to ``fuser.batch_size`` waiting pairs per call). Latency is the pipeline's own, capture to
fused, so it includes the time a pair waited in the queues and for its partner frame (timestamp pairing decides a
VIS frame once the next IR frame has arrived: up to one frame period). Dropped pairs are counted where they were
lost: before the fuser (a camera buffer or queue full, or a frame whose partner was dropped) or after it (the
output queue full).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.fuser import Fuser
from ..stream import Pipeline, PushSource
from .timing import LatencySummary, summarize


@dataclass
class StreamResult:
    backend: str
    target_fps: float
    duration_s: float
    queue_size: int
    max_batch: int
    offered: int = 0  # pairs the cameras produced
    processed: int = 0  # pairs fused and delivered to the sink
    dropped_capture: int = 0  # pairs lost before the fuser
    dropped_output: int = 0  # pairs fused but dropped by a full output queue
    achieved_fps: float = 0.0
    latency_ms: LatencySummary | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)  # latency over time
    capture_s: list[float] = field(default_factory=list)  # per processed pair: capture time since start
    frame_latency_ms: list[float] = field(default_factory=list)  # per processed pair


def _window_length(duration: float) -> float:
    # About one window per second, at most 30 windows, so a long run still reads as one table.
    return max(1.0, duration / 30.0)


def _cameras(ir: PushSource, vis: PushSource, frames: Sequence[tuple[np.ndarray, np.ndarray]], fps: float,
             duration: float, offered: list[int]) -> threading.Thread:
    """A thread pushing pair n at start + n / fps for ``duration`` seconds, then ending both sources; the number of
    pairs offered goes into ``offered``."""

    def run() -> None:
        start = time.monotonic()
        n = 0
        while n / fps < duration:
            delay = start + n / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ir_image, vis_image = frames[n % len(frames)]
            # Both cameras stamp the frame time; a pushed frame is captured (latency starts) at push.
            if not (ir.push(ir_image, n / fps) and vis.push(vis_image, n / fps)):
                break  # the pipeline stopped (an error): it no longer takes frames
            n += 1
        offered.append(n)
        ir.end()
        vis.end()

    thread = threading.Thread(target=run, name="maefuse-bench-cameras", daemon=True)
    thread.start()
    return thread


def run_stream(
    name: str,
    fuser: Fuser,
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    fps: float,
    duration: float,
    queue_size: int = 2,
) -> StreamResult:
    """Run the pipeline for ``duration`` seconds of camera time at ``fps``. ``frames``: (IR HxW uint8 grey,
    VIS HxWx3 uint8 BGR) pairs, offered in turn. A failure of the fuser is raised (Pipeline.join).
    """
    result = StreamResult(name, fps, duration, queue_size, fuser.batch_size)
    delivered: list[tuple[float, float]] = []  # (capture time since start, latency in ms), on the sink thread

    def sink(image: np.ndarray, meta: dict[str, Any]) -> None:
        delivered.append((meta["vis_timestamp"], meta["latency_ms"]))

    fuser.fuse_batch([frames[0]])  # first-call costs (allocation, compilation) are not part of a steady stream
    ir = PushSource("IR camera", fps=fps, maxsize=queue_size)
    vis = PushSource("VIS camera", fps=fps, maxsize=queue_size)
    pipeline = Pipeline(fuser, ir, vis, sink=sink, policy="drop-oldest", queue_size=queue_size)
    offered: list[int] = []
    pipeline.start()
    cameras = _cameras(ir, vis, frames, fps, duration, offered)
    try:
        stats = pipeline.join(timeout=duration + 60.0)
    finally:
        pipeline.abort()  # after an error: the cameras' pushes return False and their thread ends
        cameras.join()

    delivered.sort()
    result.offered = offered[0]
    result.processed = len(delivered)
    result.dropped_output = stats.fused - stats.written
    result.dropped_capture = result.offered - stats.fused
    result.achieved_fps = result.processed / duration
    result.capture_s = [t for t, _ in delivered]
    result.frame_latency_ms = [latency for _, latency in delivered]
    if delivered:
        result.latency_ms = summarize(result.frame_latency_ms)
    length = _window_length(duration)
    for k in range(int(np.ceil(duration / length))):
        low, high = k * length, (k + 1) * length
        in_window = [lat for t, lat in delivered if low <= t < high]
        offered_in_window = sum(low <= n / fps < high for n in range(result.offered))
        result.windows.append({
            "start_s": low,
            "processed": len(in_window),
            "dropped": offered_in_window - len(in_window),
            "latency_ms": summarize(in_window) if in_window else None,
        })
    return result
