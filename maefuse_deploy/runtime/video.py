"""Fusing a pair of registered videos frame by frame."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path, remove_leftovers
from ..errors import InputError
from .fuser import Fuser

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path, role: str) -> cv2.VideoCapture:
    if not path.is_file():
        raise InputError(f"{role} video not found: {path}", fix="check the path")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{role} video cannot be decoded: {path}", fix="use an MP4/AVI file OpenCV can read")
    return capture


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
    expected is an error, not a one-frame video), decodable, of one frame size; the output must be a video file
    name that is not an input, and may replace an existing file only with ``overwrite``."""
    ir, vis, out = Path(ir), Path(vis), Path(out)
    if is_video(ir) != is_video(vis):
        video, other = (("IR", ir), ("VIS", vis)) if is_video(ir) else (("VIS", vis), ("IR", ir))
        raise InputError(
            f"{video[0]} {video[1]} is a video but {other[0]} {other[1]} is not",
            fix=f"pass two videos ({', '.join(VIDEO_SUFFIXES)}) or two images/folders",
        )
    if not is_video(out):
        raise InputError(f"video output {out} needs a video suffix", fix="e.g. --out fused.mp4")
    if out.resolve() in (ir.resolve(), vis.resolve()):
        raise InputError(f"output {out} is one of the input videos", fix="choose another --out")
    if out.is_dir():
        raise InputError(f"output {out} is a folder", fix="choose another --out")
    if out.exists() and not overwrite:
        raise InputError(f"output {out} already exists", fix="pass --overwrite to replace it, or choose another --out")
    ir_cap, vis_cap = _open(ir, "IR"), _open(vis, "VIS")
    try:
        width = int(vis_cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(vis_cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ir_size = (int(ir_cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(ir_cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        ir_cap.release()
        vis_cap.release()
    if ir_size != (width, height):
        raise InputError(
            f"IR video {ir} is {ir_size[0]}x{ir_size[1]} but VIS video {vis} is {width}x{height}",
            fix="register the videos to one size",
        )
    return VideoJob(ir, vis, out, width, height, overwrite)


def _declared_frames(capture: cv2.VideoCapture) -> int:
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if count and count > 0 else 0


def fuse_video(
    fuser: Fuser,
    job: VideoJob,
    *,
    codec: str = "mp4v",
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VideoResult:
    """Fuse two videos of the same size frame by frame (``fuser.batch_size`` frames per call) into ``job.out``.

    Stops at the shorter video. Fewer frames than a container declares (a truncated file) and videos of
    different lengths are reported with their counts in ``VideoResult.problems``; with ``strict`` they are errors
    and nothing is written. The output is written to a temporary name (``atomic.TEMP_PREFIX``) and renamed when
    complete; leftovers of a killed earlier run in the output folder are removed first.
    """
    remove_leftovers(job.out.parent if str(job.out.parent) else Path("."))
    ir_cap, vis_cap = _open(job.ir, "IR"), _open(job.vis, "VIS")
    try:
        fps = vis_cap.get(cv2.CAP_PROP_FPS) or 25.0
        declared = {"IR": _declared_frames(ir_cap), "VIS": _declared_frames(vis_cap)}
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
                        ok_ir, ir = ir_cap.read()
                        ok_vis, vis = vis_cap.read()
                        read["IR"] += ok_ir
                        read["VIS"] += ok_vis
                        if not (ok_ir and ok_vis):
                            break
                        batch.append((cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY), vis))
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
            for role, capture in (("IR", ir_cap), ("VIS", vis_cap)):
                while capture.grab():
                    read[role] += 1
            problems = _length_problems(job, read, declared)
            if problems and strict:
                raise InputError("; ".join(problems), fix="repair the videos, or drop --strict to fuse what there is")
        return VideoResult(frames, problems)
    finally:
        ir_cap.release()
        vis_cap.release()


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
