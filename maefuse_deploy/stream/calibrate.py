"""Estimating the IR-to-VIS mapping: exactly from point pairs, or automatically from frame pairs.

Thermal and visible intensities do not correspond (a warm road is bright in IR and dark in VIS), but object
boundaries appear in both. The automatic method therefore matches *structure*: each frame becomes a smoothed
gradient-magnitude map (Sobel, then a Gaussian blur that widens the basin of convergence), and OpenCV's ECC
(enhanced correlation coefficient, Evangelidis & Psarakis 2008, ``cv2.findTransformECC``) maximises the zero-mean
normalised correlation of the two maps over the warp, coarse to fine on an image pyramid. ECC is invariant to gain
and offset between the maps, which is what cross-modal gradients need. The start is the size ratio of the frames
(the cameras roughly see the same field), refined by a phase correlation of the coarsest maps for the shift.
With several frame pairs each is estimated separately and the result is the homography through the per-corner
median, which ignores a pair that failed to converge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..processing import ir_to_grey8, vis_to_bgr8
from ..registration import Model, Registration, map_points

ECC_ITERATIONS = 200
ECC_EPSILON = 1e-7
MIN_ECC_CORRELATION = 0.2
LOCAL_NORM_SIGMA = 8.0
STRUCTURE_BLUR = 3.0
SEARCH_SCALE = 1.25  # coarse search: field-of-view ratio within 1/1.25 .. 1.25 of the size ratio
SEARCH_DEGREES = 8.0  # and roll within +-8 degrees


# --- point pairs -----------------------------------------------------------------------------------------------


def read_point_pairs(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """A text file of lines ``ir_x ir_y vis_x vis_y`` (spaces or commas; ``#`` starts a comment) -> two (N, 2)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"point file not found: {path}", fix="check the path")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            values = [float(v) for v in text]
        except ValueError:
            values = []
        if len(values) != 4 or not all(np.isfinite(values)):
            raise InputError(f"{path} line {number}: expected four numbers 'ir_x ir_y vis_x vis_y', got {line!r}",
                             fix="one point pair per line")
        rows.append(values)
    if not rows:
        raise InputError(f"point file {path} holds no point pairs", fix="one 'ir_x ir_y vis_x vis_y' line per point")
    array = np.array(rows, dtype=np.float64)
    return array[:, :2], array[:, 2:]


def from_points(
    ir_points: np.ndarray,
    vis_points: np.ndarray,
    ir_size: tuple[int, int],
    vis_size: tuple[int, int],
    model: Model = "homography",
) -> Registration:
    """Least-squares mapping through (N, 2) IR and VIS pixel coordinates; exact for exact points.

    A homography needs 4 pairs (no three on a line), an affine map 3. Normalised DLT (Hartley) solved by SVD, so
    exact input gives the exact matrix to rounding, with no robust-estimator randomness.
    """
    ir_points = np.asarray(ir_points, dtype=np.float64).reshape(-1, 2)
    vis_points = np.asarray(vis_points, dtype=np.float64).reshape(-1, 2)
    needed = 4 if model == "homography" else 3
    if len(ir_points) != len(vis_points) or len(ir_points) < needed:
        raise InputError(f"a{'n' if model == 'affine' else ''} {model} needs at least {needed} point pairs, got "
                         f"{min(len(ir_points), len(vis_points))}", fix="add point pairs")
    ir_norm, t_ir = _normalising_transform(ir_points)
    vis_norm, t_vis = _normalising_transform(vis_points)
    if model == "affine":
        design = np.hstack([ir_norm, np.ones((len(ir_norm), 1))])
        solution, _, rank, _ = np.linalg.lstsq(design, vis_norm, rcond=None)
        if rank < 3:
            raise InputError("the point pairs are degenerate (collinear)", fix="spread the points over the frame")
        normalised = np.vstack([solution.T, [0.0, 0.0, 1.0]])
    else:
        rows = []
        for (x, y), (u, v) in zip(ir_norm, vis_norm, strict=True):
            rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
            rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
        _, singular, vt = np.linalg.svd(np.array(rows))
        if singular[-2] < 1e-10 * singular[0]:
            raise InputError("the point pairs are degenerate (three or more on a line)",
                             fix="spread the points over the frame")
        normalised = vt[-1].reshape(3, 3)
    matrix = np.linalg.inv(t_vis) @ normalised @ t_ir
    matrix /= matrix[2, 2]
    residual = float(np.mean(np.linalg.norm(map_points(matrix, ir_points) - vis_points, axis=1)))
    return Registration(matrix, ir_size, vis_size, model=model, method="points", residual_px=residual)


def _normalising_transform(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    spread = np.mean(np.linalg.norm(points - centre, axis=1))
    scale = np.sqrt(2.0) / spread if spread > 0 else 1.0
    transform = np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1.0]])
    return (points - centre) * scale, transform


# --- frame pairs ----------------------------------------------------------------------------------------------


def structure_map(image: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Grey or colour frame (uint8/uint16) -> HxW float32 gradient magnitude, blurred and scaled to unit mean."""
    grey = ir_to_grey8(image).astype(np.float32)  # any colour or 16-bit frame to 8-bit grey
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    # Local contrast normalisation: a faint VIS edge in shadow and a strong IR edge weigh alike, so the maps
    # correlate on where edges are rather than on how strong each camera sees them.
    local = cv2.GaussianBlur(magnitude, (0, 0), LOCAL_NORM_SIGMA)
    magnitude = magnitude / (local + 0.1 * float(magnitude.mean()) + 1e-3)
    if blur_sigma > 0:
        magnitude = cv2.GaussianBlur(magnitude, (0, 0), blur_sigma)
    return magnitude


def from_frames(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    model: Model = "homography",
    *,
    levels: int = 4,
    initial: np.ndarray | None = None,
) -> Registration:
    """Estimate the IR-to-VIS mapping from one or more (ir, vis) frame pairs of one rig (OpenCV layouts).

    ``initial`` (3x3, IR -> VIS) replaces the default start (scale by the frame-size ratio).
    """
    if not pairs:
        raise InputError("no frame pairs to calibrate from", fix="pass at least one IR/VIS pair")
    ir_shape, vis_shape = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    for ir, vis in pairs:
        if ir.shape[:2] != ir_shape or vis.shape[:2] != vis_shape:
            raise InputError("calibration frame pairs differ in size", fix="use frames of one camera rig")
    ir_size, vis_size = (ir_shape[1], ir_shape[0]), (vis_shape[1], vis_shape[0])
    estimates, correlations, failures = [], [], []
    for index, (ir, vis) in enumerate(pairs):
        try:
            matrix, correlation = _estimate_pair(ir, vis, model, levels, initial)
        except cv2.error as exc:
            failures.append(f"pair {index}: {str(exc).strip().splitlines()[-1]}")
            continue
        if correlation < MIN_ECC_CORRELATION:
            failures.append(f"pair {index}: structure correlation {correlation:.2f}")
            continue
        estimates.append(matrix)
        correlations.append(correlation)
    if not estimates:
        raise InputError(
            f"automatic calibration did not converge ({'; '.join(failures)})",
            fix="use frames with clear shared edges, more pairs, or point pairs (--points)",
        )
    w, h = ir_size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    mapped = np.stack([map_points(m, corners) for m in estimates])  # (pairs, 4, 2)
    median = np.median(mapped, axis=0)
    spread = float(np.mean(np.linalg.norm(mapped - median, axis=2)))
    combined = from_points(corners, median, ir_size, vis_size, model)
    return Registration(combined.matrix, ir_size, vis_size, model=model, method="ecc-gradient", residual_px=spread,
                        extra={"pairs_used": len(estimates), "pairs_given": len(pairs),
                               "ecc_correlation": round(float(np.median(correlations)), 4)})


def _scale(factor: float) -> np.ndarray:
    return np.diag([factor, factor, 1.0])


def _masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    valid = mask > 0
    if valid.sum() < 100:
        return -1.0
    x, y = a[valid] - a[valid].mean(), b[valid] - b[valid].mean()
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-12))


def _warp_map(ir_map: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    warped = cv2.warpPerspective(ir_map, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpPerspective(np.ones(ir_map.shape, np.uint8), matrix, size, flags=cv2.INTER_NEAREST)
    return warped, mask


def _coarse_search(vis_map: np.ndarray, ir_map: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Best similarity correction of ``start`` (IR map -> VIS map coords) on a grid of scales and rotations.

    ECC converges only near the answer; cameras of a rig differ in field of view and roll by more than that.
    Each (scale, rotation) about the VIS centre gets its shift from a phase correlation of the maps; the candidate
    with the highest masked correlation wins.
    """
    height, width = vis_map.shape
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1.0]])
    best, best_score = start, -2.0
    for scale in np.geomspace(1 / SEARCH_SCALE, SEARCH_SCALE, 9):
        for angle in np.deg2rad(np.linspace(-SEARCH_DEGREES, SEARCH_DEGREES, 9)):
            c, s = np.cos(angle) * scale, np.sin(angle) * scale
            similarity = centre @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.linalg.inv(centre)
            candidate = similarity @ start
            warped, mask = _warp_map(ir_map, candidate, (width, height))
            (dx, dy), _ = cv2.phaseCorrelate(vis_map.astype(np.float64), warped.astype(np.float64))
            candidate = np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1.0]]) @ candidate
            warped, mask = _warp_map(ir_map, candidate, (width, height))
            score = _masked_correlation(vis_map, warped, mask)
            if score > best_score:
                best, best_score = candidate, score
    return best


def _estimate_pair(
    ir: np.ndarray, vis: np.ndarray, model: Model, levels: int, initial: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """One pair -> (3x3 IR->VIS float64, final ECC correlation)."""
    vis_h, vis_w = vis.shape[:2]
    ir_h, ir_w = ir.shape[:2]
    searched = initial is not None
    if initial is None:
        # Same field of view assumed: scale by the size ratio, centres aligned; the coarse search corrects it.
        sx, sy = vis_w / ir_w, vis_h / ir_h
        initial = np.array([[sx, 0, (sx - 1) * 0.5], [0, sy, (sy - 1) * 0.5], [0, 0, 1.0]])
    current = np.asarray(initial, dtype=np.float64)
    vis_full = structure_map(vis, STRUCTURE_BLUR)
    ir_full = structure_map(ir, STRUCTURE_BLUR * ir_w / vis_w)
    # Levels: coarsest first, each halves the resolution (the coarsest is at least 80 pixels across).
    levels = max(1, min(levels, int(np.log2(min(vis_w, vis_h) / 60)) + 1))
    correlation = 0.0
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPSILON)
    for level in reversed(range(levels)):
        factor = 0.5**level
        size = (max(round(vis_w * factor), 8), max(round(vis_h * factor), 8))
        vis_map = cv2.resize(vis_full, size, interpolation=cv2.INTER_AREA)
        ir_map = cv2.resize(ir_full, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        ir_factor = ir_map.shape[1] / ir_w
        # The working map: IR level -> IR full -> VIS full -> VIS level.
        to_level = _scale(factor) @ current @ np.linalg.inv(_scale(ir_factor))
        if not searched:
            to_level = _coarse_search(vis_map, ir_map, to_level)
            searched = True
        warped, mask = _warp_map(ir_map, to_level, size)
        # ECC finds W with warped(W x) ~ vis_map(x) (W: VIS level -> warped-IR level), from the identity.
        # Affine except at the two finest levels: fewer unknowns where the maps are coarse.
        homography = model == "homography" and level <= 1
        motion = cv2.MOTION_HOMOGRAPHY if homography else cv2.MOTION_AFFINE
        warp = np.eye(3, dtype=np.float32) if homography else np.eye(2, 3, dtype=np.float32)
        # Both masks: the objective only counts VIS pixels the warped IR really covers (no zero border).
        correlation, warp = cv2.findTransformECCWithMask(vis_map, warped, np.ones(vis_map.shape, np.uint8), mask,
                                                         warp, motion, criteria, 5)
        step = np.vstack([warp, [0, 0, 1]]) if warp.shape[0] == 2 else warp
        # vis(x) ~ warped(step x) and warped = to_level(IR): IR point p lands at step^-1 to_level p.
        refined = np.linalg.inv(step.astype(np.float64)) @ to_level
        current = np.linalg.inv(_scale(factor)) @ refined @ _scale(ir_factor)
        current /= current[2, 2]
    if model == "affine":
        current[2] = (0.0, 0.0, 1.0)
    return current, float(correlation)


def corner_error(estimated: np.ndarray, truth: np.ndarray, ir_size: tuple[int, int]) -> float:
    """Largest distance (VIS pixels) between where two IR->VIS mappings send the IR frame's corners."""
    w, h = ir_size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    return float(np.max(np.linalg.norm(map_points(estimated, corners) - map_points(truth, corners), axis=1)))


def overlay(registration: Registration, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """A picture to judge a calibration: VIS in grey with the warped IR's edges in red, HxWx3 BGR uint8."""
    warped = registration.warp(ir_to_grey8(ir))
    vis8 = vis_to_bgr8(vis)
    grey = vis8 if vis8.ndim == 2 else cv2.cvtColor(vis8, cv2.COLOR_BGR2GRAY)
    picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    edges = cv2.Canny(warped, 60, 160) > 0
    picture[edges] = (0, 0, 255)
    return picture
