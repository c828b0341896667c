"""The threaded stream pipeline: two sources -> pairing -> fusion (batched) -> sink.

    IR reader --(ir queue)--\\
                             pair + 16-bit range + registration --(pair queue)--> fuse --(out queue)--> sink
    VIS reader --(vis queue)-/

Every queue is bounded (``queue_size``) and follows one policy: ``block`` (a full queue makes its producer wait:
nothing is lost, for files) or ``drop-oldest`` (a full queue discards its oldest item, counted as dropped: latency
first, for live cameras). The fuse stage takes every pair waiting, up to ``fuser.batch_size``, in one
``Fuser.fuse_batch`` call; under ``block`` it first waits up to ``batch_wait_ms`` (default 50 ms) for the batch
to fill, since a batch of 1 costs the built-in model about twice as much per pair as a batch of 4. Latency is
capture to fused: from the monotonic time the older frame of a pair entered the pipeline to the moment its fused
image exists.

Shutdown: at the end of both streams the stages drain and stop; :meth:`Pipeline.stop` (thread-safe, e.g. from a
signal handler) stops reading and drains what is queued; an error in a source (a camera that disappears, a
truncated file) is recorded, the rest drains, and :meth:`Pipeline.join` (and leaving a ``with Pipeline(...)``
block) raises it; an error in a later stage aborts at once. The sink is closed on every path, so a video file is
always complete. Streams that end by themselves having read frames but fused none (an offset or tolerance that
pairs nothing, a latency limit every pair exceeds) end in an error naming the likely cause.

Everything but the model is opened and checked by :func:`open_endpoints` (the CLI calls it before loading the
model): the sources, their frame sizes where known in advance, and the output.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError, MaeFuseError
from ..processing import ir_to_grey8
from ..registration import Registration
from ..runtime.files import side_by_side as side_by_side_image
from ..runtime.video import SmoothedRange, rates_differ
from .gst import GstSource
from .pairing import IndexPairer, Pair, TimestampPairer
from .sinks import CallbackSink, Sink, VideoFileSink, open_sink
from .sources import (
    DEFAULT_TIMEOUT_S,
    CaptureSource,
    Gap,
    PushSource,
    Reconnect,
    ReconnectingSource,
    Source,
    VideoFileSource,
)

QueuePolicy = Literal["drop-oldest", "block"]
POLICIES = ("auto", "drop-oldest", "block")
PAIRINGS = ("timestamp", "index")
LATENCY_WINDOW = 10_000  # latencies kept for the percentiles
# Upper bounds (seconds) of the capture-to-fused latency histogram over the whole run (Prometheus buckets): from
# camera-rate targets (40 ms a frame at 25 fps) up to a CPU running a large model.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RATE_WINDOW_S = 2.0
DEFAULT_BATCH_WAIT_MS = 50.0  # block policy only; drop-oldest fuses what is waiting at once
_END = object()
_NOTHING = object()  # BoundedQueue.poll: nothing came in time
OUTAGE_POLL_S = 0.05  # while a source is away, how long the pairing stage waits on each queue in turn


class BoundedQueue:
    """A FIFO of at most ``maxsize`` items with the pipeline's policy. ``finish`` = no more items (consumers drain
    and then get ``_END``); ``abort`` = drop everything and wake everyone."""

    def __init__(self, maxsize: int, policy: QueuePolicy) -> None:
        self.maxsize = max(maxsize, 1)
        self.policy = policy
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._finished = False
        self._aborted = False

    def put(self, item: Any) -> bool:
        with self._cond:
            while self.policy == "block" and len(self._items) >= self.maxsize and not self._aborted:
                self._cond.wait()
            if self._aborted or self._finished:
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_many(self, limit: int, fill_wait_s: float = 0.0) -> list[Any] | object:
        """Wait for at least one item, return up to ``limit`` waiting ones; ``_END`` when finished and empty.

        With ``fill_wait_s`` > 0, once one item is there wait up to that long for ``limit`` (or as many as the
        queue holds) before taking them: a batch filled a few milliseconds later costs less per item."""
        with self._cond:
            while not self._items and not self._finished and not self._aborted:
                self._cond.wait()
            if fill_wait_s > 0:
                deadline = time.monotonic() + fill_wait_s
                wanted = min(limit, self.maxsize)
                while len(self._items) < wanted and not self._finished and not self._aborted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            if self._aborted or not self._items:
                return _END
            taken = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            self._cond.notify_all()
            return taken

    def get(self) -> Any:
        items = self.get_many(1)
        return _END if items is _END else items[0]  # type: ignore[index]

    def poll(self, timeout_s: float) -> Any:
        """The next item, ``_END``, or ``_NOTHING`` when none came within ``timeout_s``."""
        with self._cond:
            if not self._items and not self._finished and not self._aborted:
                self._cond.wait(timeout_s)
            if not self._items and not self._finished and not self._aborted:
                return _NOTHING
        return self.get()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()


@dataclass
class StreamStats:
    """A snapshot of the counters. Rates are over the last two seconds; latencies in milliseconds."""

    read_ir: int = 0
    read_vis: int = 0
    paired: int = 0
    unpaired_ir: int = 0
    unpaired_vis: int = 0
    reused_ir: int = 0  # pairs whose IR frame already served an earlier VIS frame (IR slower than VIS)
    outages_ir: int = 0  # times a live source dropped and was reopened (or is being reopened)
    outages_vis: int = 0
    outage_s_ir: float = 0.0  # seconds spent in those outages
    outage_s_vis: float = 0.0
    dropped: int = 0
    fused: int = 0
    written: int = 0
    elapsed_s: float = 0.0
    fps_in_ir: float = 0.0
    fps_in_vis: float = 0.0
    fps_out: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    # Over the whole run: the latency histogram (cumulative counts per LATENCY_BUCKETS_S bound) and its sum, and
    # the time spent in the Fuser's calls.
    latency_buckets: list[tuple[float, int]] = field(default_factory=list)
    latency_sum_s: float = 0.0
    fuse_seconds: float = 0.0
    fuse_calls: int = 0
    running: bool = False

    @property
    def unpaired(self) -> int:
        return self.unpaired_ir + self.unpaired_vis

    def line(self) -> str:
        p50 = self.latency_ms.get("p50")
        latency = f"{p50:.0f} ms" if p50 is not None else "-"
        outages = self.outages_ir + self.outages_vis
        away = f"  outages {outages}" if outages else ""
        return (f"in {self.fps_in_ir:4.1f}/{self.fps_in_vis:4.1f} fps (IR/VIS)  out {self.fps_out:4.1f} fps  "
                f"fused {self.fused}  unpaired {self.unpaired}  dropped {self.dropped}{away}  latency p50 {latency}")

    def summary(self) -> str:
        lat = self.latency_ms
        latency = (f"latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, max "
                   f"{lat['max']:.1f} ms" if lat else "no latency (nothing fused)")
        rate = self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0
        outages = ""
        if self.outages_ir or self.outages_vis:
            outages = (f", outages IR {self.outages_ir} ({self.outage_s_ir:.1f} s) / VIS {self.outages_vis} "
                       f"({self.outage_s_vis:.1f} s)")
        return (f"read IR {self.read_ir} / VIS {self.read_vis}, paired {self.paired} (IR frames reused "
                f"{self.reused_ir}), unpaired IR {self.unpaired_ir} / VIS {self.unpaired_vis}, dropped {self.dropped}, "
                f"fused {self.fused}, written {self.written}{outages} in "
                f"{self.elapsed_s:.1f} s ({rate:.1f} fps); {latency}")


class _Rate:
    """Events per second over the last RATE_WINDOW_S (or since the start, when that is shorter)."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._times: deque[float] = deque(maxlen=4096)

    def tick(self, now: float, count: int = 1) -> None:
        self._times.extend([now] * count)

    def value(self, now: float) -> float:
        recent = sum(1 for t in self._times if now - t <= RATE_WINDOW_S)
        return recent / max(min(RATE_WINDOW_S, now - self._started), 1e-3)


def open_source(spec: Any, role: str, *, raw: bool = False, reconnect: Reconnect | None = None) -> Source:
    """A source object, or a string: an int or ``/dev/videoN`` (V4L2), ``scheme://`` (URL), a string with ``!``
    (GStreamer pipeline, needs the ``gst`` extra) or a video file path. ``raw`` (V4L2 only; refused for other
    sources) asks the driver for unconverted frames. A live source opened from a string (camera, URL, live
    GStreamer pipeline; not a file) is wrapped in a :class:`ReconnectingSource` when ``reconnect`` is enabled: it
    then stalls after ``reconnect.stall_s`` without a frame and is reopened (docs/streaming.md)."""
    if hasattr(spec, "read") and hasattr(spec, "close"):
        return spec
    policy = reconnect if reconnect is not None and reconnect.enabled else None
    timeout = policy.stall_s if policy is not None else DEFAULT_TIMEOUT_S
    text = str(spec)
    opener: Callable[[], Source]
    if isinstance(spec, int) or text.isdigit():
        opener = functools.partial(CaptureSource, int(text), role, raw=raw, timeout_s=timeout)
    elif raw and not text.startswith("/dev/video"):
        # Only a V4L2 driver can be asked for unconverted frames; a file is read at its recorded depth anyway.
        raise InputError(f"--raw-ir (raw_ir) asks a V4L2 camera for 16-bit frames; {role} {text} is not one",
                         fix="leave --raw-ir out: video files are read at their recorded depth (16-bit grey as "
                         "16-bit), GStreamer pipelines deliver what their caps ask for (format=GRAY16_LE)")
    elif "!" in text:
        # A GStreamer pipeline's liveness shows only once it runs: open it with the usual timeout (a file's decoder
        # may be slow to start), and a live one with the stall timeout.
        source = GstSource(text, role)
        if policy is None or not source.live:
            return source
        source.timeout_ns = int(policy.stall_s * 1e9)
        return ReconnectingSource(functools.partial(GstSource, text, role, timeout_s=timeout), policy, first=source)
    elif text.startswith("/dev/video"):
        opener = functools.partial(CaptureSource, text, role, raw=raw, timeout_s=timeout)
    elif "://" in text:
        opener = functools.partial(CaptureSource, text, role, timeout_s=timeout)
    else:
        return VideoFileSource(text, role)
    # Cameras and URLs are live: with a policy they stall after its timeout and are reopened.
    return opener() if policy is None else ReconnectingSource(opener, policy)


@dataclass
class Endpoints:
    """A stream's opened sources and checked sink: everything but the model (see :func:`open_endpoints`)."""

    ir: Source
    vis: Source
    sink: Sink | None
    output_fps: float
    warnings: list[str]

    def close(self) -> None:
        for source in (self.ir, self.vis):
            with contextlib.suppress(Exception):
                source.close()


def open_endpoints(ir: Any, vis: Any, sink: Any = None, *, registration: Registration | None = None,
                   pair: str = "timestamp", fps: float | None = None, lossless: bool = False,
                   overwrite: bool = False, raw_ir: bool = False, reconnect: Reconnect | None = None) -> Endpoints:
    """Open both sources and the sink, and check what can be checked before a model loads: a source that cannot
    open (a missing file, a still image, a bad pipeline), frame sizes that do not match each other or the
    calibration (where a source declares its size: files, GStreamer files), an output that is an input or exists
    without ``overwrite``. ``warnings``: index pairing of sources with different frame rates. ``reconnect``: how
    live sources come back after an outage (None: the default :class:`Reconnect`; ``Reconnect(enabled=False)``:
    an outage ends the stream)."""
    if pair not in PAIRINGS:
        raise InputError(f"unknown pairing {pair!r}", fix=f"use one of {', '.join(PAIRINGS)}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"output fps must be > 0, got {fps}", fix="leave it out to take the VIS source's rate")
    reconnect = (reconnect or Reconnect()).check()
    ir_source = open_source(ir, "IR", raw=raw_ir, reconnect=reconnect)
    try:
        vis_source = open_source(vis, "VIS", reconnect=reconnect)
    except BaseException:
        with contextlib.suppress(Exception):
            ir_source.close()
        raise
    opened = Endpoints(ir_source, vis_source, None, 30.0, [])
    try:
        ir_size = getattr(ir_source, "frame_size", None)
        vis_size = getattr(vis_source, "frame_size", None)
        if ir_size is not None and vis_size is not None:
            _check_sizes((ir_size[1], ir_size[0]), (vis_size[1], vis_size[0]), registration)
        rates = ir_source.nominal_fps, vis_source.nominal_fps
        if pair == "index" and rates_differ(*rates):
            opened.warnings.append(
                f"index pairing of IR at {rates[0]:g} fps with VIS at {rates[1]:g} fps: frame n of one is not taken "
                "at the time of frame n of the other, and the pairs drift apart (pair by timestamp instead)")
        opened.output_fps = fps or rates[1] or rates[0] or 30.0
        inputs = [path for path in (getattr(s, "path", None) for s in (ir_source, vis_source)) if path is not None]
        if sink is not None:
            opened.sink = open_sink(sink, opened.output_fps, lossless=lossless, overwrite=overwrite, inputs=inputs)
    except BaseException:
        opened.close()
        raise
    return opened


def _check_sizes(ir_shape: tuple[int, ...], vis_shape: tuple[int, ...], registration: Registration | None) -> None:
    if registration is not None:
        registration.check_sizes(ir_shape, vis_shape, "the stream")
    elif ir_shape[:2] != vis_shape[:2]:
        raise InputError(
            f"IR frames are {ir_shape[1]}x{ir_shape[0]} but VIS frames are {vis_shape[1]}x{vis_shape[0]}",
            fix="calibrate the rig (maefuse-calibrate) and pass --homography H.json",
        )


class Pipeline:
    """Paired IR/VIS fusion on threads. Thread-safe ``start``/``stop``/``stats``; use as a context manager.

    ``fuser`` is anything with ``fuse_batch(pairs) -> images`` and ``batch_size`` (a :class:`Fuser`).
    ``ir``/``vis``: a source object or a spec for :func:`open_source`. ``sink``: a sink object, a callable
    ``f(image, meta)``, a GStreamer string, a video path or a folder; None with :meth:`results` for iteration.
    ``overwrite`` lets a video file or an image folder of an earlier run be replaced (docs/reliability.md).
    ``tolerance`` and ``ir_offset`` are in seconds. :meth:`join` and leaving a ``with`` block raise the stream's
    error; :meth:`wait` only waits. ``warnings`` holds what the caller should tell the user.
    """

    def __init__(
        self,
        fuser: Any,
        ir: Any,
        vis: Any,
        *,
        sink: Any = None,
        registration: Registration | None = None,
        pair: str = "timestamp",
        tolerance: float | None = None,
        ir_offset: float = 0.0,
        policy: str = "auto",
        queue_size: int = 4,
        max_latency_ms: float | None = None,
        batch_wait_ms: float | None = None,
        side_by_side: bool = False,
        thermal_alpha: float = 0.1,
        fps: float | None = None,
        lossless: bool = False,
        max_frames: int | None = None,
        raw_ir: bool = False,
        overwrite: bool = False,
        reconnect: Reconnect | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise InputError(f"unknown queue policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
        if queue_size < 1:
            raise InputError(f"queue size must be at least 1, got {queue_size}")
        if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
            raise InputError(f"pairing tolerance must be >= 0 s, got {tolerance}",
                             fix="leave it out for half the slower source's frame period")
        if not math.isfinite(ir_offset):
            raise InputError(f"IR offset must be a finite number of seconds, got {ir_offset}")
        if max_latency_ms is not None and not max_latency_ms > 0:
            raise InputError(f"max latency must be > 0 ms, got {max_latency_ms}", fix="leave it out for no limit")
        if batch_wait_ms is not None and not batch_wait_ms >= 0:
            raise InputError(f"batch wait must be >= 0 ms, got {batch_wait_ms}")
        self.fuser = fuser
        self.registration = registration
        self.side_by_side = side_by_side
        self.max_latency_s = max_latency_ms / 1000.0 if max_latency_ms is not None else None
        self.max_frames = max_frames
        self.pair = pair
        ends = open_endpoints(ir, vis, sink, registration=registration, pair=pair, fps=fps, lossless=lossless,
                              overwrite=overwrite, raw_ir=raw_ir, reconnect=reconnect)
        self._sources: dict[str, Source] = {"ir": ends.ir, "vis": ends.vis}
        self.sink: Sink | None = ends.sink
        self.output_fps = ends.output_fps
        self.warnings = ends.warnings
        if policy == "auto":
            policy = "drop-oldest" if any(s.live for s in self._sources.values()) else "block"
        self.policy: QueuePolicy = policy  # type: ignore[assignment]
        for source in self._sources.values():
            if isinstance(source, PushSource):
                if source.policy is None:
                    source.policy = self.policy  # the host's pushes follow the pipeline: under block, nothing lost
                elif source.policy == "drop-oldest" and self.policy == "block":
                    ends.close()
                    raise InputError(f"push source {source.name} drops frames (policy drop-oldest) but the pipeline's "
                                     "policy is block", fix="create it with PushSource(policy=None) or 'block'")
        if batch_wait_ms is None:
            # block: throughput first, a fuller batch is cheaper per pair; drop-oldest: latency first.
            batch_wait_ms = DEFAULT_BATCH_WAIT_MS if self.policy == "block" else 0.0
        self.batch_wait_s = batch_wait_ms / 1000.0
        rates = (self._sources["ir"].nominal_fps, self._sources["vis"].nominal_fps)
        self.pairer: TimestampPairer | IndexPairer = (
            TimestampPairer(tolerance, ir_offset, rates) if pair == "timestamp" else IndexPairer())
        self.ir_offset = ir_offset
        self._range = SmoothedRange(thermal_alpha)
        self._queues = {name: BoundedQueue(queue_size, self.policy) for name in ("ir", "vis", "pairs", "out")}
        self._lock = threading.Lock()
        self._counts = {"read_ir": 0, "read_vis": 0, "paired": 0, "fused": 0, "written": 0, "late": 0}
        self._spans: dict[str, list[float]] = {}  # role -> [first, last] timestamp read, for the error message
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._latency_counts = np.zeros(len(LATENCY_BUCKETS_S) + 1, dtype=np.int64)  # last: above every bound
        self._latency_sum = 0.0
        self._fuse_seconds = 0.0
        self._fuse_calls = 0
        self._rates = {role: _Rate(time.monotonic()) for role in ("ir", "vis", "out")}
        self._stop = threading.Event()
        self._stopped_by_caller = False
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._started: float | None = None
        self._finished: float | None = None
        self._sizes_checked = False

    # --- control -----------------------------------------------------------------------------------------------

    def start(self) -> Pipeline:
        if self._started is not None:
            raise InputError("this pipeline was already started", fix="create a new Pipeline")
        self._started = time.monotonic()
        self._rates = {role: _Rate(self._started) for role in ("ir", "vis", "out")}
        targets: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            ("read-ir", self._read, ("ir",)), ("read-vis", self._read, ("vis",)),
            ("pair", self._pair, ()), ("fuse", self._fuse, ()),
        ]
        if self.sink is not None:
            targets.append(("sink", self._write, ()))
        for name, target, args in targets:
            thread = threading.Thread(target=self._guard, args=(target, *args), name=f"maefuse-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; what is already queued is fused and written. Safe from any thread or a signal handler."""
        self._stopped_by_caller = True
        self._stop_reading()

    def _stop_reading(self) -> None:
        self._stop.set()
        for source in self._sources.values():
            end = getattr(source, "end", None)
            if end is not None:
                with contextlib.suppress(Exception):
                    end()

    def abort(self) -> None:
        """Stop at once, discarding queued frames (a second Ctrl-C). The sink is still closed cleanly."""
        self.stop()
        for q in self._queues.values():
            q.abort()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the pipeline has finished (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)

    def join(self, timeout: float | None = None) -> StreamStats:
        """Wait for the end, close everything, raise the first error; returns the final counters."""
        if self._started is not None and not self._done.wait(timeout):
            raise InputError("the stream did not finish in time", fix="call stop() first")
        for thread in self._threads:
            # Readers of a blocking source may sit in read() a while after stop(); later stages end promptly.
            thread.join(timeout=10.0 if thread.name.startswith("maefuse-read") else 30.0)
        self._close_sources()
        if self._error is not None:
            raise self._error
        if not self._stopped_by_caller:
            self._check_something_fused()
        return self.stats

    def _check_something_fused(self) -> None:
        """A stream that ended by itself having read both sources but fused nothing was set up to discard
        everything: say what discarded it instead of reporting success with an empty output."""
        stats = self.stats
        if stats.fused > 0 or stats.read_ir == 0 or stats.read_vis == 0:
            return
        if stats.paired > 0:
            raise InputError(f"all {stats.paired} pairs were older than --max-latency-ms "
                             f"{self.max_latency_s * 1000 if self.max_latency_s else 0:g} when they reached the model, "
                             "so nothing was fused", fix="raise --max-latency-ms (max_latency_ms) or leave it out")
        ir_span = [t + self.ir_offset for t in self._spans.get("ir", [0.0, 0.0])]
        vis_span = self._spans.get("vis", [0.0, 0.0])
        tolerance = getattr(self.pairer, "tolerance", None)
        raise InputError(
            f"no IR frame paired with a VIS frame: IR timestamps {ir_span[0]:.3f}-{ir_span[1]:.3f} s (with "
            f"--ir-offset-ms {self.ir_offset * 1000:g}), VIS {vis_span[0]:.3f}-{vis_span[1]:.3f} s, tolerance "
            f"{(tolerance or 0) * 1000:g} ms",
            fix="check --ir-offset-ms (ir_offset) and --tolerance-ms (tolerance; default: half the slower source's "
            "frame period)")

    def __enter__(self) -> Pipeline:
        return self.start() if self._started is None else self

    def __exit__(self, *exc: object) -> None:
        """Leaving the block stops the stream (draining what is queued) and raises its error, if any; when the
        block itself raised, the queues are discarded and that exception propagates instead."""
        if exc[0] is not None:
            self.abort()
            with contextlib.suppress(MaeFuseError):
                self.join(timeout=30.0)
            return
        if self._done.is_set():
            self.join(timeout=30.0)
            return
        self.stop()
        self.join(timeout=30.0)

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def stats(self) -> StreamStats:
        """The counters now; safe to read from any thread while the pipeline runs."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self._counts)
            latencies = np.array(self._latencies, dtype=np.float64)
            cumulative = np.cumsum(self._latency_counts[:-1]).tolist()
            latency_sum, fuse_seconds, fuse_calls = self._latency_sum, self._fuse_seconds, self._fuse_calls
        unpaired = self.pairer.unpaired
        dropped = sum(q.dropped for q in self._queues.values()) + counts["late"]
        dropped += sum(getattr(s, "dropped", 0) for s in self._sources.values())
        latency = {}
        if latencies.size:
            p50, p90, p99 = np.percentile(latencies, (50, 90, 99))
            latency = {"p50": p50 * 1e3, "p90": p90 * 1e3, "p99": p99 * 1e3, "max": latencies.max() * 1e3,
                       "mean": latencies.mean() * 1e3}
        end = self._finished or now
        return StreamStats(
            read_ir=counts["read_ir"], read_vis=counts["read_vis"], paired=counts["paired"],
            unpaired_ir=unpaired["ir"], unpaired_vis=unpaired["vis"],
            reused_ir=self.pairer.reused,
            outages_ir=getattr(self._sources["ir"], "outages", 0),
            outages_vis=getattr(self._sources["vis"], "outages", 0),
            outage_s_ir=getattr(self._sources["ir"], "outage_s", 0.0),
            outage_s_vis=getattr(self._sources["vis"], "outage_s", 0.0), dropped=dropped, fused=counts["fused"],
            written=counts["written"], elapsed_s=end - (self._started or end),
            fps_in_ir=self._rates["ir"].value(now), fps_in_vis=self._rates["vis"].value(now),
            fps_out=self._rates["out"].value(now), latency_ms=latency,
            latency_buckets=list(zip(LATENCY_BUCKETS_S, cumulative, strict=True)), latency_sum_s=latency_sum,
            fuse_seconds=fuse_seconds, fuse_calls=fuse_calls, running=not self._done.is_set(),
        )

    def results(self) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """Yield (fused image, meta) in order, for a pipeline built with ``sink=None``."""
        if self.sink is not None:
            raise InputError("results() is for pipelines without a sink", fix="pass sink=None")
        if self._started is None:
            self.start()
        while True:
            item = self._queues["out"].get()
            if item is _END:
                return
            with self._lock:
                self._counts["written"] += 1
            yield item

    # --- stages ------------------------------------------------------------------------------------------------

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:  # recorded and re-raised by join()
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._stop.set()
        for q in self._queues.values():
            q.abort()
        if self.sink is None:
            self._mark_done()

    def _mark_done(self) -> None:
        if not self._done.is_set():
            self._finished = time.monotonic()
            self._done.set()

    def _read(self, role: str) -> None:
        source, out = self._sources[role], self._queues[role]
        # A push source is ended by stop(); what the host pushed before that still goes through.
        endable = hasattr(source, "end")
        try:
            while endable or not self._stop.is_set():
                try:
                    frame = source.read()
                except MaeFuseError as exc:
                    # A source failing (truncated file, lost camera) ends the stream; what is queued still drains.
                    with self._lock:
                        if self._error is None:
                            self._error = exc
                    self._stop_reading()
                    return
                if isinstance(frame, Gap):  # the camera dropped; the source reopens it: tell the pairer
                    if not out.put(frame):
                        return
                    continue
                if frame is None:
                    if self._counts[f"read_{role}"] == 0:
                        raise InputError(f"{source.name} ended before its first frame",
                                         fix="check that the source delivers video")
                    return
                now = time.monotonic()
                with self._lock:
                    self._counts[f"read_{role}"] += 1
                    self._spans.setdefault(role, [frame.timestamp, frame.timestamp])[1] = frame.timestamp
                self._rates[role].tick(now)
                if not out.put(frame):
                    return
        finally:
            out.finish()

    def _pair(self) -> None:
        out = self._queues["pairs"]
        try:
            while (role := self.pairer.needs()) is not None:
                other = "vis" if role == "ir" else "ir"
                if self.pairer.away(other):
                    # The away source may come back while this one flows: its queue is looked at first each time,
                    # so its first frame back reaches the pairer (and ends the outage there) at once.
                    item = self._queues[other].poll(0.0)
                    if item is not _NOTHING:
                        role = other
                    else:
                        item = self._queues[role].poll(OUTAGE_POLL_S)
                        if item is _NOTHING:
                            continue
                else:
                    item = self._queues[role].get()
                if item is _END and self._queues[role]._aborted:
                    return
                for pair in self.pairer.add(role, None if item is _END else item):
                    prepared = self._prepare(pair)
                    with self._lock:
                        self._counts["paired"] += 1
                    if not out.put(prepared):
                        return
                    if self.max_frames is not None and self._counts["paired"] >= self.max_frames:
                        self._stop_reading()
                        return
        finally:
            out.finish()
            for role in ("ir", "vis"):  # nobody reads these any more: unblock their readers
                self._queues[role].abort()

    def _prepare(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, Pair]:
        """Pair of frames -> (IR in VIS geometry, VIS) as the Fuser takes them (IR uint8 grey, VIS as captured)."""
        ir, vis = pair.ir.image, pair.vis.image
        if not self._sizes_checked:
            _check_sizes(ir.shape, vis.shape, self.registration)
            self._sizes_checked = True
        if ir.dtype == np.uint16 and ir.ndim == 2:
            ir = self._range(ir)
        if self.registration is not None:
            ir = self.registration.warp(ir)
        return ir, vis, pair

    def _fuse(self) -> None:
        source, out = self._queues["pairs"], self._queues["out"]
        try:
            while True:
                batch = source.get_many(getattr(self.fuser, "batch_size", 1), self.batch_wait_s)
                if not isinstance(batch, list):  # _END
                    return
                if self.max_latency_s is not None:
                    now = time.monotonic()
                    fresh = [b for b in batch if now - min(b[2].ir.captured, b[2].vis.captured) <= self.max_latency_s]
                    with self._lock:
                        self._counts["late"] += len(batch) - len(fresh)
                    batch = fresh
                    if not batch:
                        continue
                started = time.monotonic()
                fused = self.fuser.fuse_batch([(ir, vis) for ir, vis, _ in batch])
                now = time.monotonic()
                items = []
                for (ir, vis, pair), image in zip(batch, fused, strict=True):
                    latency = now - min(pair.ir.captured, pair.vis.captured)
                    meta = {
                        "ir_index": pair.ir.index, "vis_index": pair.vis.index,
                        "ir_timestamp": pair.ir.timestamp, "vis_timestamp": pair.vis.timestamp,
                        "timestamp": pair.vis.timestamp, "latency_ms": latency * 1e3,
                    }
                    if self.side_by_side:
                        image = side_by_side_image(ir_to_grey8(ir), vis, image)
                    items.append((image, meta))
                latencies = [m["latency_ms"] / 1e3 for _, m in items]
                with self._lock:
                    self._counts["fused"] += len(items)
                    self._latencies.extend(latencies)
                    np.add.at(self._latency_counts, np.searchsorted(LATENCY_BUCKETS_S, latencies), 1)
                    self._latency_sum += sum(latencies)
                    self._fuse_seconds += now - started
                    self._fuse_calls += 1
                self._rates["out"].tick(now, len(items))
                for item in items:
                    if not out.put(item):
                        return
        finally:
            out.finish()
            source.abort()
            if self.sink is None:  # iteration: the consumer drains what is left in the out queue
                self._mark_done()

    def _write(self) -> None:
        assert self.sink is not None
        source = self._queues["out"]
        try:
            while True:
                item = source.get()
                if item is _END:
                    return
                image, meta = item
                if isinstance(self.sink, CallbackSink):
                    self.sink.meta = meta
                self.sink.write(image, meta["timestamp"])
                with self._lock:
                    self._counts["written"] += 1
        finally:
            source.abort()
            try:
                if isinstance(self.sink, VideoFileSink):
                    # A failed stream never replaces an existing video; a new file keeps what was fused.
                    self.sink.close(complete=self._error is None)
                else:
                    self.sink.close()
            finally:
                self._mark_done()

    def _close_sources(self) -> None:
        for source in self._sources.values():
            with contextlib.suppress(Exception):
                source.close()


def stream(fuser: Any, ir: Any, vis: Any, *, homography: Registration | str | os.PathLike[str] | None = None,
           **options: Any) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``for fused, meta in stream(fuser, ir_source, vis_source, homography=...)``: fused frames in order.

    ``fused`` is the Fuser's output (HxWx3 BGR uint8 in the VIS geometry); ``meta`` holds ``ir_index``,
    ``vis_index``, ``ir_timestamp``, ``vis_timestamp`` (seconds) and ``latency_ms``. ``homography`` is a
    :class:`Registration` or a calibration JSON path (str or Path); ``options`` are :class:`Pipeline`'s. Leaving
    the loop early stops the pipeline; a source error is raised after the frames fused before it, and so is a
    stream that ended without fusing anything (see :meth:`Pipeline.join`).
    """
    from ..registration import load_registration

    registration = (load_registration(homography) if isinstance(homography, str | os.PathLike) else homography)
    pipeline = Pipeline(fuser, ir, vis, sink=None, registration=registration, **options)
    pipeline.start()
    finished = False
    try:
        yield from pipeline.results()
        finished = True
    finally:
        if not finished:  # the caller left the loop early (or it raised): stop, discarding what is queued
            pipeline.abort() if pipeline.stats.running else pipeline.stop()
        pipeline.join(timeout=30.0)
