"""Video files: the one reader of maefuse-fuse and maefuse-stream, and fusing a pair of registered videos.

:class:`VideoReader` decodes with OpenCV's FFmpeg backend. 8-bit videos come back as OpenCV converts them (HxWx3
BGR uint8). 16-bit grey videos (thermal recordings, e.g. FFV1 ``gray16le`` in .mkv) come back as HxW uint16 with
their exact values: OpenCV's default conversion to BGR keeps only the high byte (3000-12000 becomes 11-46), so for
those files the conversion is turned off (``CAP_PROP_CONVERT_RGB=0``, which returns ``gray16le`` frames
unchanged). It stays on for every other pixel format: with it off OpenCV returns a YUV file's luma plane alone or
an FFV1 BGR file as BGRA (measured with OpenCV 5.1), so the raw mode is used where it is exact and nowhere else.
PyAV would read every format natively but is one more binary dependency for this one case.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..atomic import atomic_path, check_output, remove_leftovers
from ..errors import InputError
from ..io import IMAGE_SUFFIXES
from ..processing import ir16_range, stretch_to_grey8
from .fuser import Fuser

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")
GRAY16LE_TAG = 0x10003159  # FFmpeg's codec tag of AV_PIX_FMT_GRAY16LE, MKTAG('Y', '1', 0, 16)
# Index pairing of videos whose rates differ by more than this (relative) drifts by a frame every 1/tolerance
# frames: 29.97 against 30 fps is 0.1 %, a frame every 1000 (33 s).
RATE_TOLERANCE = 1e-4


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """One video file, frame by frame: ``read() -> (image, timestamp in seconds) | None`` at the end.

    ``depth`` is 16 for 16-bit grey files (frames HxW uint16), else 8 (frames as OpenCV decodes them, HxWx3 BGR
    uint8). ``fps`` and ``declared_frames`` are what the container declares (None where it declares nothing
    usable); timestamps are the container's (``CAP_PROP_POS_MSEC``). A still image is refused: it is not a
    one-frame video.
    """

    def __init__(self, path: str | os.PathLike[str], role: str = "video") -> None:
        self.path = Path(path)
        self.role = role
        if self.path.suffix.lower() in IMAGE_SUFFIXES:
            raise InputError(f"{role} {self.path} is a still image, not a video",
                             fix=f"pass a video file ({', '.join(VIDEO_SUFFIXES)}), a camera or a stream URL")
        if not self.path.is_file():
            raise InputError(f"{role} video not found: {self.path}", fix="check the path")
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise InputError(f"{role} video cannot be decoded: {self.path}",
                             fix="use a video file FFmpeg can decode (MP4, MKV, AVI)")
        self.depth = 8
        if int(self._capture.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) == GRAY16LE_TAG:
            self._capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
            self.depth = 16
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(count) if count and count > 0 else None
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def read(self) -> tuple[np.ndarray, float] | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        if self.depth == 16 and image.dtype != np.uint16:
            raise InputError(f"{self.role} video {self.path} declares 16-bit grey frames but decodes as {image.dtype}",
                             fix="re-encode it as FFV1 gray16le (.mkv)")
        return image, self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def grab(self) -> bool:
        """Skip one frame without decoding it (counting what is left)."""
        return bool(self._capture.grab())

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class SmoothedRange:
    """16-bit thermal video to 8 bits: the files' percentile stretch with a temporally smoothed range.

    A per-frame automatic gain (processing.ir16_range) flickers on video: one hot object entering the frame moves
    the 99.5th percentile and the whole image changes brightness. Here each frame's percentiles feed an
    exponential moving average and the frame is stretched between the averaged values
    (processing.stretch_to_grey8, the same mapping as for files). ``alpha`` is the weight of the newest frame: 1
    reproduces the per-frame mapping exactly.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.low: float | None = None
        self.high: float | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """HxW uint16 IR frame -> HxW uint8; other frames pass unchanged."""
        if frame.dtype != np.uint16:
            return frame
        low, high = ir16_range(frame)
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            self.low += self.alpha * (low - self.low)
            self.high += self.alpha * (high - self.high)
        return stretch_to_grey8(frame, self.low, self.high)


def rates_differ(a: float | None, b: float | None) -> bool:
    """Two declared frame rates that differ by more than RATE_TOLERANCE (unknown rates never differ)."""
    return a is not None and b is not None and abs(a - b) > RATE_TOLERANCE * max(a, b)


@dataclass(frozen=True)
class VideoJob:
    """Two checked input videos and the output file: nothing has been loaded or written when it exists."""

    ir: Path
    vis: Path
    out: Path
    width: int
    height: int
    overwrite: bool


@dataclass
class VideoResult:
    frames: int  # fused frames written
    problems: list[str] = field(default_factory=list)  # truncation and length mismatches (warnings)


def plan_video(
    ir: str | os.PathLike[str], vis: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False
) -> VideoJob:
    """Check two videos and the output before any model loads: both must be videos (an image where a video is
    expected is an error, not a one-frame video), decodable, of one frame size and one frame rate (frame n is
    paired with frame n); the output must be a video file name that is not an input, and may replace an existing
    file only with ``overwrite``."""
    ir, vis, out = Path(ir), Path(vis), Path(out)
    if is_video(ir) != is_video(vis):
        video, other = (("IR", ir), ("VIS", vis)) if is_video(ir) else (("VIS", vis), ("IR", ir))
        raise InputError(
            f"{video[0]} {video[1]} is a video but {other[0]} {other[1]} is not",
            fix=f"pass two videos ({', '.join(VIDEO_SUFFIXES)}) or two images/folders",
        )
    if not is_video(out):
        raise InputError(f"video output {out} needs a video suffix", fix="e.g. --out fused.mp4")
    check_output(out, inputs=(ir, vis), overwrite=overwrite, what="--out")
    with VideoReader(ir, "IR") as ir_reader, VideoReader(vis, "VIS") as vis_reader:
        ir_size, vis_size = (ir_reader.width, ir_reader.height), (vis_reader.width, vis_reader.height)
        rates = ir_reader.fps, vis_reader.fps
    if ir_size != vis_size:
        raise InputError(
            f"IR video {ir} is {ir_size[0]}x{ir_size[1]} but VIS video {vis} is {vis_size[0]}x{vis_size[1]}",
            fix="register the videos to one size",
        )
    if rates_differ(*rates):
        raise InputError(
            f"IR video {ir} runs at {rates[0]:g} fps but VIS video {vis} at {rates[1]:g} fps: pairing frame n with "
            "frame n would pair frames from different moments",
            fix="use maefuse-stream --ir IR --vis VIS --out OUT, which pairs frames by timestamp",
        )
    return VideoJob(ir, vis, out, vis_size[0], vis_size[1], overwrite)


def fuse_video(
    fuser: Fuser,
    job: VideoJob,
    *,
    codec: str = "mp4v",
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VideoResult:
    """Fuse two videos of the same size frame by frame (``fuser.batch_size`` frames per call) into ``job.out``.

    16-bit IR frames are mapped to 8 bits with :class:`SmoothedRange` (as maefuse-stream does). Stops at the
    shorter video. Fewer frames than a container declares (a truncated file) and videos of different lengths are
    reported with their counts in ``VideoResult.problems``; with ``strict`` they are errors and nothing is
    written. The output is written to a temporary name (``atomic.TEMP_PREFIX``) and renamed when complete;
    leftovers of a killed earlier run in the output folder are removed first.
    """
    remove_leftovers(job.out.parent if str(job.out.parent) else Path("."))
    thermal = SmoothedRange()
    with VideoReader(job.ir, "IR") as ir_reader, VideoReader(job.vis, "VIS") as vis_reader:
        readers = {"IR": ir_reader, "VIS": vis_reader}
        fps = vis_reader.fps or 25.0
        frames = 0
        read = {"IR": 0, "VIS": 0}
        with atomic_path(job.out) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*codec), fps, (job.width, job.height))
            if not writer.isOpened():
                raise InputError(f"cannot write video {job.out} with codec {codec}", fix="use a .mp4 or .avi name")
            try:
                while True:
                    batch: list[tuple[np.ndarray, np.ndarray]] = []
                    while len(batch) < fuser.batch_size:
                        ir_item, vis_item = ir_reader.read(), vis_reader.read()
                        read["IR"] += ir_item is not None
                        read["VIS"] += vis_item is not None
                        if ir_item is None or vis_item is None:
                            break
                        ir = ir_item[0]
                        batch.append((thermal(ir) if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY),
                                      vis_item[0]))
                    if not batch:
                        break
                    for fused in fuser.fuse_batch(batch, names=[f"frame {frames + i}" for i in range(len(batch))]):
                        writer.write(fused if fused.ndim == 3 else cv2.cvtColor(fused, cv2.COLOR_GRAY2BGR))
                    frames += len(batch)
                    if progress is not None:
                        progress(len(batch))
                    if len(batch) < fuser.batch_size:
                        break
            finally:
                writer.release()
            if frames == 0:
                raise InputError(f"no frames could be read from {job.ir} and {job.vis}", fix="check the videos")
            # The longer video's remaining frames are counted (grab: no decoding) so the report has both lengths.
            for role, reader in readers.items():
                while reader.grab():
                    read[role] += 1
            declared = {role: reader.declared_frames or 0 for role, reader in readers.items()}
            problems = _length_problems(job, read, declared)
            if problems and strict:
                raise InputError("; ".join(problems), fix="repair the videos, or drop --strict to fuse what there is")
        return VideoResult(frames, problems)


def _length_problems(job: VideoJob, read: dict[str, int], declared: dict[str, int]) -> list[str]:
    problems = []
    for role, path in (("IR", job.ir), ("VIS", job.vis)):
        if declared[role] and read[role] < declared[role]:
            problems.append(f"{role} video {path} has {read[role]} readable frames of the {declared[role]} its "
                            "container declares (truncated?)")
    if read["IR"] != read["VIS"]:
        problems.append(f"IR video has {read['IR']} frames but VIS video has {read['VIS']}: only the first "
                        f"{min(read.values())} pair up")
    return problems
