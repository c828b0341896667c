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
truncated file) is recorded, the rest drains, and :meth:`Pipeline.join` raises it; an error in a later stage aborts
at once. The sink is closed on every path, so a video file is always complete.
"""

from __future__ import annotations

import contextlib
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
from .pairing import IndexPairer, Pair, TimestampPairer
from .sinks import CallbackSink, Sink, open_sink
from .sources import Source, open_source
from .thermal import SmoothedRange

QueuePolicy = Literal["drop-oldest", "block"]
POLICIES = ("auto", "drop-oldest", "block")
PAIRINGS = ("timestamp", "index")
LATENCY_WINDOW = 10_000  # latencies kept for the percentiles
RATE_WINDOW_S = 2.0
DEFAULT_BATCH_WAIT_MS = 50.0  # block policy only; drop-oldest fuses what is waiting at once
_END = object()


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
    dropped: int = 0
    fused: int = 0
    written: int = 0
    elapsed_s: float = 0.0
    fps_in_ir: float = 0.0
    fps_in_vis: float = 0.0
    fps_out: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    running: bool = False

    @property
    def unpaired(self) -> int:
        return self.unpaired_ir + self.unpaired_vis

    def line(self) -> str:
        p50 = self.latency_ms.get("p50")
        latency = f"{p50:.0f} ms" if p50 is not None else "-"
        return (f"in {self.fps_in_ir:4.1f}/{self.fps_in_vis:4.1f} fps (IR/VIS)  out {self.fps_out:4.1f} fps  "
                f"fused {self.fused}  unpaired {self.unpaired}  dropped {self.dropped}  latency p50 {latency}")

    def summary(self) -> str:
        lat = self.latency_ms
        latency = (f"latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, max "
                   f"{lat['max']:.1f} ms" if lat else "no latency (nothing fused)")
        rate = self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"read IR {self.read_ir} / VIS {self.read_vis}, paired {self.paired}, unpaired IR {self.unpaired_ir} "
                f"/ VIS {self.unpaired_vis}, dropped {self.dropped}, fused {self.fused}, written {self.written} in "
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


class Pipeline:
    """Paired IR/VIS fusion on threads. Thread-safe ``start``/``stop``/``stats``; use as a context manager.

    ``fuser`` is anything with ``fuse_batch(pairs) -> images`` and ``batch_size`` (a :class:`Fuser`).
    ``ir``/``vis``: a source object or a spec for :func:`open_source`. ``sink``: a sink object, a callable
    ``f(image, meta)``, a GStreamer string, a video path or a folder; None with :meth:`results` for iteration.
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
    ) -> None:
        if pair not in PAIRINGS:
            raise InputError(f"unknown pairing {pair!r}", fix=f"use one of {', '.join(PAIRINGS)}")
        if policy not in POLICIES:
            raise InputError(f"unknown queue policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
        if queue_size < 1:
            raise InputError(f"queue size must be at least 1, got {queue_size}")
        self.fuser = fuser
        self.registration = registration
        self.side_by_side = side_by_side
        self.max_latency_s = max_latency_ms / 1000.0 if max_latency_ms else None
        self.max_frames = max_frames
        self._sources: dict[str, Source] = {}
        try:
            self._sources["ir"] = open_source(ir, "IR", raw=raw_ir)
            self._sources["vis"] = open_source(vis, "VIS")
        except BaseException:
            self._close_sources()
            raise
        if policy == "auto":
            policy = "drop-oldest" if any(s.live for s in self._sources.values()) else "block"
        self.policy: QueuePolicy = policy  # type: ignore[assignment]
        if batch_wait_ms is None:
            # block: throughput first, a fuller batch is cheaper per pair; drop-oldest: latency first.
            batch_wait_ms = DEFAULT_BATCH_WAIT_MS if self.policy == "block" else 0.0
        if batch_wait_ms < 0:
            raise InputError(f"batch wait must be >= 0 ms, got {batch_wait_ms}")
        self.batch_wait_s = batch_wait_ms / 1000.0
        rates = (self._sources["ir"].nominal_fps, self._sources["vis"].nominal_fps)
        self.pairer: TimestampPairer | IndexPairer = (
            TimestampPairer(tolerance, ir_offset, rates) if pair == "timestamp" else IndexPairer())
        self.output_fps = fps or rates[1] or rates[0] or 30.0
        try:
            self.sink: Sink | None = open_sink(sink, self.output_fps, lossless=lossless) if sink is not None else None
        except BaseException:
            self._close_sources()
            raise
        self._range = SmoothedRange(thermal_alpha)
        self._queues = {name: BoundedQueue(queue_size, self.policy) for name in ("ir", "vis", "pairs", "out")}
        self._lock = threading.Lock()
        self._counts = {"read_ir": 0, "read_vis": 0, "paired": 0, "fused": 0, "written": 0, "late": 0}
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._rates = {role: _Rate(time.monotonic()) for role in ("ir", "vis", "out")}
        self._stop = threading.Event()
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
        return self.stats

    def __enter__(self) -> Pipeline:
        return self.start() if self._started is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is not None:
            self.abort()
        with contextlib.suppress(MaeFuseError):
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
            unpaired_ir=unpaired["ir"], unpaired_vis=unpaired["vis"], dropped=dropped, fused=counts["fused"],
            written=counts["written"], elapsed_s=end - (self._started or end),
            fps_in_ir=self._rates["ir"].value(now), fps_in_vis=self._rates["vis"].value(now),
            fps_out=self._rates["out"].value(now), latency_ms=latency, running=not self._done.is_set(),
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
                    self.stop()
                    return
                if frame is None:
                    if self._counts[f"read_{role}"] == 0:
                        raise InputError(f"{source.name} ended before its first frame",
                                         fix="check that the source delivers video")
                    return
                now = time.monotonic()
                with self._lock:
                    self._counts[f"read_{role}"] += 1
                self._rates[role].tick(now)
                if not out.put(frame):
                    return
        finally:
            out.finish()

    def _pair(self) -> None:
        out = self._queues["pairs"]
        try:
            while (role := self.pairer.needs()) is not None:
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
                        self.stop()
                        return
        finally:
            out.finish()
            for role in ("ir", "vis"):  # nobody reads these any more: unblock their readers
                self._queues[role].abort()

    def _prepare(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, Pair]:
        """Pair of frames -> (IR in VIS geometry, VIS) as the Fuser takes them (IR uint8 grey, VIS as captured)."""
        ir, vis = pair.ir.image, pair.vis.image
        if not self._sizes_checked:
            if self.registration is not None:
                self.registration.check_sizes(ir.shape, vis.shape, "the stream")
            elif ir.shape[:2] != vis.shape[:2]:
                raise InputError(
                    f"IR frames are {ir.shape[1]}x{ir.shape[0]} but VIS frames are {vis.shape[1]}x{vis.shape[0]}",
                    fix="calibrate the rig (maefuse-calibrate) and pass --homography H.json",
                )
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
                with self._lock:
                    self._counts["fused"] += len(items)
                    self._latencies.extend(m["latency_ms"] / 1e3 for _, m in items)
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
                self.sink.close()
            finally:
                self._mark_done()

    def _close_sources(self) -> None:
        for source in self._sources.values():
            with contextlib.suppress(Exception):
                source.close()


def stream(fuser: Any, ir: Any, vis: Any, *, homography: Registration | str | None = None,
           **options: Any) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``for fused, meta in stream(fuser, ir_source, vis_source, homography=...)``: fused frames in order.

    ``fused`` is the Fuser's output (HxWx3 BGR uint8 in the VIS geometry); ``meta`` holds ``ir_index``,
    ``vis_index``, ``ir_timestamp``, ``vis_timestamp`` (seconds) and ``latency_ms``. ``homography`` is a
    :class:`Registration` or a calibration JSON path; ``options`` are :class:`Pipeline`'s. Leaving the loop early
    stops the pipeline; a source error is raised after the frames fused before it.
    """
    from ..registration import load_registration

    registration = load_registration(homography) if isinstance(homography, str) else homography
    pipeline = Pipeline(fuser, ir, vis, sink=None, registration=registration, **options)
    pipeline.start()
    try:
        yield from pipeline.results()
    finally:
        pipeline.abort() if pipeline.stats.running else pipeline.stop()
        pipeline.join(timeout=30.0)
