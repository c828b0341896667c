"""Reading, pairing and writing image files, with one-line errors that name the file.

Arrays cross this module's boundary in OpenCV's layout: HxW (grey) or HxWxC with C = 3 (BGR) or 4 (BGRA),
dtype uint8 or uint16, exactly as stored in the file.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path
from .contract import MAX_FRAME_PIXELS, megapixels
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
# What maefuse-fuse can write: formats OpenCV encodes losslessly for 8-bit grey and BGR (plus the lossy ones,
# allowed with --lossy). PGM/PPM are left out: each takes only one of grey or colour.
OUTPUT_FORMATS = ("png", "tif", "tiff", "bmp", "jpg", "jpeg", "webp")
# Largest image read by default (contract.MAX_FRAME_PIXELS: 100 megapixels); raise it with max_pixels=
# (maefuse-fuse --max-pixels).
DEFAULT_MAX_PIXELS = MAX_FRAME_PIXELS


def header_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding the pixels; None for other formats.

    Reads only the first bytes (PNG: IHDR; BMP: the info header) or walks the JPEG marker segments to the first
    start-of-frame. A header that cannot be parsed gives None: the decoder then reports the file as unreadable.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:2] == b"\xff\xd8":
        position = 2
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                return None
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                position += 2
                continue
            (length,) = struct.unpack(">H", data[position + 2 : position + 4])
            # Start of frame: every SOFn except DHT (C4), JPG (C8) and DAC (CC).
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if position + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", data[position + 5 : position + 9])
                return width, height
            position += 2 + length
    return None


def check_pixels(width: int, height: int, path: Path, role: str, max_pixels: int | None) -> None:
    """Refuse an image larger than ``max_pixels`` (None: no cap) before anything decodes it."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"{role} image {path} is {width}x{height} ({megapixels(width * height)}), over the limit of "
            f"{megapixels(max_pixels)}",
            fix="check the file (a corrupt or hostile header?), or raise the limit with --max-pixels",
        )


def image_size(
    path: str | os.PathLike[str], role: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | None:
    """(width, height) of an image file from its header (PNG, JPEG, BMP), checked against ``max_pixels``.

    None when the format has no header this reads (TIFF, WebP, PNM: OpenCV's own pixel limit applies to them).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)  # JPEG metadata segments may come before the frame header
    except OSError as exc:
        raise InputError(f"{role} file cannot be read: {path}: {exc.strerror or exc}", fix="check the path") from exc
    size = header_size(head)
    if size is not None:
        check_pixels(*size, path, role, max_pixels)
    return size


# What a decode prints to fd 2 (OpenCV's log level does not reach the codec libraries): libpng's and libjpeg's own
# lines, and OpenCV's log lines ("[ERROR:0@3.8] global grfmt_tiff.cpp:117 TIFF_Error ...").
_CODEC_LINE = re.compile(
    r"^(?:libpng |Corrupt JPEG|Premature end of JPEG|Invalid SOS|Bogus |\[\s*(?:ERROR|WARN|INFO)\b)")
_OPENCV_PREFIX = re.compile(r"^\[[^\]]*\]\s*(?:global\s+\S+:\d+\s+)?")
_OPENCV_ERROR = re.compile(r"error: \(-?\d+:[^)]*\)\s*(.*?)(?: in function '[^']*')?$")
_DECODE_LOCK = threading.Lock()


class DecodeWarning(UserWarning):
    """An image decoded although its decoder reported damage (a cut or corrupt JPEG or TIFF): it may hold grey or
    smeared blocks."""


def _codec_reason(line: str) -> str:
    """A decoder's line without OpenCV's log prefix and source location, at most 160 characters."""
    match = _OPENCV_ERROR.search(line)
    text = match.group(1) if match else _OPENCV_PREFIX.sub("", line)
    return " ".join(text.split())[:160]


def _decode(data: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """cv2.imdecode (unchanged depth and channels) with what the decoders print to fd 2 held back, so that a bad file
    is one line with the decoder's reason in it: (image or None, the decoder's last line or None). Anything else
    written to fd 2 meanwhile (another thread's output) is passed on after the decode."""
    with _DECODE_LOCK, tempfile.TemporaryFile() as captured:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2: nothing to hold back
            saved = None
        try:
            if saved is not None:
                os.dup2(captured.fileno(), 2)
            try:
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            except cv2.error:  # OpenCV refuses some malformed files (or sizes over its own limit) by raising
                image = None
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
        captured.seek(0)
        lines = [line for line in captured.read().decode(errors="replace").splitlines() if line.strip()]
    codec = [line for line in lines if _CODEC_LINE.match(line)]
    other = [line for line in lines if not _CODEC_LINE.match(line)]
    if other:
        sys.stderr.write("\n".join(other) + "\n")
    return image, (_codec_reason(codec[-1]) if codec else None)


def read_image(
    path: str | os.PathLike[str], role: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read ``path`` unchanged (bit depth and channels as stored). ``role`` names it in errors ("IR", "VIS").

    An image whose header declares more than ``max_pixels`` pixels is refused before it is decoded, so a small
    file that claims a huge size cannot exhaust memory.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} file not found: {path}", fix="check the path")
    if not path.is_file():
        raise InputError(f"{role} path is not a file: {path}", fix="pass an image file or use a folder argument")
    data = np.fromfile(path, dtype=np.uint8)
    size = header_size(data.data)
    if size is not None:
        check_pixels(*size, path, role, max_pixels)
    image, reason = _decode(data) if data.size else (None, None)
    if image is None:
        raise InputError(
            f"{role} file is not a readable image: {path}" + (f" ({reason})" if reason else ""),
            fix=f"pass a PNG, JPEG, BMP or TIFF image ({', '.join(IMAGE_SUFFIXES)})",
        )
    if reason:  # decoded, but the decoder saw damage: said in one line, not as the library's lines
        # stacklevel 1: one warning site, so Python's registry says it once per file however often it is read.
        warnings.warn(f"{role} image {path} decoded with a complaint from its decoder: {reason}", DecodeWarning,
                      stacklevel=1)
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


def encode_image(path: str | os.PathLike[str], image: np.ndarray, jpeg_quality: int = 95) -> np.ndarray:
    """Encode ``image`` (HxW or HxWx3 BGR, uint8) in the format ``path``'s suffix names; the file's bytes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix.lstrip(".") not in OUTPUT_FORMATS:
        raise InputError(
            f"unknown output image format {suffix!r} for {path}", fix=f"use one of {', '.join(OUTPUT_FORMATS)}"
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    try:
        ok, encoded = cv2.imencode(suffix, image, params)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"OpenCV could not encode {path}", fix="use .png output")
    return encoded


def write_image(path: str | os.PathLike[str], image: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Encode ``image`` (HxW or HxWx3 BGR, uint8) by ``path``'s suffix and write it atomically."""
    path = Path(path)
    encoded = encode_image(path, image, jpeg_quality)
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
