"""``--stream``: a camera-pipeline view. Frames arrive at a fixed rate whether or not the fuser keeps up.

Three threads, two bounded queues, as in a real pipeline:

    camera --(capture queue)--> fuser --(output queue)--> sink

The camera offers frame n at start + n / fps; when the capture queue is full the frame is dropped, as a camera
driver drops frames nobody collected. The fuser takes what is waiting (up to ``max_batch`` frames: micro-batching)
and fuses it with :meth:`Fuser.fuse_batch` from uint8 camera frames, processing included. A result that finds the
output queue full is dropped too. Latency is capture to fused, so it includes the time a frame waited.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.fuser import Fuser
from .timing import LatencySummary, summarize


@dataclass
class StreamResult:
    backend: str
    target_fps: float
    duration_s: float
    queue_size: int
    max_batch: int
    offered: int = 0  # frames the camera produced
    processed: int = 0
    dropped_capture: int = 0  # capture queue full
    dropped_output: int = 0  # output queue full
    achieved_fps: float = 0.0
    latency_ms: LatencySummary | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)  # latency over time
    capture_s: list[float] = field(default_factory=list)  # per processed frame: capture time since start
    frame_latency_ms: list[float] = field(default_factory=list)  # per processed frame


def _window_length(duration: float) -> float:
    # About one window per second, at most 30 windows, so a long run still reads as one table.
    return max(1.0, duration / 30.0)


def run_stream(
    name: str,
    fuser: Fuser,
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    fps: float,
    duration: float,
    queue_size: int = 2,
    max_batch: int = 1,
) -> StreamResult:
    """Run the pipeline for ``duration`` seconds of camera time at ``fps``. ``frames``: (IR HxW uint8 grey,
    VIS HxWx3 uint8 BGR) pairs, offered in turn.
    """
    result = StreamResult(name, fps, duration, queue_size, max_batch)
    capture_q: queue.Queue[tuple[int, float] | None] = queue.Queue(maxsize=queue_size)
    output_q: queue.Queue[list[tuple[float, float]] | None] = queue.Queue(maxsize=queue_size)
    dropped_at: list[float] = []
    delivered: list[tuple[float, float]] = []
    fuser.fuse_batch([frames[0]])  # first-call costs (allocation, compilation) are not part of a steady stream
    start = time.perf_counter()

    def camera() -> None:
        n = 0
        while n / fps < duration:
            delay = start + n / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                capture_q.put_nowait((n, time.perf_counter()))
            except queue.Full:
                dropped_at.append(n / fps)
            n += 1
        result.offered = n
        capture_q.put(None)

    def sink() -> None:
        while (item := output_q.get()) is not None:
            delivered.extend(item)

    threads = [threading.Thread(target=camera, daemon=True), threading.Thread(target=sink, daemon=True)]
    for thread in threads:
        thread.start()
    ended = False
    while not ended:
        first = capture_q.get()
        if first is None:
            break
        batch = [first]
        while len(batch) < max_batch:
            try:
                item = capture_q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                ended = True
                break
            batch.append(item)
        fuser.fuse_batch([frames[n % len(frames)] for n, _ in batch])
        done = time.perf_counter()
        try:
            output_q.put_nowait([(captured - start, done - captured) for _, captured in batch])
        except queue.Full:
            result.dropped_output += len(batch)
    output_q.put(None)
    for thread in threads:
        thread.join()

    delivered.sort()
    result.processed = len(delivered)
    result.dropped_capture = len(dropped_at)
    result.achieved_fps = result.processed / duration
    result.capture_s = [t for t, _ in delivered]
    result.frame_latency_ms = [latency * 1e3 for _, latency in delivered]
    if delivered:
        result.latency_ms = summarize(result.frame_latency_ms)
    length = _window_length(duration)
    for k in range(int(np.ceil(duration / length))):
        low, high = k * length, (k + 1) * length
        in_window = [lat for t, lat in zip(result.capture_s, result.frame_latency_ms, strict=True) if low <= t < high]
        result.windows.append({
            "start_s": low,
            "processed": len(in_window),
            "dropped": sum(low <= t < high for t in dropped_at),
            "latency_ms": summarize(in_window) if in_window else None,
        })
    return result
