"""Frame sources: each yields :class:`Frame` (an OpenCV image and a timestamp in seconds) until it ends.

Images are OpenCV layouts: HxW grey (uint8, or uint16 for raw Y16 thermal) or HxWx3 BGR uint8. Timestamps:
files give their container timestamps; live sources (V4L2, URLs, push) stamp each frame with the monotonic clock
when it is captured; GStreamer pipelines give the buffer PTS. ``captured`` is always the monotonic time the frame
entered the pipeline, the start of the capture-to-fused latency.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..errors import InputError
from ..runtime.video import VideoReader


@dataclass
class Frame:
    image: np.ndarray  # HxW uint8/uint16 or HxWx3 BGR uint8
    timestamp: float  # seconds on the source's clock
    index: int  # position in its source, from 0
    captured: float  # time.monotonic() when it entered the pipeline


class Source(Protocol):
    """What the pipeline reads from. ``read`` returns None at the end of the stream (and keeps returning None)."""

    name: str
    nominal_fps: float | None
    live: bool
    # Optional: ``frame_size`` (width, height) where known before the first frame (files), so that a size
    # mismatch is found before the model loads.

    def read(self) -> Frame | None: ...

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

    def __init__(self, spec: str | int, role: str = "camera", *, raw: bool = False, timeout_s: float = 5.0) -> None:
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
