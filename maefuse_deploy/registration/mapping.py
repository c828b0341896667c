"""IR-to-VIS registration: the calibration file (docs/streaming.md) and the warp applied to IR frames.

The mapping takes IR pixel coordinates to VIS pixel coordinates (OpenCV's convention: pixel centres at integer
coordinates, origin top-left). Applying it warps an IR frame (HxW or HxWxC, uint8 or uint16) into the VIS geometry
(``vis_size``), so the pair that reaches the Fuser is aligned and the fused output is in the VIS geometry.
Estimating a mapping lives beside it in ``registration/estimate.py``; this module only loads, saves, checks and
applies one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ..atomic import atomic_path
from ..contract import parse_json
from ..errors import InputError

FORMAT_NAME = "maefuse-registration"
FORMAT_VERSION = 1
Model = Literal["homography", "affine"]
MODELS: tuple[str, ...] = ("homography", "affine")  # saved models; a fitted similarity is saved as affine
INFORMATIVE = ("fitted_model", "corner_uncertainty_px", "corner_uncertainty_note", "coverage", "model_evidence",
               "pairs_used", "pairs_given", "matches", "residual_p90_px")


@dataclass
class Registration:
    """A 3x3 IR-to-VIS mapping (float64, H[2,2] == 1) and the frame sizes it was estimated for ((width, height))."""

    matrix: np.ndarray
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]
    model: Model = "homography"
    method: str = "points"
    residual_px: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.shape != (3, 3):
            raise InputError(f"a registration needs a 3x3 matrix, got shape {matrix.shape}",
                             fix="re-estimate it with maefuse-calibrate")
        if not np.all(np.isfinite(matrix)):
            raise InputError("registration matrix holds NaN or infinite values",
                             fix="re-estimate it with maefuse-calibrate")
        if abs(matrix[2, 2]) < 1e-12:
            raise InputError("registration matrix has H[2][2] == 0", fix="re-estimate it with maefuse-calibrate")
        matrix = matrix / matrix[2, 2]
        if abs(np.linalg.det(matrix)) < 1e-12:
            raise InputError("registration matrix is singular", fix="re-estimate it with maefuse-calibrate")
        if self.model not in MODELS:
            raise InputError(f"unknown registration model {self.model!r}", fix=f"use one of {', '.join(MODELS)}")
        if self.model == "affine":
            if not np.allclose(matrix[2, :2], 0.0, atol=1e-12):
                raise InputError("an affine registration must have the last row [0, 0, 1]")
            matrix[2] = (0.0, 0.0, 1.0)
        for name in ("ir_size", "vis_size"):
            given = getattr(self, name)
            # Whole numbers only: int() would have made 640.5 a 640-pixel frame, unsaid.
            size = tuple(given) if isinstance(given, (tuple, list)) else ()
            if (len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
                    or min(size) < 1):
                raise InputError(f"registration {name} must be [width, height] in whole pixels > 0, got {given}",
                                 fix="re-estimate it with maefuse-calibrate")
            setattr(self, name, tuple(int(v) for v in size))
        self.matrix = matrix

    # --- checking and applying -------------------------------------------------------------------------------

    def check_sizes(self, ir_shape: tuple[int, ...], vis_shape: tuple[int, ...], where: str = "the stream") -> None:
        """Raise unless the IR frame (HxW[xC]) and the VIS frame have the sizes this calibration was made for."""
        ir_size = (int(ir_shape[1]), int(ir_shape[0]))
        vis_size = (int(vis_shape[1]), int(vis_shape[0]))
        if ir_size != self.ir_size or vis_size != self.vis_size:
            raise InputError(
                f"calibration is for IR {_wh(self.ir_size)} -> VIS {_wh(self.vis_size)} but {where} has IR "
                f"{_wh(ir_size)} and VIS {_wh(vis_size)}",
                fix="calibrate these cameras at these frame sizes (maefuse-calibrate)",
            )

    def warp(self, ir: np.ndarray) -> np.ndarray:
        """IR frame (HxW or HxWxC, uint8/uint16, ``ir_size``) -> the same dtype at ``vis_size`` in VIS geometry.

        Bilinear; VIS pixels the IR camera does not see are 0.
        """
        if (ir.shape[1], ir.shape[0]) != self.ir_size:
            raise InputError(
                f"IR frame is {ir.shape[1]}x{ir.shape[0]} but the calibration is for {_wh(self.ir_size)}",
                fix="calibrate at this IR frame size (maefuse-calibrate)",
            )
        if self.model == "affine":
            return cv2.warpAffine(ir, self.matrix[:2], self.vis_size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.warpPerspective(ir, self.matrix, self.vis_size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) IR pixel coordinates -> (N, 2) VIS pixel coordinates, float64."""
        return map_points(self.matrix, points)

    def ir_corners_in_vis(self) -> np.ndarray:
        """Where the IR frame's four corner pixels land in the VIS frame, (4, 2) float64."""
        return self.map_points(frame_corners(self.ir_size))

    # --- the file ----------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "homography": [[float(v) for v in row] for row in self.matrix],
            "model": self.model,
            "ir_size": list(self.ir_size),
            "vis_size": list(self.vis_size),
            "method": self.method,
            "residual_px": round(float(self.residual_px), 4),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data.update(self.extra)
        return data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibration JSON atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 projective matrix to (N, 2) points; returns (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(matrix, dtype=np.float64).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def frame_corners(size: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of a (width, height) frame, clockwise from top-left, (4, 2) float64."""
    w, h = size
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def load_registration(path: str | os.PathLike[str]) -> Registration:
    """Read a calibration JSON (docs/streaming.md); every malformed field is a one-line error naming the file."""
    path = Path(path)
    fix = "write it with maefuse-calibrate (format: docs/streaming.md)"
    if not path.is_file():
        raise InputError(f"calibration file not found: {path}", fix="check the path, or run maefuse-calibrate")
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"calibration file {path} is not valid JSON: {exc}", fix=fix) from exc
    if not isinstance(data, dict):
        raise InputError(f"calibration file {path} must hold a JSON object", fix=fix)
    if data.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise InputError(f"calibration file {path} has format {data.get('format')!r}, not {FORMAT_NAME!r}", fix=fix)
    version = data.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(f"calibration file {path} has version {version!r}; this reader knows {FORMAT_VERSION}",
                         fix="update maefuse-deploy")
    missing = [key for key in ("homography", "ir_size", "vis_size") if key not in data]
    if missing:
        raise InputError(f"calibration file {path} lacks {', '.join(missing)}", fix=fix)
    try:
        matrix = np.array(data["homography"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"calibration file {path} has a malformed homography: {exc}", fix=fix) from exc
    # The sizes go to Registration as written: it takes whole numbers only (int() here made 640.5 a 640).
    ir_size, vis_size = data["ir_size"], data["vis_size"]
    residual = data.get("residual_px", 0.0)
    # Informative fields a later check or report shows again (files written before them load without).
    extra = {key: data[key] for key in INFORMATIVE if key in data}
    try:
        return Registration(
            matrix,
            ir_size,
            vis_size,
            model=data.get("model", "homography"),
            method=str(data.get("method", "unknown")),
            residual_px=float(residual) if isinstance(residual, int | float) and math.isfinite(residual) else 0.0,
            extra=extra,
        )
    except InputError as exc:
        raise InputError(f"calibration file {path}: {exc}") from exc
