"""Where fused frames go: a video file, an image sequence, a callback or a GStreamer pipeline (``appsrc``).

Frames arrive as OpenCV images (HxWx3 BGR uint8, or HxW grey uint8) with their metadata. A file sink writes under
a temporary name and renames on ``close``, which the pipeline calls on every exit (end of stream, error, signal):
the result is always a complete, playable file holding exactly the frames counted as written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, LOSSY_SUFFIXES, write_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
LOSSLESS_CODEC = "FFV1"  # FFmpeg's lossless intra codec; needs .mkv or .avi


class Sink(Protocol):
    name: str
    written: int

    def write(self, image: np.ndarray, timestamp: float) -> None: ...

    def close(self) -> None: ...


class VideoFileSink:
    """A video file. ``lossless`` writes FFV1 (.mkv/.avi); otherwise mp4v (.mp4/.mov) or MJPG (.avi/.mkv)."""

    def __init__(self, path: str | Path, fps: float | None, *, lossless: bool = False) -> None:
        self.path = Path(path)
        self.name = f"video {self.path}"
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise InputError(f"unknown video suffix {suffix!r} for {self.path}", fix=f"use {', '.join(VIDEO_SUFFIXES)}")
        if lossless and suffix not in (".mkv", ".avi"):
            raise InputError(f"lossless video needs .mkv or .avi, not {suffix}", fix="name the output OUT.mkv")
        self.codec = LOSSLESS_CODEC if lossless else ("mp4v" if suffix in (".mp4", ".mov") else "MJPG")
        self.fps = fps or 30.0
        self.written = 0
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"output folder {parent} does not exist", fix="create it first")
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write to {parent}", fix="choose a writable output folder")

    def write(self, image: np.ndarray, timestamp: float) -> None:
        height, width = image.shape[:2]
        if self._writer is None:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(name)
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*self.codec),
                                           self.fps, (width, height))
            if not self._writer.isOpened():
                self._discard()
                raise InputError(f"cannot write {self.path} with codec {self.codec}",
                                 fix="use .mp4, or .mkv for lossless")
            self._size = (width, height)
        elif (width, height) != self._size:
            raise InputError(f"{self.name}: frame size changed from {self._size} to {(width, height)}")
        self._writer.write(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        self.written += 1

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None

    def close(self) -> None:
        """Finish the file and move it into place; with no frame written nothing is left behind."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        assert self._tmp is not None
        if self.written == 0:
            self._discard()
            return
        os.replace(self._tmp, self.path)
        self._tmp = None


class ImageSequenceSink:
    """One image per frame: ``folder/000000.png`` ... (lossless PNG unless another suffix is asked for)."""

    def __init__(self, folder: str | Path, suffix: str = ".png", *, allow_lossy: bool = False) -> None:
        self.folder = Path(folder)
        self.name = f"image folder {self.folder}"
        suffix = "." + suffix.lower().lstrip(".")
        if suffix not in IMAGE_SUFFIXES:
            raise InputError(f"unknown image format {suffix!r}", fix="use png, tif or bmp")
        if suffix in LOSSY_SUFFIXES and not allow_lossy:
            raise InputError(f"{suffix} is lossy", fix="use png, tif or bmp")
        self.suffix = suffix
        self.written = 0

    def write(self, image: np.ndarray, timestamp: float) -> None:
        write_image(self.folder / f"{self.written:06d}{self.suffix}", image)
        self.written += 1

    def close(self) -> None:
        pass


class CallbackSink:
    """Calls ``callback(image, meta)`` for each frame on the pipeline's sink thread."""

    def __init__(self, callback: Callable[[np.ndarray, dict[str, Any]], None]) -> None:
        self.callback = callback
        self.name = f"callback {getattr(callback, '__name__', repr(callback))}"
        self.written = 0
        self.meta: dict[str, Any] = {}

    def write(self, image: np.ndarray, timestamp: float) -> None:
        self.callback(image, self.meta)
        self.written += 1

    def close(self) -> None:
        pass


def open_sink(spec: Any, fps: float | None, *, lossless: bool = False) -> Sink:
    """A sink object, a callable, a GStreamer pipeline string (contains ``!``), a video file (by suffix) or a
    folder for an image sequence."""
    if hasattr(spec, "write") and hasattr(spec, "close"):
        return spec
    if callable(spec):
        return CallbackSink(spec)
    text = str(spec)
    if "!" in text:
        from .gst import GstSink

        return GstSink(text, fps)
    path = Path(text)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSink(path, fps, lossless=lossless)
    if path.suffix:
        raise InputError(f"output {path}: {path.suffix} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a "
                         "folder", fix="name a video file, a folder, or a GStreamer pipeline")
    return ImageSequenceSink(path)
