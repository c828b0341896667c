"""Fusing a pair of registered videos frame by frame."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path
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


def fuse_video(
    fuser: Fuser,
    ir_path: str | Path,
    vis_path: str | Path,
    out_path: str | Path,
    *,
    codec: str = "mp4v",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fuse two videos of the same size frame by frame (``fuser.batch_size`` frames per call) into ``out_path``.

    Stops at the shorter video. The output is written to a temporary name and renamed when complete. Returns the
    number of frames written.
    """
    ir_path, vis_path, out_path = Path(ir_path), Path(vis_path), Path(out_path)
    ir_cap, vis_cap = _open(ir_path, "IR"), _open(vis_path, "VIS")
    try:
        fps = vis_cap.get(cv2.CAP_PROP_FPS) or 25.0
        width = int(vis_cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(vis_cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ir_size = (int(ir_cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(ir_cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if ir_size != (width, height):
            raise InputError(
                f"IR video {ir_path} is {ir_size[0]}x{ir_size[1]} but VIS video {vis_path} is {width}x{height}",
                fix="register the videos to one size",
            )
        frames = 0
        with atomic_path(out_path) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*codec), fps, (width, height))
            if not writer.isOpened():
                raise InputError(f"cannot write video {out_path} with codec {codec}", fix="use a .mp4 or .avi name")
            try:
                while True:
                    batch: list[tuple[np.ndarray, np.ndarray]] = []
                    while len(batch) < fuser.batch_size:
                        ok_ir, ir = ir_cap.read()
                        ok_vis, vis = vis_cap.read()
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
            finally:
                writer.release()
            if frames == 0:
                raise InputError(f"no frames could be read from {ir_path} and {vis_path}", fix="check the videos")
        return frames
    finally:
        ir_cap.release()
        vis_cap.release()
