"""Fusing image files and folders with a Fuser: the library side of ``maefuse-fuse``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..atomic import check_writable, lies_within, move_into_place, new_temp_file, remove_leftovers
from ..contract import batch_slices
from ..errors import InputError
from ..io import (
    DEFAULT_MAX_PIXELS,
    LOSSY_SUFFIXES,
    OUTPUT_FORMATS,
    ImagePair,
    encode_image,
    find_pairs,
    image_size,
    read_image,
)
from ..processing import ir_to_grey8, vis_to_bgr8
from ..registration import Registration
from ..sample_pairs import SAMPLES_DIR
from .fuser import Fuser
from .video import is_video

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
    """``"png"`` -> ``".png"``, refusing what maefuse-fuse cannot write (checked before any model loads)."""
    name = fmt.lower().lstrip(".")
    if name not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {fmt!r}", fix=f"use one of {', '.join(OUTPUT_FORMATS)}")
    suffix = "." + name
    if suffix in LOSSY_SUFFIXES and not allow_lossy:
        raise InputError(
            f"{fmt} is lossy and would alter the fused pixels", fix="use png/tif/bmp, or pass --lossy to allow it"
        )
    return suffix


@dataclass(frozen=True)
class FuseJob:
    """A checked plan: which pairs are fused into which files. Nothing has been written when it exists."""

    pairs: list[ImagePair]
    folder: Path  # where the outputs land
    fused: list[Path]  # one per pair
    side_by_side: list[Path]  # one per pair, or empty
    overwrite: bool
    max_pixels: int | None

    @property
    def outputs(self) -> list[Path]:
        return [*self.fused, *self.side_by_side]


def plan_fuse_job(
    ir: str | os.PathLike[str],
    vis: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    allow_lossy: bool = False,
    with_side_by_side: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    resize: bool = False,
    registration: Registration | None = None,
) -> FuseJob:
    """Pair the inputs and decide every output path, refusing before anything is loaded or written:

    - an output folder that is, contains or lies inside an IR/VIS input folder (its files would mix with, or
      replace, the sources), or an output file that is an input;
    - outputs that already exist, unless ``overwrite`` (a run never replaces what it did not create unasked);
    - an unknown or (without ``allow_lossy``) lossy format; a video file name for image inputs;
    - an image whose header declares more than ``max_pixels`` pixels, or that does not decode;
    - a pair whose sizes do not fit (:func:`check_pair_sizes` with ``resize`` and ``registration``, as
      :func:`fuse_pairs` will be called).

    ``out`` is a folder, or for a single pair a file name with an image suffix (``--out fused.png``), whose
    suffix is then the format (``fmt`` must agree or be None). ``fmt=None`` means png for a folder.
    """
    pairs = find_pairs(ir, vis)
    out = Path(out)
    if is_video(out) and not out.is_dir():
        raise InputError(f"--out {out} names a video file but the inputs are images",
                         fix="pass an output folder (or fused.png for one pair), or fuse two videos into a video")
    out_suffix = out.suffix.lower().lstrip(".")
    as_file = out_suffix in OUTPUT_FORMATS and not out.is_dir()
    if as_file:
        if len(pairs) != 1:
            raise InputError(
                f"--out {out} names one image file but there are {len(pairs)} pairs", fix="pass an output folder"
            )
        if fmt is not None and fmt.lower().lstrip(".") != out_suffix:
            raise InputError(f"--out {out} is a .{out_suffix} file but --format is {fmt}", fix="pass only one of them")
        suffix = output_suffix(out_suffix, allow_lossy)
        folder = out.parent if str(out.parent) else Path(".")
        fused = [out]
        side_by_side = [folder / f"{out.stem}_sbs{suffix}"] if with_side_by_side else []
    else:
        suffix = output_suffix(fmt or "png", allow_lossy)
        folder = out
        fused = [out / f"{pair.name}{suffix}" for pair in pairs]
        side_by_side = [out / f"{pair.name}_sbs{suffix}" for pair in pairs] if with_side_by_side else []
    for source, role in ((Path(ir), "IR"), (Path(vis), "VIS")):
        if source.is_dir():
            source = source.resolve()
            if lies_within(folder, source) or lies_within(source, folder):
                raise InputError(
                    f"output folder {folder} overlaps the {role} input folder {source}",
                    fix="write the fused images to a folder of their own (--out)",
                )
    inputs = {p.resolve() for pair in pairs for p in (pair.ir, pair.vis)}
    outputs = [*fused, *side_by_side]
    for target in outputs:
        if target.resolve() in inputs:
            raise InputError(f"output {target} is one of the input images", fix="choose another --out")
        if target.is_dir():
            raise InputError(f"output {target} is a folder", fix="move it away or choose another --out")
    # The folder must take new files (a read-only mount, /proc) before any model loads, not after the fusion.
    check_writable(outputs[0], "--out")
    existing = [target for target in outputs if target.exists() or target.is_symlink()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        shown = ", ".join(str(p) for p in existing[:3]) + more
        raise InputError(
            f"{len(existing)} output file(s) already exist: {shown}",
            fix="pass --overwrite to replace them, or choose another --out",
        )
    for pair in pairs:
        image_size(pair.ir, "IR", max_pixels)
        image_size(pair.vis, "VIS", max_pixels)
    # A full decode of every image: a file whose header is fine but whose data is cut or corrupt would otherwise
    # fail late in the run and discard every pair fused before it (all or nothing). Decoding twice costs a few
    # milliseconds a pair; fusing costs a hundred or more.
    for pair in pairs:
        check_pair_sizes(pair, read_image(pair.ir, "IR", max_pixels).shape,
                         read_image(pair.vis, "VIS", max_pixels).shape, resize=resize, registration=registration)
    return FuseJob(pairs, folder, fused, side_by_side, overwrite, max_pixels)


def check_pair_sizes(pair: ImagePair, ir_shape: tuple[int, ...], vis_shape: tuple[int, ...], *, resize: bool,
                     registration: Registration | None) -> None:
    """The one size rule of a pair of files (shapes HxW[xC]): a calibration's sizes, else one size unless IR is to
    be resized to its VIS partner's."""
    if registration is not None:
        registration.check_sizes(ir_shape, vis_shape, f"pair {pair.name}")
    elif not resize and ir_shape[:2] != vis_shape[:2]:
        raise InputError(
            f"pair {pair.name}: IR {pair.ir} is {ir_shape[1]}x{ir_shape[0]} but VIS {pair.vis} is "
            f"{vis_shape[1]}x{vis_shape[0]}",
            fix="register the pair to one size, or pass --resize-ir",
        )


def fuse_pairs(
    fuser: Fuser,
    job: FuseJob,
    *,
    resize: bool = False,
    registration: Registration | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Fuse ``job.pairs`` in groups of ``fuser.batch_size`` into ``job``'s output paths; returns what was written.

    ``registration`` (a calibration, ``maefuse-calibrate``) warps each IR image into its VIS partner's geometry
    first; every pair must then have the calibration's IR and VIS sizes.

    All-or-nothing without touching what was there: every output is staged under a temporary name in the output
    folder (``atomic.TEMP_PREFIX``) and the staged files are renamed into place only after every pair fused. A
    failure or Ctrl-C removes the staged files (and the output folder if this run created it and it is empty);
    files that existed before stay as they were. Leftovers of a killed earlier run are removed first.
    """
    folder = job.folder
    created_folder = not folder.exists()
    remove_leftovers(folder)
    staged: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        for part in batch_slices(len(job.pairs), fuser.batch_size):  # read only what one call fuses
            indices = range(len(job.pairs))[part]
            chunk = job.pairs[part]
            images = [(read_image(p.ir, "IR", job.max_pixels), read_image(p.vis, "VIS", job.max_pixels))
                      for p in chunk]
            for pair, (ir, vis) in zip(chunk, images, strict=True):  # the files may have changed since the plan
                check_pair_sizes(pair, ir.shape, vis.shape, resize=resize, registration=registration)
            if registration is not None:
                images = [(registration.warp(ir), vis) for ir, vis in images]
            if resize:
                images = [(_resize_to(ir, vis), vis) for ir, vis in images]
            fused = fuser.fuse_batch(images, names=[p.name for p in chunk])
            for index, (ir, vis), image in zip(indices, images, fused, strict=True):
                staged.append(_stage(job.fused[index], image))
                if job.side_by_side:
                    staged.append(_stage(job.side_by_side[index], side_by_side(ir, vis, image)))
            if progress is not None:
                progress(len(chunk))
        written = []
        while staged:
            tmp, target = staged[0]
            move_into_place(tmp, target)
            staged.pop(0)
            written.append(target)
        return written
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if created_folder:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never removes what someone else put there meanwhile
        raise


def _stage(target: Path, image: np.ndarray) -> tuple[Path, Path]:
    """Encode ``image`` for ``target`` into a new temporary file beside it; (temporary, target)."""
    encoded = encode_image(target, image)
    tmp = new_temp_file(target)
    try:
        encoded.tofile(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp, target


def _resize_to(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    if ir.shape[:2] == vis.shape[:2]:
        return ir
    return cv2.resize(ir, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_LINEAR)
