"""Estimating the IR-to-VIS mapping: exactly from point pairs, or automatically from frame pairs.

Thermal and visible intensities do not correspond (a warm road is bright in IR and dark in VIS), but object
boundaries appear in both. The automatic method therefore matches *structure*, in small blocks, and fits the
mapping to the block displacements:

1. Each frame becomes three structure channels: the gradient magnitude divided by its local mean (a faint VIS
   edge in shadow weighs like a strong IR edge), and the gradient orientation as a doubled angle
   (cos 2θ, sin 2θ), which is the same whether an edge is dark-to-bright or bright-to-dark (thermal contrast is
   often the reverse of visible contrast).
2. A coarse search over scale and roll (phase correlation for the shift) gives candidate starts; the one under
   which the first stage's blocks match best is kept.
3. On a pyramid (1/4, 1/2, full resolution) the IR frame is warped into the VIS frame by the current estimate; a
   grid of blocks of the warped IR is located in the VIS frame by normalised cross-correlation summed over the
   channels, with sub-pixel peaks; weak (score < 0.3) or ambiguous (a second peak within 0.05) blocks are dropped.
4. The mapping is fitted to all block matches of all frame pairs at once by a robust geometric least squares
   (reprojection error in VIS pixels, Cauchy weights re-estimated from the residuals, Levenberg-Marquardt):
   a similarity first, then affine, then the requested model. In a scene with depth the homography's two
   perspective terms also absorb part of the parallax (a ground plane is itself a homography), so from one
   frame pair they are the least certain part; pairs of different scenes average that out.

Every step is deterministic and works in the VIS frame on the warped IR, so the estimate follows a known change of
the IR geometry exactly (tests/test_registration.py measures that on real pairs). A real scene is not one plane:
objects at other depths shift by their parallax, which is why the median block residual is reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from scipy.optimize import least_squares

from ..errors import InputError
from ..processing import ir_to_grey8, vis_to_bgr8
from .mapping import Model, Registration, frame_corners, map_points

LOCAL_NORM_SIGMA = 8.0
STRUCTURE_BLUR = 3.0  # coarse search maps only: a wide basin for the phase correlation
CHANNEL_BLUR = 1.0  # block-matching channels: little smoothing, sharp peaks
SEARCH_SCALE = 1.25  # coarse search: field-of-view ratio within 1/1.25 .. 1.25 of the size ratio
SEARCH_DEGREES = 8.0  # and roll within +-8 degrees
MIN_BLOCK_SCORE = 0.3  # mean normalised cross-correlation over the channels
AMBIGUITY_MARGIN = 0.05  # a second peak (2+ px away) this close to the best makes a block ambiguous
CAUCHY_WIDTH = 2.5  # robust scale: residuals past 2.5x the (median-based) spread weigh less and less
MIN_MATCHES = 12
COARSE_CANDIDATES = 16  # coarse-search winners tried by the first block-matching stage (4 miss on night frames)
REFERENCE_WIDTH = 640  # STAGES' factors are for VIS frames this wide; others scale them (_stages)
MAX_UNCERTAINTY_PX = 2.0  # refuse an estimate whose expected error at an output corner is larger
POINT_DRAWS = 200  # points_uncertainty: draws from the least-squares covariance, mapped to the corners
UNCERTAINTY_CELL = 64  # VIS px: the jackknife's unit, larger than a block (48 px) so overlapping blocks go together
COVERAGE_GRID = 4  # coverage: the share of a 4x4 grid of the VIS frame's cells holding a match
HOMOGRAPHY_COVERAGE = 0.75  # "auto" fits perspective terms only to matches in 12 of the 16 cells or more
SUPPORT = 2.0  # "auto" takes a richer model when it moves the corners by more than 2x its own uncertainty
Transform = Literal["auto", "similarity", "affine", "homography"]
TRANSFORMS: tuple[str, ...] = ("auto", "similarity", "affine", "homography")
FITTED_MODELS = ("similarity", "affine", "homography")  # simplest first: the order "auto" climbs
CORNER_NAMES = ("top_left", "top_right", "bottom_right", "bottom_left")  # frame_corners' order


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
    model: Transform = "homography",
    *,
    max_uncertainty_px: float | None = None,
) -> Registration:
    """Least-squares mapping through (N, 2) IR and VIS pixel coordinates; exact for exact points.

    A homography needs 4 pairs (no three on a line), an affine map 3, a similarity 2; "auto" is the homography
    (point pairs are placed over the frame on purpose: nothing to extrapolate). Normalised DLT (Hartley) solved by
    SVD, so exact input gives the exact matrix to rounding, with no robust-estimator randomness. Points outside
    their frame (pixel centres -0.5 .. size - 0.5, +-1 px for other corner conventions) are an error: they were
    given for another frame size. The corner uncertainty comes from the residuals (``points_uncertainty``);
    above ``max_uncertainty_px`` the estimate is refused.
    """
    ir_points = np.asarray(ir_points, dtype=np.float64).reshape(-1, 2)
    vis_points = np.asarray(vis_points, dtype=np.float64).reshape(-1, 2)
    fitted = "homography" if model == "auto" else model
    for points, size, camera in ((ir_points, ir_size, "IR"), (vis_points, vis_size, "VIS")):
        outside = np.any((points < -1.0) | (points > np.array(size, dtype=np.float64)), axis=1)
        if outside.any():
            x, y = points[int(np.argmax(outside))]
            option = f"--{camera.lower()}-size {size[0]}x{size[1]}"
            raise InputError(f"{int(outside.sum())} {camera} point(s) lie outside the {camera} frame ({option}), "
                             f"e.g. ({x:g}, {y:g})", fix=f"give points in pixels of the {size[0]}x{size[1]} frames, "
                             f"or the frame size the points were taken at ({option.split()[0]})")
    needed = {"homography": 4, "affine": 3, "similarity": 2}[fitted]
    if len(ir_points) != len(vis_points) or len(ir_points) < needed:
        raise InputError(f"a{'n' if fitted == 'affine' else ''} {fitted} needs at least {needed} point pairs, got "
                         f"{min(len(ir_points), len(vis_points))}", fix="add point pairs")
    ir_norm, t_ir = _normalising_transform(ir_points)
    vis_norm, t_vis = _normalising_transform(vis_points)
    if fitted == "homography":
        rows = []
        for (x, y), (u, v) in zip(ir_norm, vis_norm, strict=True):
            rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
            rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
        _, singular, vt = np.linalg.svd(np.array(rows))
        if singular[-2] < 1e-10 * singular[0]:
            raise InputError("the point pairs are degenerate (three or more on a line)",
                             fix="spread the points over the frame")
        normalised = vt[-1].reshape(3, 3)
    else:
        if fitted == "affine":
            design = np.hstack([ir_norm, np.ones((len(ir_norm), 1))])
            solution, _, rank, _ = np.linalg.lstsq(design, vis_norm, rcond=None)
            full = rank >= 3
            rows2 = solution.T
        else:  # u = a x - b y + tx, v = b x + a y + ty
            x, y = ir_norm[:, 0], ir_norm[:, 1]
            one, zero = np.ones_like(x), np.zeros_like(x)
            design = np.vstack([np.column_stack([x, -y, one, zero]), np.column_stack([y, x, zero, one])])
            (sa, sb, tx, ty), _, rank, _ = np.linalg.lstsq(design, vis_norm.T.ravel(), rcond=None)
            full = rank >= 4
            rows2 = np.array([[sa, -sb, tx], [sb, sa, ty]])
        if not full:
            raise InputError("the point pairs are degenerate (collinear)", fix="spread the points over the frame")
        normalised = np.vstack([rows2, [0.0, 0.0, 1.0]])
    matrix = np.linalg.inv(t_vis) @ normalised @ t_ir
    matrix /= matrix[2, 2]
    residual = float(np.mean(np.linalg.norm(map_points(matrix, ir_points) - vis_points, axis=1)))
    uncertainty = points_uncertainty(matrix, fitted, ir_points, vis_points, ir_size, vis_size)
    extra: dict[str, Any] = {"fitted_model": fitted, "corner_uncertainty_px": uncertainty}
    if uncertainty is None:
        extra["corner_uncertainty_note"] = (f"{len(ir_points)} point pairs determine the {fitted} exactly: no "
                                            "residual to estimate its error from; add point pairs")
    elif max_uncertainty_px is not None and uncertainty["max"] > max_uncertainty_px:
        raise InputError(f"calibration too uncertain: the point pairs leave an expected error of "
                         f"{uncertainty['max']:.2f} px at the output's corners (limit {max_uncertainty_px:g} px; "
                         f"mean reprojection error {residual:.2f} px)",
                         fix="check the point pairs (a swapped or mistyped pair), add point pairs near the corners")
    saved: Model = "homography" if fitted == "homography" else "affine"
    return Registration(matrix, ir_size, vis_size, model=saved, method="points", residual_px=residual, extra=extra)


def points_uncertainty(matrix: np.ndarray, model: str, ir_points: np.ndarray, vis_points: np.ndarray,
                       ir_size: tuple[int, int], vis_size: tuple[int, int]) -> dict[str, float] | None:
    """Expected corner error of a point-pair fit from its residuals: hand-placed points are independent
    measurements, so the least-squares covariance (residual variance times (J^T J)^-1) holds; 200 seeded draws
    from it are mapped to the output's corners. ``None`` when the points determine the model exactly."""
    fit = _linearise(matrix, model, ir_points, vis_points, np.ones(len(ir_points)), ir_size, vis_size)
    redundancy = fit.residual.size - fit.params.size
    if redundancy <= 0:
        return None
    variance = float(fit.residual @ fit.residual) / redundancy
    covariance = variance * np.linalg.pinv(fit.jacobian.T @ fit.jacobian)
    draws = np.random.default_rng(0).multivariate_normal(np.zeros(fit.params.size), covariance,
                                                         POINT_DRAWS)
    return corner_uncertainty(corner_offsets(fit, draws, ir_size, vis_size))


def _normalising_transform(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    spread = np.mean(np.linalg.norm(points - centre, axis=1))
    scale = np.sqrt(2.0) / spread if spread > 0 else 1.0
    transform = np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1.0]])
    return (points - centre) * scale, transform


# --- frame pairs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One pyramid level of the block matching: frames scaled by ``factor``, blocks of 2*half pixels every
    ``stride`` pixels, each searched within +-``search`` pixels, ``rounds`` times warp-match-fit."""

    factor: float
    model: Literal["similarity", "affine", "target"]  # target: the requested model
    search: int
    half: int
    stride: int
    rounds: int


STAGES = (
    Stage(0.25, "similarity", search=8, half=16, stride=8, rounds=3),  # +-32 full-resolution pixels
    Stage(0.5, "affine", search=6, half=16, stride=10, rounds=2),
    Stage(0.5, "target", search=6, half=16, stride=10, rounds=2),
    Stage(1.0, "target", search=5, half=24, stride=16, rounds=3),
)


def structure_map(image: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Grey or colour frame (uint8/uint16) -> HxW float32 gradient magnitude over its local mean, blurred."""
    gx, gy = _gradients(ir_to_grey8(image))
    magnitude = _normalised_magnitude(gx * gx + gy * gy)
    return cv2.GaussianBlur(magnitude, (0, 0), blur_sigma) if blur_sigma > 0 else magnitude


def _gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grey32 = grey.astype(np.float32)
    return cv2.Sobel(grey32, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey32, cv2.CV_32F, 0, 1, ksize=3)


def _normalised_magnitude(energy: np.ndarray) -> np.ndarray:
    """Squared gradient -> magnitude over its local mean: a faint VIS edge in shadow weighs like a strong IR edge."""
    magnitude = np.sqrt(energy)
    local = cv2.GaussianBlur(magnitude, (0, 0), LOCAL_NORM_SIGMA)
    return magnitude / (local + 0.1 * float(magnitude.mean()) + 1e-3)


def _structure_channels(grey: np.ndarray, blur_sigma: float) -> list[np.ndarray]:
    """HxW uint8 grey -> [magnitude, cos 2θ, sin 2θ] float32 HxW maps (see the module docstring)."""
    gx, gy = _gradients(grey)
    energy = gx * gx + gy * gy
    magnitude = _normalised_magnitude(energy)
    # The orientation of weak gradients is noise: the median energy damps it (a per-frame scale, so gain-free).
    damping = float(np.median(energy)) + 1e-3
    cos2 = (gx * gx - gy * gy) / (energy + damping)
    sin2 = 2.0 * gx * gy / (energy + damping)
    if blur_sigma <= 0:
        return [magnitude, cos2, sin2]
    return [cv2.GaussianBlur(channel, (0, 0), blur_sigma) for channel in (magnitude, cos2, sin2)]


def _match_blocks(vis_channels: list[np.ndarray], ir_channels: list[np.ndarray], covered: np.ndarray,
                  stage: Stage) -> np.ndarray:
    """Locate blocks of the warped IR in the VIS frame -> (N, 5) float64 rows (x, y, vis_x, vis_y, score).

    (x, y) is a block centre in the warped IR, (vis_x, vis_y) where it lies in the VIS frame; all at this level.
    """
    height, width = vis_channels[0].shape
    half, search = stage.half, stage.search
    rows = []
    for y in range(half + search, height - half - search + 1, stage.stride):
        for x in range(half + search, width - half - search + 1, stage.stride):
            if not covered[y - half:y + half, x - half:x + half].all():
                continue  # the block reaches past the IR frame's edge
            score = np.zeros((2 * search + 1, 2 * search + 1), np.float32)
            for vis_map, ir_map in zip(vis_channels, ir_channels, strict=True):
                block = ir_map[y - half:y + half, x - half:x + half]
                if float(cv2.meanStdDev(block)[1][0, 0]) < 1e-4:  # numpy's std is 20x slower here
                    break  # flat: no structure to locate
                window = vis_map[y - half - search:y + half + search, x - half - search:x + half + search]
                score += cv2.matchTemplate(window, block, cv2.TM_CCOEFF_NORMED)
            else:
                score /= len(vis_channels)
                iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
                best = float(score[iy, ix])
                if best < MIN_BLOCK_SCORE or iy in (0, 2 * search) or ix in (0, 2 * search):
                    continue  # weak, or the true peak may lie past the search window
                others = score.copy()
                others[max(iy - 2, 0):iy + 3, max(ix - 2, 0):ix + 3] = -1.0
                if float(others.max()) > best - AMBIGUITY_MARGIN:
                    continue  # repeated structure (windows, railings): two places fit about as well
                rows.append((x, y, x + _peak_offset(score[iy, :], int(ix)) - search,
                             y + _peak_offset(score[:, ix], int(iy)) - search, best))
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _peak_offset(profile: np.ndarray, index: int) -> float:
    """Sub-pixel position of a peak: the vertex of the parabola through it and its two neighbours."""
    left, centre, right = (float(v) for v in profile[index - 1:index + 2])
    curvature = left - 2.0 * centre + right
    return index + 0.5 * (left - right) / curvature if curvature < 0 else float(index)


def _normaliser(size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates of a (width, height) frame -> centred, half-width 1 (conditions the fit)."""
    width, height = size
    scale = 2.0 / width
    return np.array([[scale, 0, -scale * width / 2], [0, scale, -scale * height / 2], [0, 0, 1.0]])


def _matrix(params: np.ndarray, model: str) -> np.ndarray:
    """Parameters as offsets from the identity (normalised coordinates) -> 3x3."""
    p = params
    if model == "similarity":
        return np.array([[1 + p[0], -p[1], p[2]], [p[1], 1 + p[0], p[3]], [0, 0, 1.0]])
    bottom = [p[6], p[7], 1.0] if model == "homography" else [0.0, 0.0, 1.0]
    return np.array([[1 + p[0], p[1], p[2]], [p[3], 1 + p[4], p[5]], bottom])


def _parameters(matrix: np.ndarray, model: str) -> np.ndarray:
    """The inverse of ``_matrix`` (projected onto ``model``): a start for the fit."""
    m = matrix / matrix[2, 2]
    if model == "similarity":
        return np.array([(m[0, 0] + m[1, 1]) / 2 - 1, (m[1, 0] - m[0, 1]) / 2, m[0, 2], m[1, 2]])
    affine = [m[0, 0] - 1, m[0, 1], m[0, 2], m[1, 0], m[1, 1] - 1, m[1, 2]]
    return np.array(affine + ([m[2, 0], m[2, 1]] if model == "homography" else []))


@dataclass(frozen=True)
class Fit:
    """A robust fit of one model to the matches: the 3x3 IR -> VIS matrix, each match's residual (VIS px), and
    what the uncertainty needs (parameters, unweighted residuals and their Jacobian, final weights; normalised
    coordinates, see ``_normaliser``)."""

    model: str
    matrix: np.ndarray
    distance: np.ndarray
    params: np.ndarray
    residual: np.ndarray  # (2N,) mapped minus target, normalised VIS units
    jacobian: np.ndarray  # (2N, k)
    weights: np.ndarray  # (N,)


def fit_mapping(ir_points: np.ndarray, vis_points: np.ndarray, weights: np.ndarray, model: str,
                ir_size: tuple[int, int], vis_size: tuple[int, int],
                start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Robust least-squares IR->VIS mapping through (N, 2) pixel matches -> (3x3, per-match residual in VIS px).

    The error is geometric (VIS pixels), not algebraic; Cauchy weights (iteratively re-weighted) let matches on
    another depth plane or wrong matches count less. ``model``: similarity, affine or homography.
    """
    fit = _robust_fit(ir_points, vis_points, weights, model, ir_size, vis_size, start)
    return fit.matrix, fit.distance


def _robust_fit(ir_points: np.ndarray, vis_points: np.ndarray, weights: np.ndarray, model: str,
                ir_size: tuple[int, int], vis_size: tuple[int, int], start: np.ndarray | None = None) -> Fit:
    to_ir, to_vis = _normaliser(ir_size), _normaliser(vis_size)
    source = map_points(to_ir, ir_points)
    target = map_points(to_vis, vis_points)
    pixels = vis_size[0] / 2.0  # normalised VIS unit -> pixels
    initial = np.eye(3) if start is None else to_vis @ start @ np.linalg.inv(to_ir)
    params = _parameters(initial, model)
    robust = weights.astype(np.float64).copy()

    def error(p: np.ndarray) -> np.ndarray:
        return (map_points(_matrix(p, model), source) - target).ravel()

    for _ in range(6):
        scale = np.repeat(np.sqrt(robust), 2)
        params = least_squares(lambda p, scale=scale: error(p) * scale, params, method="lm").x
        distance = np.linalg.norm(map_points(_matrix(params, model), source) - target, axis=1) * pixels
        spread = max(1.4826 * float(np.median(distance)), 0.5)
        robust = weights / (1.0 + (distance / (CAUCHY_WIDTH * spread)) ** 2)
    matrix = np.linalg.inv(to_vis) @ _matrix(params, model) @ to_ir
    return _linearise(matrix, model, ir_points, vis_points, robust, ir_size, vis_size)


def _linearise(matrix: np.ndarray, model: str, ir_points: np.ndarray, vis_points: np.ndarray, weights: np.ndarray,
               ir_size: tuple[int, int], vis_size: tuple[int, int]) -> Fit:
    """A fitted 3x3 IR -> VIS ``matrix`` -> its ``Fit``: parameters, residuals and their Jacobian there."""
    to_ir, to_vis = _normaliser(ir_size), _normaliser(vis_size)
    source = map_points(to_ir, ir_points)
    target = map_points(to_vis, vis_points)
    params = _parameters(to_vis @ matrix @ np.linalg.inv(to_ir), model)

    def error(p: np.ndarray) -> np.ndarray:
        return (map_points(_matrix(p, model), source) - target).ravel()

    residual = error(params)
    step = 1e-6  # parameters are offsets of order 0.01-1 in normalised coordinates
    jacobian = np.column_stack([(error(params + step * unit) - residual) / step for unit in np.eye(len(params))])
    distance = np.linalg.norm(residual.reshape(-1, 2), axis=1) * vis_size[0] / 2.0
    return Fit(model, matrix / matrix[2, 2], distance, params, residual, jacobian, weights)


# --- how certain an estimate is -------------------------------------------------------------------------------


def corner_offsets(fit: Fit, deltas: np.ndarray, ir_size: tuple[int, int],
                   vis_size: tuple[int, int]) -> np.ndarray:
    """How far the output's (VIS frame's) corners move when the fit's parameters change by each row of
    ``deltas`` (S, k) -> (S, 4, 2) VIS pixels, to first order: the IR points that the fit puts on the corners,
    mapped with the changed parameters."""
    to_ir = _normaliser(ir_size)
    corners = frame_corners(vis_size)
    ir_corners = map_points(to_ir @ np.linalg.inv(fit.matrix), corners)  # normalised IR coordinates
    step = 1e-6
    base = map_points(_matrix(fit.params, fit.model), ir_corners)
    gradient = np.stack([(map_points(_matrix(fit.params + step * unit, fit.model), ir_corners) - base) / step
                         for unit in np.eye(len(fit.params))], axis=-1)  # (4, 2, k) normalised VIS units
    return np.einsum("cik,sk->sci", gradient, deltas) * vis_size[0] / 2.0


def jackknife_corners(fit: Fit, groups: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int]
                      ) -> np.ndarray:
    """Corner offsets (G, 4, 2) of a delete-one-group jackknife of the fit, one row per group left out, scaled so
    that their mean square at each corner is the jackknife variance ((G - 1) / G times the sum of squared
    deviations from their mean).

    The unit left out is a group of matches (an ``UNCERTAINTY_CELL`` cell of one frame pair, ``groups``: (N,) ids),
    not a match: neighbouring blocks overlap (48 px blocks every 16 px) and an object off the fitted plane
    displaces all its blocks alike, so matches are not independent and treating them one by one (or a covariance
    that assumes independent residuals) would promise a certainty the data do not hold. Each refit is one
    Gauss-Newton step of the weighted least squares from the solution (the robust weights kept): exact for the
    linearised problem, and all of them are solved at once in milliseconds.

    Why a jackknife and not a bootstrap over the same cells: a frame holds few cells (16 in a 256x256 frame), and
    with few groups (a) about one bootstrap resample in 16 leaves out all four cells of one side of the frame, so
    the homography's perspective terms are barely determined and that resample throws the corners far (FLIR_01130, a
    256 crop: 2.45 px from the bootstrap, 1.98 from the jackknife), while (b) the plug-in variance it estimates is
    known to be too small where single groups carry much of the fit (the cells at the frame's corners carry a
    homography's perspective terms): an accepted crop was 2.07 px off at a bootstrap uncertainty of 1.93 px; the
    jackknife reads 2.59 px there and refuses it. The delete-one-group jackknife is the cluster-robust variance
    recommended where groups are few or unequal (CV3 in MacKinnon, Nielsen and Webb, J. Econometrics 2023). It errs
    on the safe side: on synthetic matches of a 256x256 frame whose cells err together it reads 1.0-1.26x the
    estimate's real RMS corner error, where the bootstrap read 0.96-1.07x (those cells are all alike; the test of
    that is in tests/test_calibration_trust.py). It is also deterministic without a seed.
    """
    labels, member = np.unique(groups, return_inverse=True)
    count = len(labels)
    if count < 2:  # one group: nothing to leave out, and nothing to say how far the fit could move
        return np.full((1, 4, 2), np.inf)
    # Each group's share of the normal equations, once: leaving group g out is the total less its share (a rig of
    # 20 pairs at 640x480 has about 1000 groups; weighting all 2N rows per group would cost G x N x k^2).
    rows = np.repeat(member, 2)  # the group of each residual row (x and y of a match)
    weighted = fit.jacobian * np.repeat(fit.weights, 2)[:, None]  # (2N, k)
    shares = np.zeros((count, fit.params.size, fit.params.size))
    np.add.at(shares, rows, weighted[:, :, None] * fit.jacobian[:, None, :])
    gradients = np.zeros((count, fit.params.size))
    np.add.at(gradients, rows, weighted * fit.residual[:, None])
    normal = shares.sum(axis=0) - shares  # (G, k, k)
    right = gradients - gradients.sum(axis=0)  # (G, k): minus the gradient without group g
    # Leaving out a group may leave a parameter undetermined (its only support): pinv gives the least change.
    deltas = np.einsum("sij,sj->si", np.linalg.pinv(normal), right)
    deltas = (deltas - deltas.mean(axis=0)) * np.sqrt(count - 1)
    return corner_offsets(fit, deltas, ir_size, vis_size)


def corner_uncertainty(offsets: np.ndarray) -> dict[str, float]:
    """Corner offsets (S, 4, 2) -> the expected error (root mean square, VIS px) at each corner and the max."""
    radii = np.sqrt(np.mean(np.sum(offsets ** 2, axis=2), axis=0))
    report = {name: round(float(r), 3) for name, r in zip(CORNER_NAMES, radii, strict=True)}
    report["max"] = round(float(radii.max()), 3)
    return report


def coverage(vis_points: np.ndarray, vis_size: tuple[int, int]) -> float:
    """Fraction of the cells of a ``COVERAGE_GRID`` x ``COVERAGE_GRID`` grid of the VIS frame holding a match."""
    width, height = vis_size
    cells = np.floor(np.asarray(vis_points) / [width / COVERAGE_GRID, height / COVERAGE_GRID]).astype(int)
    cells = np.clip(cells, 0, COVERAGE_GRID - 1)
    return len({(int(x), int(y)) for x, y in cells}) / COVERAGE_GRID ** 2


@dataclass
class _Matching:
    """The pairs of one calibration at every level (grey frames, the VIS frames' channels per level factor): runs
    levels of warp-match-fit rounds from a start."""

    greys: list[tuple[np.ndarray, np.ndarray]]
    channels: dict[float, list[list[np.ndarray]]]
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]

    def run(self, stages: Sequence[Stage], current: np.ndarray, model: Transform
            ) -> tuple[np.ndarray, Chosen | None, np.ndarray, int]:
        """-> (the last matrix, the last "target" round's choice or None, its matches (N, 6), pairs that gave any)."""
        choice, matches, used = None, np.zeros((0, 6)), 0
        for stage in stages:
            for _ in range(stage.rounds):
                matches, used = _match_pairs(self.greys, self.channels[stage.factor], current, stage)
                if len(matches) < MIN_MATCHES:
                    raise InputError(
                        f"automatic calibration found only {len(matches)} structure matches in {len(self.greys)} "
                        f"frame pair(s) at {stage.factor:.2g}x resolution",
                        fix="use daytime frames with clear shared edges, more pairs, or point pairs (--points)")
                if stage.model != "target":
                    current = _robust_fit(matches[:, :2], matches[:, 2:4], matches[:, 4], stage.model, self.ir_size,
                                          self.vis_size, start=current).matrix
                    continue
                choice = choose_model(matches, model, self.ir_size, self.vis_size, current)
                current = choice.fit.matrix
        return current, choice, matches, used


def from_frames(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    model: Transform = "auto",
    *,
    initial: np.ndarray | None = None,
    max_uncertainty_px: float | None = MAX_UNCERTAINTY_PX,
) -> Registration:
    """Estimate the IR-to-VIS mapping from one or more (ir, vis) frame pairs of one rig (OpenCV layouts: HxW or
    HxWx3 BGR, uint8 or uint16). All pairs' block matches go into one fit.

    ``model``: "auto" chooses by evidence (``choose_model``), counts how far a second matching path, with the
    homography in every round of the last levels, ends from each model fitted in its last round, and reports the
    least uncertain of them (``least_uncertain``); "similarity", "affine" or "homography" forces one
    (a similarity is saved as an affine matrix with ``fitted_model`` "similarity"). ``initial`` (3x3, IR -> VIS)
    replaces the coarse search; it must be within about 30 VIS pixels everywhere. An estimate whose expected
    error at a corner of the output exceeds ``max_uncertainty_px`` is refused (``None``: never).
    """
    if not pairs:
        raise InputError("no frame pairs to calibrate from", fix="pass at least one IR/VIS pair")
    ir_shape, vis_shape = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    for ir, vis in pairs:
        if ir.shape[:2] != ir_shape or vis.shape[:2] != vis_shape:
            raise InputError("calibration frame pairs differ in size", fix="use frames of one camera rig")
    ir_size, vis_size = (ir_shape[1], ir_shape[0]), (vis_shape[1], vis_shape[0])
    greys = [(ir_to_grey8(ir), ir_to_grey8(vis)) for ir, vis in pairs]
    # The VIS frames do not move: their channels at each pyramid level are computed once.
    stages = _stages(vis_size)
    channels = {factor: [_structure_channels(_resize(vis, factor), CHANNEL_BLUR) for _, vis in greys]
                for factor in {stage.factor for stage in stages}}
    if initial is None:
        first = stages[0]
        current = _best_start(greys, channels[first.factor], _coarse_starts(*greys[0], first.factor), first)
    else:
        current = np.asarray(initial, dtype=np.float64)
    # The shared levels (similarity, affine) run once; the requested model's levels follow.
    split = next(index for index, stage in enumerate(stages) if stage.model == "target")
    matching = _Matching(greys, channels, ir_size, vis_size)
    current = matching.run(stages[:split], current, model)[0]
    _, choice, matches, used = matching.run(stages[split:], current, model)
    assert choice is not None  # the last stages are "target" ones
    if model == "auto":
        # The path matters: each round matches blocks under the previous round's warp, within a few px of it. An
        # auto path that went through a similarity where the view is tilted can end at a fit consistent with the
        # matches it made, corners and all far off, with a small spread (FLIR_04722 at 768x576, tilted:
        # 1.97 px reported, 7.2 px off). The same levels run again with the homography from the first round on;
        # how far apart the two ends are at the corners counts in the uncertainty like a richer model's move.
        try:
            homography = matching.run(stages[split:], current, "homography")[1]
        except InputError:  # too few matches along that path: no second end to weigh, auto's own rules stand
            homography = None
        choice = least_uncertain(choice, homography, vis_size)
    residual = choice.fit.distance
    uncertainty = corner_uncertainty(choice.offsets + choice.bias)
    extra = {"fitted_model": choice.fit.model, "corner_uncertainty_px": uncertainty,
             "coverage": round(choice.coverage, 3), "model_evidence": choice.evidence,
             "pairs_used": used, "pairs_given": len(pairs), "matches": len(matches),
             "residual_p90_px": round(float(np.percentile(residual, 90)), 3)}
    if max_uncertainty_px is not None and uncertainty["max"] > max_uncertainty_px:
        forced = f"--transform {model}"
        contradicted = [name for name, seen in choice.evidence.items() if seen.get("rejected") == forced]
        if contradicted:
            article = "an" if contradicted[-1] == "affine" else "a"
            raise InputError(
                f"calibration too uncertain: the frames show {article} {contradicted[-1]} (it moves the output's "
                f"corners {choice.evidence[contradicted[-1]]['corner_shift_px']:.1f} px from the {model} fit, beyond "
                f"its own uncertainty); the {model} fit's expected error at the corners is {uncertainty['max']:.2f} "
                f"px (limit {max_uncertainty_px:g} px)",
                fix=f"use --transform auto or {contradicted[-1]}")
        gap = choice.evidence.get("homography path", {}).get("corner_gap_px", 0.0)
        path = (f"; matched with the homography from the first round on it ends {gap:.1f} px away"
                if gap > max_uncertainty_px else "")
        raise InputError(
            f"calibration too uncertain: the {choice.fit.model} fit's expected error at the output's corners is "
            f"{uncertainty['max']:.2f} px (limit {max_uncertainty_px:g} px; matches cover "
            f"{100 * choice.coverage:.0f} % of the frame{path})",
            fix="add more frame pairs of other scenes, frames with structure near the edges, or point pairs "
                "(--points)")
    saved: Model = "homography" if choice.fit.model == "homography" else "affine"
    return Registration(choice.fit.matrix, ir_size, vis_size, model=saved, method="structure-blocks",
                        residual_px=round(float(np.median(residual)), 3), extra=extra)


@dataclass(frozen=True)
class Chosen:
    """The model ``choose_model`` kept: its fit, jackknife corner offsets, the matches' coverage and why."""

    fit: Fit
    offsets: np.ndarray
    bias: np.ndarray  # (4, 2): how far the richer model the data could not rule out moves the corners
    coverage: float
    evidence: dict[str, Any]
    # "auto": the other models fitted to the same matches, each with its own bias (the homography only where the
    # coverage allows it); ``least_uncertain`` weighs them against this choice
    alternatives: tuple[Chosen, ...] = ()

    @property
    def uncertainty_px(self) -> float:
        """The largest expected error at an output corner: jackknife spread and bias together (VIS px)."""
        return corner_uncertainty(self.offsets + self.bias)["max"]

    def with_other_path(self, other: Chosen | None, vis_size: tuple[int, int]) -> Chosen:
        """This choice with the end of another matching path counted: where ``other``'s fit puts the output's
        corners away from this fit, that move joins the bias (per corner, the larger), and the evidence says how
        far (None: that path found too few matches to end anywhere)."""
        if other is None:
            return replace(self, evidence={**self.evidence, "homography path": {"rejected": "too few matches"}})
        gap = corner_moves(other.fit.matrix, self.fit.matrix, vis_size)
        bias = larger_per_corner(self.bias, gap)
        evidence = {**self.evidence, "homography path": {
            "corner_gap_px": round(float(np.max(np.linalg.norm(gap, axis=1))), 3),
            "uncertainty_px": corner_uncertainty(other.offsets)["max"]}}
        return replace(self, bias=bias, evidence=evidence)


def least_uncertain(choice: Chosen, other_path: Chosen | None, vis_size: tuple[int, int]) -> Chosen:
    """What "auto" reports: of the models fitted in its last round (``choice`` and its ``alternatives``), each
    with the other matching path's end counted (``Chosen.with_other_path``), the one whose expected error at the
    output's corners is smallest; ``choice`` where they tie.

    Support (``choose_model``) says which model the matches can tell apart from a simpler one, and steers the
    matching rounds; it is not which estimate is closest to the truth. A simpler model that could not rule out a
    richer one carries that model's corner move as its bias, so where the richer model's own spread is smaller
    than the simpler model's spread and bias together, the richer fit is the better estimate even though its
    extra terms are not "supported" (RoadScene FLIR_05005: an affine reported at 1.99 px was 1.84 px off, the
    homography fitted to the same matches 1.23 px uncertain and 0.18 px off; over the 192 single-pair calibrations of
    benchmarks/calibration_roadscene.py the worst accepted error went from 1.96 to 0.61 px at native size).
    The matching rounds keep following support: steering them by the least uncertain fit kept a 12-scene live
    rig at 6.7 px instead of 1.93 px.
    """
    counted = [candidate.with_other_path(other_path, vis_size) for candidate in (choice, *choice.alternatives)]
    uncertainties = [candidate.uncertainty_px for candidate in counted]
    index = int(np.argmin(uncertainties))  # the first (``choice``) on ties
    best = counted[index]
    evidence = {**best.evidence, "reported": {
        "model": best.fit.model, "uncertainty_px": round(uncertainties[index], 3),
        "supported_model": choice.fit.model, "supported_uncertainty_px": round(uncertainties[0], 3)}}
    return replace(best, evidence=evidence, alternatives=())


def larger_per_corner(bias: np.ndarray, move: np.ndarray) -> np.ndarray:
    """Two (4, 2) corner displacements -> per corner the longer one (``bias`` where they tie): how a possible bias
    grows by another move the data could not rule out."""
    return np.where((np.linalg.norm(move, axis=1) > np.linalg.norm(bias, axis=1))[:, None], move, bias)


def corner_moves(matrix: np.ndarray, base: np.ndarray, vis_size: tuple[int, int]) -> np.ndarray:
    """(4, 2): how far the IR -> VIS ``matrix`` puts the output's corners from where ``base`` puts them (VIS px)."""
    corners = frame_corners(vis_size)
    return map_points(matrix, map_points(np.linalg.inv(base), corners)) - corners


def choose_model(matches: np.ndarray, model: Transform, ir_size: tuple[int, int], vis_size: tuple[int, int],
                 start: np.ndarray) -> Chosen:
    """Fit ``model`` to the matches (N, 6: ir_x, ir_y, vis_x, vis_y, score, group), or for "auto" choose by evidence.

    "auto" starts from the similarity and weighs each richer model (affine, then homography) against the one
    chosen so far, taking it when its extra terms are supported: they move the output's corners by more than
    ``SUPPORT`` times their own uncertainty there, and that uncertainty is within ``MAX_UNCERTAINTY_PX``; the
    homography also needs matches in at least ``HOMOGRAPHY_COVERAGE`` of the frame, since its perspective terms
    extrapolate to corners without matches. A richer model that is not supported is not ruled out either: how far
    it moves the corners is the chosen model's possible bias, added to its jackknife spread in the reported
    uncertainty. Every richer model counts there, the homography too when the coverage is too low: a perspective
    change of the view moves the corners in a pattern that no affine map follows, so only the homography shows it
    (without it, a 3 px tilt was accepted 7.5 px off). A forced model is held to the same rule: its
    uncertainty counts the richer models' moves too; where one of them moves the corners by more than ``SUPPORT``
    times its own uncertainty the frames contradict the stated model, and the refusal says which one they show.
    """
    share = coverage(matches[:, 2:4], vis_size)
    # A forced model is fitted with the richer ones too: they are the evidence against it (below).
    names: list[str] = list(FITTED_MODELS) if model == "auto" else list(FITTED_MODELS[FITTED_MODELS.index(model):])
    fits = {}
    for name in names:
        fit = _robust_fit(matches[:, :2], matches[:, 2:4], matches[:, 4], name, ir_size, vis_size, start)
        fits[name] = (fit, jackknife_corners(fit, matches[:, 5], ir_size, vis_size))

    def moved(name: str, base: str) -> np.ndarray:
        return corner_moves(fits[name][0].matrix, fits[base][0].matrix, vis_size)

    def coverage_allows(name: str) -> bool:  # perspective terms only from matches that reach the frame's corners
        return name != "homography" or share >= HOMOGRAPHY_COVERAGE

    chosen = names[0]
    evidence: dict[str, Any] = {chosen: {"uncertainty_px": corner_uncertainty(fits[chosen][1])["max"]}}
    for name in names[1:]:
        # Each richer model is weighed against the one chosen so far, the homography also when the affine was
        # not supported: a perspective change (a camera yawed or pitched) moves the corners in a pattern that no
        # affine map follows, so the affine adds nothing over the similarity while the homography does (RoadScene,
        # a 3-degree roll plus a 2 px tilt: stopping at the unsupported affine refused 14 of 24 pairs whose
        # homography was within 0.5 px).
        spread = corner_uncertainty(fits[name][1])["max"]
        shift = float(np.max(np.linalg.norm(moved(name, chosen), axis=1)))
        evidence[name] = {"corner_shift_px": round(shift, 3), "uncertainty_px": spread}
        if not coverage_allows(name):
            evidence[name]["rejected"] = f"coverage {share:.2f} < {HOMOGRAPHY_COVERAGE}"
        elif shift <= SUPPORT * spread:
            evidence[name]["rejected"] = "not supported"
        elif model != "auto":
            # Significant, even where too uncertain to be taken itself: the frames contradict the forced model
            # (6 crops with a 3 px tilt: the homography moves the corners 7 px at 2.7 px uncertainty), which the
            # refusal then says.
            evidence[name]["rejected"] = f"--transform {model}"
        elif spread > MAX_UNCERTAINTY_PX:
            evidence[name]["rejected"] = "not supported"
        else:
            chosen = name
    # Not supported is not ruled out: the chosen model may be off by as much as a richer one moves the corners
    # (at each corner the largest move of any richer model). The move is not shrunk by the richer model's own
    # noise: where the data cannot tell the models apart, the choice itself is that uncertain. The same for a
    # forced model: forcing chooses the form, not what the frames can rule out (a forced affine on RoadScene
    # views tilted by 2 px was accepted 5-11 px off on 21 of 24 pairs when only its own spread counted).
    def possible_bias(name: str) -> np.ndarray:
        bias = np.zeros((4, 2))
        for richer in names[names.index(name) + 1:]:
            bias = larger_per_corner(bias, moved(richer, name))
        return bias

    # "auto" also keeps the other fits for ``least_uncertain``: the homography only where the coverage allows it.
    alternatives = tuple(Chosen(fits[name][0], fits[name][1], possible_bias(name), share, evidence)
                         for name in names if model == "auto" and name != chosen and coverage_allows(name))
    return Chosen(fits[chosen][0], fits[chosen][1], possible_bias(chosen), share, evidence, alternatives)


def _resize(grey: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return grey
    return cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def _match_pairs(greys: list[tuple[np.ndarray, np.ndarray]], vis_channels: list[list[np.ndarray]],
                 current: np.ndarray, stage: Stage) -> tuple[np.ndarray, int]:
    """Block matches of every pair under the current mapping -> ((N, 6) rows (ir_x, ir_y, vis_x, vis_y, score,
    group) in full-resolution pixels, number of pairs that gave any). The group numbers an ``UNCERTAINTY_CELL``
    cell of one pair's VIS frame (``jackknife_corners``)."""
    to_level = _scale(stage.factor)
    all_matches, used = [], 0
    for index, ((ir, _), channels) in enumerate(zip(greys, vis_channels, strict=True)):
        height, width = channels[0].shape
        warp = to_level @ current
        # INTER_AREA is not supported by warpPerspective; linear is fine: the channels are computed after the warp.
        warped = cv2.warpPerspective(ir, warp, (width, height), flags=cv2.INTER_LINEAR)
        covered = cv2.warpPerspective(np.ones(ir.shape, np.uint8), warp, (width, height), flags=cv2.INTER_NEAREST)
        rows = _match_blocks(channels, _structure_channels(warped, CHANNEL_BLUR), covered, stage)
        if not len(rows):
            continue
        used += 1
        # Block centre in the warped IR (level pixels) -> IR pixels; its VIS position -> full-resolution pixels.
        ir_points = map_points(np.linalg.inv(warp), rows[:, :2])
        vis_points = rows[:, 2:4] / stage.factor
        cells = np.floor(vis_points / UNCERTAINTY_CELL).astype(np.int64)
        group = (index * 1000 + cells[:, 1]) * 1000 + cells[:, 0]
        all_matches.append(np.column_stack([ir_points, vis_points, rows[:, 4], group]))
    return (np.concatenate(all_matches) if all_matches else np.zeros((0, 6))), used


def _stages(vis_size: tuple[int, int]) -> tuple[Stage, ...]:
    """``STAGES`` for a VIS frame of this size: the levels are set for 640 px wide frames, so that blocks reach
    as far relative to the frame and a small frame still holds a grid of blocks at the coarsest level."""
    ratio = REFERENCE_WIDTH / vis_size[0]
    return tuple(replace(stage, factor=min(1.0, stage.factor * ratio)) for stage in STAGES)


def _coarse_starts(ir: np.ndarray, vis: np.ndarray, factor: float) -> list[np.ndarray]:
    """Candidate starts, best first: size ratio (same field of view, centres aligned) corrected by the best
    scales/rolls/shifts on 1/4-resolution structure maps."""
    (ir_h, ir_w), (vis_h, vis_w) = ir.shape, vis.shape
    sx, sy = vis_w / ir_w, vis_h / ir_h
    start = np.array([[sx, 0, (sx - 1) * 0.5], [0, sy, (sy - 1) * 0.5], [0, 0, 1.0]])
    vis_map = _resize(structure_map(vis, STRUCTURE_BLUR), factor)
    ir_map = _resize(structure_map(ir, STRUCTURE_BLUR * ir_w / vis_w), factor)
    ir_factor = ir_map.shape[1] / ir_w
    candidates = _coarse_search(vis_map, ir_map, _scale(factor) @ start @ np.linalg.inv(_scale(ir_factor)))
    return [np.linalg.inv(_scale(factor)) @ level @ _scale(ir_factor) for level in candidates]


def _best_start(greys: list[tuple[np.ndarray, np.ndarray]], vis_channels: list[list[np.ndarray]],
                starts: list[np.ndarray], stage: Stage) -> np.ndarray:
    """The start under which the first stage's blocks match best (sum of scores; ``vis_channels`` at the first
    stage's level): where the structure maps' global correlation is weak (night frames), its runner-up is often
    the right one."""
    totals = [float(_match_pairs(greys, vis_channels, start, stage)[0][:, 4].sum()) for start in starts]
    return starts[int(np.argmax(totals))]


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


def _coarse_search(vis_map: np.ndarray, ir_map: np.ndarray, start: np.ndarray) -> list[np.ndarray]:
    """The best similarity corrections of ``start`` (IR map -> VIS map coords) on a grid of scales and rotations.

    Block matching reaches only so far; cameras of a rig differ in field of view and roll by more than that.
    Each (scale, rotation) about the VIS centre gets its shift from a phase correlation of the maps; the
    ``COARSE_CANDIDATES`` candidates with the highest masked correlation are returned, best first.
    """
    height, width = vis_map.shape
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1.0]])
    scored = []
    for scale in np.geomspace(1 / SEARCH_SCALE, SEARCH_SCALE, 9):
        for angle in np.deg2rad(np.linspace(-SEARCH_DEGREES, SEARCH_DEGREES, 9)):
            c, s = np.cos(angle) * scale, np.sin(angle) * scale
            similarity = centre @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.linalg.inv(centre)
            candidate = similarity @ start
            warped, mask = _warp_map(ir_map, candidate, (width, height))
            (dx, dy), _ = cv2.phaseCorrelate(vis_map.astype(np.float64), warped.astype(np.float64))
            candidate = np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1.0]]) @ candidate
            warped, mask = _warp_map(ir_map, candidate, (width, height))
            scored.append((_masked_correlation(vis_map, warped, mask), candidate))
    scored.sort(key=lambda item: item[0], reverse=True)
    return [candidate for _, candidate in scored[:COARSE_CANDIDATES]]


def alignment_residuals(ir: np.ndarray, vis: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """How far shared structure lies apart once the IR frame is mapped by ``matrix`` (3x3 IR -> VIS): the
    displacement, in VIS pixels, of every structure block that matches within +-12 px, (N,) float64."""
    ir_grey, vis_grey = ir_to_grey8(ir), ir_to_grey8(vis)
    stage = Stage(1.0, "target", search=12, half=24, stride=16, rounds=1)
    matches, _ = _match_pairs([(ir_grey, vis_grey)], [_structure_channels(vis_grey, CHANNEL_BLUR)],
                              np.asarray(matrix, dtype=np.float64), stage)
    return np.linalg.norm(map_points(matrix, matches[:, :2]) - matches[:, 2:4], axis=1)


def structure_matches(ir: np.ndarray, vis: np.ndarray, matrix: np.ndarray) -> int:
    """How many structure blocks of one (ir, vis) pair match under ``matrix`` (3x3 IR -> VIS) at the first,
    coarsest pyramid stage of ``from_frames`` (search +-32 px at 640 px wide): what the pair can give an estimate
    that is still tens of pixels off. Fewer than ``MIN_MATCHES``: too little shared structure (a dark or flat
    frame, a capped lens, frames of two different scenes)."""
    ir_grey, vis_grey = ir_to_grey8(ir), ir_to_grey8(vis)
    stage = _stages((vis_grey.shape[1], vis_grey.shape[0]))[0]
    channels = _structure_channels(_resize(vis_grey, stage.factor), CHANNEL_BLUR)
    return len(_match_pairs([(ir_grey, vis_grey)], [channels], np.asarray(matrix, dtype=np.float64), stage)[0])


@dataclass(frozen=True)
class CalibrationCheck:
    """How well a calibration registers some frame pairs: structure displacement left, in VIS pixels."""

    pair_medians_px: tuple[float, ...]  # per pair; nan where no structure matched
    matches: int
    median_px: float  # over all matches of all pairs
    p90_px: float


def check_calibration(registration: Registration, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> CalibrationCheck:
    """Measure ``registration`` on (ir, vis) frame pairs of the rig (OpenCV layouts). A good calibration leaves
    about 1-2 px (matching noise and parallax); cameras that moved leave more. One-line errors for frames of
    other sizes than the calibration's and for frames without shared structure."""
    if not pairs:
        raise InputError("no frame pairs to check the calibration on", fix="pass at least one IR/VIS pair")
    residuals = []
    for index, (ir, vis) in enumerate(pairs):
        registration.check_sizes(ir.shape, vis.shape, where=f"frame pair {index}")
        residuals.append(alignment_residuals(ir, vis, registration.matrix))
    every = np.concatenate(residuals)
    if len(every) < MIN_MATCHES:
        raise InputError(f"only {len(every)} structure matches in {len(pairs)} frame pair(s): too few to judge the "
                         "calibration", fix="use daytime frames with clear shared edges, or more pairs")
    return CalibrationCheck(tuple(float(np.median(r)) if len(r) else float("nan") for r in residuals), len(every),
                            float(np.median(every)), float(np.percentile(every, 90)))


def corner_error(estimated: np.ndarray, truth: np.ndarray, vis_size: tuple[int, int]) -> float:
    """Largest misregistration (VIS pixels) at the corners of the VIS frame, i.e. of the fused output: the IR
    points that ``truth`` puts on the four VIS corners, sent through ``estimated`` (both 3x3 IR -> VIS)."""
    return float(np.max(np.linalg.norm(corner_moves(estimated, truth, vis_size), axis=1)))


def view_change(size: tuple[int, int], degrees: float, scale: float, shift: tuple[float, float],
                tilt: float) -> tuple[np.ndarray, tuple[int, int]]:
    """A known change of the IR camera's view about the frame centre, to test a calibration against:
    (3x3 original IR -> new IR, the new frame's (W, H)). ``size`` is the IR frame's (W, H); roll in ``degrees``,
    ``scale``, ``shift`` in px, and perspective terms that move the frame's edges by ``tilt`` px (a camera yawed
    and pitched). The new IR frame is a canvas 8 % larger, so the whole original view stays in it."""
    width, height = size
    canvas = (round(width * 1.08), round(height * 1.08))
    c, s = np.cos(np.deg2rad(degrees)) * scale, np.sin(np.deg2rad(degrees)) * scale
    centre_in = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1.0]])
    centre_out = np.array([[1, 0, canvas[0] / 2 + shift[0]], [0, 1, canvas[1] / 2 + shift[1]], [0, 0, 1.0]])
    # x - p x^2 at x = width / 2: the edge moves by tilt px
    perspective = [4 * tilt / width ** 2, -4 * tilt / height ** 2, 1.0]
    change = centre_out @ np.array([[c, -s, 0], [s, c, 0], perspective]) @ centre_in
    return change, canvas


def overlay(registration: Registration, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """A picture to judge a calibration: VIS in grey with the warped IR's edges in red, HxWx3 BGR uint8."""
    warped = registration.warp(ir_to_grey8(ir))
    vis8 = vis_to_bgr8(vis)
    grey = vis8 if vis8.ndim == 2 else cv2.cvtColor(vis8, cv2.COLOR_BGR2GRAY)
    picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    edges = cv2.Canny(warped, 60, 160) > 0
    picture[edges] = (0, 0, 255)
    uncertainty = registration.extra.get("corner_uncertainty_px")
    if isinstance(uncertainty, dict):
        # Expected error at each output corner as a yellow circle, 10x enlarged (a 1 px circle is invisible).
        for (x, y), name in zip(frame_corners(registration.vis_size), CORNER_NAMES, strict=True):
            radius = max(round(10 * float(uncertainty[name])), 1)
            cv2.circle(picture, (int(x), int(y)), radius, (0, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(picture, f"corner uncertainty x10, max {uncertainty['max']:.2f} px",
                    (8, picture.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)
    return picture
