"""Reading, pairing and writing image files, with one-line errors that name the file.

Arrays cross this module's boundary in OpenCV's layout: HxW (grey) or HxWxC with C = 3 (BGR) or 4 (BGRA),
dtype uint8 or uint16, exactly as stored in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def read_image(path: str | os.PathLike[str], role: str = "image") -> np.ndarray:
    """Read ``path`` unchanged (bit depth and channels as stored). ``role`` names it in errors ("IR", "VIS")."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} file not found: {path}", fix="check the path")
    if not path.is_file():
        raise InputError(f"{role} path is not a file: {path}", fix="pass an image file or use a folder argument")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(
            f"{role} file is not a readable image: {path}",
            fix=f"pass a PNG, JPEG, BMP or TIFF image ({', '.join(IMAGE_SUFFIXES)})",
        )
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"{role} image {path} has dtype {image.dtype}", fix="save it as 8-bit or 16-bit integer image"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise InputError(
            f"{role} image {path} has {image.shape[2]} channels", fix="use a grey, BGR or BGRA image"
        )
    return image


def write_image(path: str | os.PathLike[str], image: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Encode ``image`` (HxW or HxWx3 BGR, uint8) by ``path``'s suffix and write it atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"unknown output image format {suffix!r} for {path}", fix="use .png, .tif, .bmp or .jpg")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise InputError(f"OpenCV could not encode {path}", fix="use .png output")
    with atomic_path(path) as tmp:
        encoded.tofile(tmp)
    return path


@dataclass(frozen=True)
class ImagePair:
    """A registered IR/VIS pair on disk, matched by file stem."""

    name: str
    ir: Path
    vis: Path


def images_by_stem(folder: Path, role: str) -> dict[str, Path]:
    """The images in ``folder`` keyed by file stem; an empty folder or a repeated stem is an error."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            if entry.stem in found:
                raise InputError(
                    f"{role} folder {folder} holds two images named {entry.stem!r} ({found[entry.stem].name}, "
                    f"{entry.name})",
                    fix="keep one image per name",
                )
            found[entry.stem] = entry
    if not found:
        raise InputError(f"{role} folder {folder} holds no images", fix=f"put the {role} images there")
    return found


def find_pairs(ir: str | os.PathLike[str], vis: str | os.PathLike[str]) -> list[ImagePair]:
    """Pair two files, or two folders by file stem (any image format on either side).

    A folder pairing fails when either side is empty or when a name is present on one side only, so that a
    batch job never silently skips images.
    """
    ir, vis = Path(ir), Path(vis)
    for path, role in ((ir, "IR"), (vis, "VIS")):
        if not path.exists():
            raise InputError(f"{role} path not found: {path}", fix="check the path")
    if ir.is_file() and vis.is_file():
        return [ImagePair(vis.stem, ir, vis)]
    if ir.is_dir() != vis.is_dir():
        raise InputError(
            f"IR {ir} and VIS {vis} must both be files or both be folders", fix="pass two files or two folders"
        )
    ir_images, vis_images = images_by_stem(ir, "IR"), images_by_stem(vis, "VIS")
    only_ir = sorted(set(ir_images) - set(vis_images))
    only_vis = sorted(set(vis_images) - set(ir_images))
    if only_ir or only_vis:
        side, names, folder = ("IR", only_ir, vis) if only_ir else ("VIS", only_vis, ir)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        other = "VIS" if side == "IR" else "IR"
        raise InputError(
            f"unmatched names: {side} image(s) {shown} have no {other} partner in {folder}",
            fix="give each pair the same file name in both folders",
        )
    return [ImagePair(stem, ir_images[stem], vis_images[stem]) for stem in sorted(ir_images)]
