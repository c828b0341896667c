"""Frame sources: each yields :class:`Frame` (an OpenCV image and a timestamp in seconds) until it ends.

Images are OpenCV layouts: HxW grey (uint8, or uint16 for raw Y16 thermal) or HxWx3 BGR uint8. Timestamps:
files give their container timestamps; live sources (V4L2, URLs, push) stamp each frame with the monotonic clock
when it is captured; GStreamer pipelines give the buffer PTS. ``captured`` is always the monotonic time the frame
entered the pipeline, the start of the capture-to-fused latency.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..errors import InputError, MaeFuseError
from ..runtime.video import VideoReader

DEFAULT_TIMEOUT_S = 5.0  # how long a source waits to open, or for a frame, before it reports the problem


@dataclass
class Frame:
    image: np.ndarray  # HxW uint8/uint16 or HxWx3 BGR uint8
    timestamp: float  # seconds on the source's clock
    index: int  # position in its source, from 0
    captured: float  # time.monotonic() when it entered the pipeline


class Source(Protocol):
    """What the pipeline reads from. ``read`` returns None at the end of the stream (and keeps returning None), or
    :data:`GAP` when a live source dropped and is being reopened (:class:`ReconnectingSource`)."""

    name: str
    nominal_fps: float | None
    live: bool
    # Optional: ``frame_size`` (width, height) where known before the first frame (files), so that a size
    # mismatch is found before the model loads.

    def read(self) -> Frame | Gap | None: ...

    def close(self) -> None: ...


class VideoFileSource:
    """A video file (runtime.video.VideoReader: 16-bit grey files as uint16); timestamps from the container."""

    live = False

    def __init__(self, path: str | Path, role: str = "video") -> None:
        self.path = Path(path)
        self.name = f"{role} {self.path}"
        self._reader = VideoReader(self.path, role)
        self.nominal_fps = self._reader.fps
        self.declared_frames = self._reader.declared_frames
        self.frame_size: tuple[int, int] | None = (self._reader.width, self._reader.height)
        self._index = 0
        self._ended = False

    def read(self) -> Frame | None:
        if self._ended:
            return None
        item = self._reader.read()
        if item is None:
            self._ended = True
            if self._index == 0:
                raise InputError(f"{self.name} holds no decodable frame", fix="check the file")
            if self.declared_frames is not None and self._index < self.declared_frames - 1:
                raise InputError(
                    f"{self.name} ended after {self._index} of {self.declared_frames} frames (truncated or corrupt)",
                    fix="re-record or repair the file (the output holds the frames fused so far)",
                )
            return None
        image, timestamp = item
        frame = Frame(_squeeze_grey(image), timestamp, self._index, time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        self._reader.close()


class CaptureSource:
    """A V4L2 device (``/dev/videoN`` or an index) or a network URL (RTSP/HTTP), read with OpenCV.

    Frames are stamped with the monotonic clock on capture. ``raw=True`` asks the driver not to convert to BGR
    (thermal cameras' Y16 mode arrives as uint16 grey).
    """

    live = True

    def __init__(self, spec: str | int, role: str = "camera", *, raw: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.name = f"{role} {spec}"
        if isinstance(spec, int) or str(spec).startswith("/dev/video"):
            device = spec if isinstance(spec, int) else int(str(spec).removeprefix("/dev/video") or 0)
            if isinstance(spec, str) and not Path(spec).exists():
                raise InputError(f"{role} device {spec} does not exist", fix="check `ls /dev/video*`")
            self._capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        else:
            self._capture = cv2.VideoCapture(
                str(spec), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000),
                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout_s * 1000)])
        if not self._capture.isOpened():
            raise InputError(f"{role} source {spec} cannot be opened", fix="check the device or URL and that it is "
                             "not in use by another program")
        if raw:
            self._capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        self.nominal_fps = _capture_fps(self._capture)
        self._index = 0
        self._ended = False

    def read(self) -> Frame | None:
        if self._ended:
            return None
        ok, image = self._capture.read()
        now = time.monotonic()
        if not ok or image is None:
            self._ended = True
            if self._index == 0:
                raise InputError(f"{self.name} delivered no frame", fix="check that the camera or stream is live")
            raise InputError(f"{self.name} stopped delivering frames after {self._index}",
                             fix="check the cable, power or network of the camera")
        frame = Frame(_squeeze_grey(image), now, self._index, now)
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


class Gap:
    """What a reconnecting source's ``read`` returns once when its camera drops: the stream is not over, the source
    is away. The pipeline passes it to the pairer (the other stream's frames are then counted unpaired) and counts
    nothing as read."""

    def __repr__(self) -> str:
        return "GAP"


GAP = Gap()


@dataclass(frozen=True)
class Reconnect:
    """How a live source that drops is brought back (docs/streaming.md, "Cameras that come and go")."""

    enabled: bool = True
    stall_s: float = 2.0  # no frame for this long (or an error): an outage
    backoff_s: float = 0.5  # first wait before reopening; doubled after each failed try
    max_backoff_s: float = 5.0
    give_up_s: float = 60.0  # an outage longer than this ends the stream with the source's one-line error

    def check(self) -> Reconnect:
        for name in ("stall_s", "backoff_s", "max_backoff_s", "give_up_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise InputError(f"reconnect {name} must be > 0 s, got {value!r}")
        return self


class ReconnectingSource:
    """A live source (camera, URL, live GStreamer pipeline) that survives outages: on an error, a stall or an
    end, it returns :data:`GAP` once, then reopens the source with backoff until a frame comes (or ``give_up_s``
    passes: then the one-line error). Frames keep counting their ``index`` across reopenings, and timestamps are
    rebased so that they continue from before the outage by the time that passed: a reopened camera's clock (a
    GStreamer pipeline's running time) restarts at zero. ``outages`` and ``outage_s`` count and time them.
    """

    live = True

    def __init__(self, opener: Callable[[], Source], policy: Reconnect, first: Source | None = None) -> None:
        self._open = opener
        self.policy = policy.check()
        self._source = first if first is not None else opener()
        self.name = self._source.name
        self.nominal_fps = self._source.nominal_fps
        self.frame_size = getattr(self._source, "frame_size", None)
        self.outages = 0
        self._outage_total = 0.0
        self._outage_since: float | None = None
        self._cause = ""
        self._offset = 0.0
        self._rebase = False
        self._needs_reopen = False
        self._wait = policy.backoff_s
        self._last: tuple[float, float] | None = None  # (timestamp, captured) of the last frame delivered
        self._index = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def outage_s(self) -> float:
        """Seconds spent in outages so far, the current one included."""
        with self._lock:
            current = time.monotonic() - self._outage_since if self._outage_since is not None else 0.0
            return self._outage_total + current

    def read(self) -> Frame | Gap | None:
        while not self._closed.is_set():
            if self._needs_reopen:
                self._reopen()
                continue
            try:
                frame = self._source.read()
            except MaeFuseError as exc:
                frame, self._cause = None, str(exc)
            if isinstance(frame, Frame):
                if self._outage_since is not None:  # the outage ends with the first frame, not the reopening
                    with self._lock:
                        self._outage_total += time.monotonic() - self._outage_since
                        self._outage_since = None
                    self._cause = ""
                return self._restamp(frame)
            if self._closed.is_set():
                return None
            if isinstance(frame, Gap):  # a nested reconnecting source: its outage is ours
                return frame
            self._needs_reopen = True
            self._cause = self._cause or f"{self.name} ended"
            if self._outage_since is None:
                with self._lock:
                    # The outage began with the last frame that came (a stall is noticed only stall_s later).
                    self._outage_since = self._last[1] if self._last is not None else time.monotonic()
                    self.outages += 1
                return GAP
        return None

    def _reopen(self) -> None:
        """Wait (backoff) and open the source again; give up with the one-line error once the outage has lasted
        ``give_up_s``. Returns at once when the source is ended meanwhile."""
        assert self._outage_since is not None
        while not self._closed.wait(self._wait):
            away = time.monotonic() - self._outage_since
            if away > self.policy.give_up_s:
                self._closed.set()
                raise InputError(f"{self.name} has been away for {away:.0f} s ({self._cause})",
                                 fix="check the cable, power or network of the camera, or raise the give-up time "
                                 "(--give-up-s)")
            try:
                fresh = self._open()
            except MaeFuseError as exc:
                self._cause = str(exc)
                self._wait = min(self._wait * 2, self.policy.max_backoff_s)
                continue
            with contextlib.suppress(Exception):
                self._source.close()
            self._source, self._rebase, self._needs_reopen = fresh, True, False
            self._wait = self.policy.backoff_s
            return

    def _restamp(self, frame: Frame) -> Frame:
        if self._rebase and self._last is not None:
            # Continue from the last frame before the outage by the time that really passed.
            last_timestamp, last_captured = self._last
            self._offset = last_timestamp + (frame.captured - last_captured) - frame.timestamp
        self._rebase = False
        restamped = Frame(frame.image, frame.timestamp + self._offset, self._index, frame.captured)
        self._index += 1
        self._last = (restamped.timestamp, restamped.captured)
        return restamped

    def end(self) -> None:
        """Stop: a read in progress returns None at its next chance (after at most the source's stall timeout)."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(Exception):
            self._source.close()


class PushSource:
    """Frames the host application already has: call :meth:`push` from any thread, :meth:`end` when done.

    A bounded buffer sits between ``push`` and the pipeline. ``policy="drop-oldest"`` never blocks the caller
    (a full buffer loses its oldest frame, counted in ``dropped``); ``"block"`` makes ``push`` wait for room.
    ``None`` (the default) takes the policy of the :class:`Pipeline` the source is given to (drop-oldest until
    then), so a pipeline under ``block`` loses nothing.
    """

    live = True

    def __init__(self, name: str = "push", *, fps: float | None = None, maxsize: int = 4,
                 policy: str | None = None) -> None:
        if policy not in (None, "drop-oldest", "block"):
            raise InputError(f"{name}: unknown push policy {policy!r}", fix="use drop-oldest or block")
        self.name = name
        self.nominal_fps = fps
        self.policy = policy
        self.dropped = 0
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=max(maxsize, 1))
        self._lock = threading.Lock()
        self._index = 0
        self._ended = False

    def push(self, image: np.ndarray, timestamp: float | None = None) -> bool:
        """Offer one frame (HxW or HxWx3, uint8/uint16); ``timestamp`` in seconds, default the monotonic clock.

        Returns False (and takes nothing) once the source has ended, e.g. because the pipeline was stopped.
        """
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise InputError(f"{self.name}: push() takes an HxW or HxWxC numpy image, got {type(image).__name__}")
        now = time.monotonic()
        with self._lock:
            if self._ended:
                return False
            frame = Frame(_squeeze_grey(image), now if timestamp is None else float(timestamp), self._index, now)
            self._index += 1
        if self.policy == "block":
            self._queue.put(frame)
            return True
        while True:
            try:
                self._queue.put_nowait(frame)
                return True
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    with self._lock:
                        self.dropped += 1
                except queue.Empty:
                    pass

    def end(self) -> None:
        """No more frames: the pipeline finishes what it has and stops."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._queue.put(None)

    def read(self) -> Frame | None:
        frame = self._queue.get()
        if frame is None:
            self._queue.put(None)  # keep answering None
        return frame

    def close(self) -> None:
        self.end()


def _squeeze_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


def _capture_fps(capture: cv2.VideoCapture) -> float | None:
    """The frame rate an OpenCV capture declares; None where it reports nothing usable (0, NaN, absurd values)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and 0 < fps < 1000 else None
