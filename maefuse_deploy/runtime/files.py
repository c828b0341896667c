"""Fusing image files and folders with a Fuser: the library side of ``maefuse-fuse``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..io import LOSSY_SUFFIXES, ImagePair, read_image, write_image
from ..processing import ir_to_grey8, vis_to_bgr8
from ..registration import Registration
from ..sample_pairs import SAMPLES_DIR
from .fuser import Fuser

__all__ = ["SAMPLES_DIR", "fuse_pairs", "output_suffix", "side_by_side"]


def side_by_side(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """IR | VIS | fused as one HxW*3x3 BGR uint8 image with labels, for looking at results."""
    height, width = fused.shape[:2]

    def panel(image: np.ndarray, label: str) -> np.ndarray:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).copy()
        scale = max(height / 480, 0.4)
        thickness = max(int(2 * scale), 1)
        cv2.putText(image, label, (8, int(28 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0),
                    thickness + 2, cv2.LINE_AA)
        cv2.putText(image, label, (8, int(28 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
        return image

    # The inputs as the network saw them (16-bit IR stretched, alpha dropped): processing.py's conversions.
    return np.hstack([panel(ir_to_grey8(ir), "IR"), panel(vis_to_bgr8(vis), "VIS"), panel(fused, "fused")])


def output_suffix(fmt: str, allow_lossy: bool) -> str:
    suffix = "." + fmt.lower().lstrip(".")
    if suffix in LOSSY_SUFFIXES and not allow_lossy:
        raise InputError(
            f"{fmt} is lossy and would alter the fused pixels", fix="use png/tif/bmp, or pass --lossy to allow it"
        )
    return suffix


def fuse_pairs(
    fuser: Fuser,
    pairs: Sequence[ImagePair],
    out_dir: str | Path,
    *,
    suffix: str = ".png",
    with_side_by_side: bool = False,
    resize: bool = False,
    registration: Registration | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Fuse ``pairs`` in groups of ``fuser.batch_size`` and write ``out_dir/NAME{suffix}``.

    ``registration`` (a calibration, ``maefuse-calibrate``) warps each IR image into its VIS partner's geometry
    first; every pair must then have the calibration's IR and VIS sizes.

    All-or-nothing: if any pair fails (unreadable file, size mismatch), the files this call wrote are removed
    before the error propagates, so a folder is never left half fused.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    try:
        for start in range(0, len(pairs), fuser.batch_size):
            chunk = pairs[start : start + fuser.batch_size]
            images = [(read_image(p.ir, "IR"), read_image(p.vis, "VIS")) for p in chunk]
            if registration is not None:
                for pair, (ir, vis) in zip(chunk, images, strict=True):
                    registration.check_sizes(ir.shape, vis.shape, f"pair {pair.name}")
                images = [(registration.warp(ir), vis) for ir, vis in images]
            if resize:
                images = [(_resize_to(ir, vis), vis) for ir, vis in images]
            for pair, (ir, vis) in zip(chunk, images, strict=True):
                if ir.shape[:2] != vis.shape[:2]:
                    raise InputError(
                        f"pair {pair.name}: IR {pair.ir} is {ir.shape[1]}x{ir.shape[0]} but VIS {pair.vis} is "
                        f"{vis.shape[1]}x{vis.shape[0]}",
                        fix="register the pair to one size, or pass --resize-ir",
                    )
            fused = fuser.fuse_batch(images, names=[p.name for p in chunk])
            for pair, (ir, vis), image in zip(chunk, images, fused, strict=True):
                written.append(write_image(out_dir / f"{pair.name}{suffix}", image))
                if with_side_by_side:
                    written.append(write_image(out_dir / f"{pair.name}_sbs{suffix}", side_by_side(ir, vis, image)))
            if progress is not None:
                progress(len(chunk))
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return written


def _resize_to(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    if ir.shape[:2] == vis.shape[:2]:
        return ir
    return cv2.resize(ir, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_LINEAR)
