"""Where fused frames go: a video file, an image sequence, a callback or a GStreamer pipeline (``appsrc``).

Frames arrive as OpenCV images (HxWx3 BGR uint8, or HxW grey uint8) with their metadata. File sinks follow
docs/reliability.md: an output that is an input, or that already exists (a video file; a folder already holding
frames) without ``overwrite``, is refused when the sink is opened, before anything runs. A video file is written
under a temporary name (``atomic.new_temp_file``: ``.maefuse-tmp-<pid>-...``, mode 0644) and renamed on ``close``,
which the pipeline calls on every exit (end of stream, error, signal); leftovers of killed runs in its folder are
removed when it opens.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ..atomic import check_output, move_into_place, new_temp_file, remove_leftovers
from ..errors import InputError
from ..io import IMAGE_SUFFIXES, LOSSY_SUFFIXES, write_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
LOSSLESS_CODEC = "FFV1"  # FFmpeg's lossless intra codec; needs .mkv or .avi
FRAME_NAME = re.compile(r"\d{6}(" + "|".join(re.escape(s) for s in IMAGE_SUFFIXES) + ")", re.IGNORECASE)


class Sink(Protocol):
    name: str
    written: int

    def write(self, image: np.ndarray, timestamp: float) -> None: ...

    def close(self) -> None: ...


class VideoFileSink:
    """A video file. ``lossless`` writes FFV1 (.mkv/.avi); otherwise mp4v (.mp4/.mov) or MJPG (.avi/.mkv).

    ``close()`` moves the file into place. ``close(complete=False)`` (the stream failed) does so only when
    nothing was there before: a partial recording is kept as a new file, but never replaces an existing one.
    """

    def __init__(self, path: str | Path, fps: float | None, *, lossless: bool = False, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.path = Path(path)
        self.name = f"video {self.path}"
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise InputError(f"unknown video suffix {suffix!r} for {self.path}", fix=f"use {', '.join(VIDEO_SUFFIXES)}")
        if lossless and suffix not in (".mkv", ".avi"):
            raise InputError(f"lossless video needs .mkv or .avi, not {suffix}", fix="name the output OUT.mkv")
        check_output(self.path, inputs=inputs, overwrite=overwrite, what="--out")
        self.replaces = self.path.exists()
        self.codec = LOSSLESS_CODEC if lossless else ("mp4v" if suffix in (".mp4", ".mov") else "MJPG")
        self.fps = fps or 30.0
        self.written = 0
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, timestamp: float) -> None:
        height, width = image.shape[:2]
        if self._writer is None:
            folder = self.path.parent if str(self.path.parent) else Path(".")
            remove_leftovers(folder)
            self._tmp = new_temp_file(self.path)
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

    def close(self, *, complete: bool = True) -> None:
        """Finish the file and move it into place; with no frame written, or an incomplete stream that would
        replace an existing file, the temporary file is removed and what was there stays."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        assert self._tmp is not None
        if self.written == 0 or (not complete and self.replaces):
            self._discard()
            return
        move_into_place(self._tmp, self.path)
        self._tmp = None


class ImageSequenceSink:
    """One image per frame: ``folder/000000.png`` ... (lossless PNG unless another suffix is asked for).

    A folder already holding frames (``NNNNNN.<image suffix>``) is refused unless ``overwrite``; then the earlier
    frames are removed when the first new frame is written (a run that fails before fusing anything leaves them),
    so from then on the folder holds this run's frames only. Other files in the folder are never touched. Each
    frame is written atomically (``io.write_image``).
    """

    def __init__(self, folder: str | Path, suffix: str = ".png", *, allow_lossy: bool = False,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.name = f"image folder {self.folder}"
        suffix = "." + suffix.lower().lstrip(".")
        if suffix not in IMAGE_SUFFIXES:
            raise InputError(f"unknown image format {suffix!r}", fix="use png, tif or bmp")
        if suffix in LOSSY_SUFFIXES and not allow_lossy:
            raise InputError(f"{suffix} is lossy", fix="use png, tif or bmp")
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--out {self.folder} is a file, not a folder",
                             fix="name a folder for the image sequence, or a video file (.mp4, .mkv)")
        self._earlier = self._frames()
        if self._earlier and not overwrite:
            raise InputError(f"--out {self.folder} already holds {len(self._earlier)} frames of an earlier run",
                             fix="pass --overwrite to replace them, or choose another folder")
        if self.folder.is_dir() and not os.access(self.folder, os.W_OK | os.X_OK):
            raise InputError(f"cannot write --out {self.folder}: not writable", fix="choose a writable folder")
        self.suffix = suffix
        self.written = 0

    def _frames(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if FRAME_NAME.fullmatch(p.name) and p.is_file())

    def write(self, image: np.ndarray, timestamp: float) -> None:
        if self.written == 0:
            remove_leftovers(self.folder)
            for frame in self._earlier:
                with contextlib.suppress(FileNotFoundError):
                    frame.unlink()
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


def open_sink(spec: Any, fps: float | None, *, lossless: bool = False, overwrite: bool = False,
              inputs: Iterable[str | os.PathLike[str]] = ()) -> Sink:
    """A sink object, a callable, a GStreamer pipeline string (contains ``!``), a video file (by suffix) or a
    folder for an image sequence. File outputs are checked here, before anything runs: ``inputs`` (the input
    files) are refused as outputs, existing outputs are refused unless ``overwrite``."""
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
        return VideoFileSink(path, fps, lossless=lossless, overwrite=overwrite, inputs=inputs)
    if path.suffix:
        raise InputError(f"output {path}: {path.suffix} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a "
                         "folder", fix="name a video file, a folder, or a GStreamer pipeline")
    return ImageSequenceSink(path, overwrite=overwrite)
