"""Calibrating from a live rig: which frame pairs of a stream to keep, and when to stop (docs/streaming.md,
"Calibrating from a live rig").

The caller reads the two cameras and pairs their frames (the CLI pairs them by timestamp with the stream's rule);
this module only decides, deterministically, from the pixels:

- **A new view.** A pair is considered only if its VIS frame shows another view than every pair kept so far: its
  structure map (64 px wide, blurred) correlates below ``NEW_VIEW_CORRELATION`` with each kept one's. A camera
  that stands still gives the same frame again and again; kept, each copy would count as new evidence in the
  jackknife over cells and shrink the uncertainty without adding anything. Measured on the MSRS pairs: a copy
  with camera noise correlates 1.0, the view moved by 5 % of the frame's width about 0.65, by 6-10 % 0.3-0.4,
  another scene at most 0.35.
- **Shared structure.** Of a new view, the pair is kept only if its IR and VIS structure match in at least
  ``MIN_MATCHES`` blocks under the current estimate at the coarsest pyramid stage (``structure_matches``; the
  first pair: an estimate from it alone succeeds). Dark or flat frames, a capped lens and frames of two
  different scenes give none.
- **Re-estimating.** The mapping is estimated from all kept pairs after 1, 2, 4, 8, ... of them (each estimate
  costs about 0.6-0.9 s per pair, so the estimates together cost at most twice the last one), and after the last;
  each starts from the previous estimate instead of the coarse search.
- **Stopping.** When an estimate's corner uncertainty is within the bound, or ``max_frames`` pairs are kept; the
  caller also stops when its sources end. The result is then refused above the bound, as ``from_frames`` refuses.

Keeping only pairs whose matches add new cells of the coverage grid was considered and not used: in the 12-scene
test rig (tests/test_calibrate_live.py) the matches of 8 kept pairs already cover all 16 cells, yet the uncertainty
needs all 12 pairs to fall within 2 px; more scenes in the same cells lower it (the jackknife leaves out each
scene's cells one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from .estimate import MAX_UNCERTAINTY_PX, MIN_MATCHES, Transform, from_frames, structure_map, structure_matches
from .mapping import Registration

NEW_VIEW_CORRELATION = 0.5  # below this with every kept VIS frame: a new view
VIEW_WIDTH = 64  # px: structure maps compared for a new view (coarse: a small move of the camera is the same view)
VIEW_BLUR = 2.0
DEFAULT_FRAMES = 20


@dataclass(frozen=True)
class Progress:
    """Where a collection stands: pairs read and kept, and the latest estimate (None before the first)."""

    read: int
    kept: int
    uncertainty_px: float | None  # the latest estimate's largest corner uncertainty
    estimated_from: int  # kept pairs the latest estimate used
    coverage: float | None  # share of the frame's coverage cells holding a match, latest estimate


class FrameCollector:
    """Offer it the (ir, vis) pairs of a rig in order (OpenCV layouts) until ``done``; then ``result()``."""

    def __init__(self, model: Transform = "auto", *, max_uncertainty_px: float = MAX_UNCERTAINTY_PX,
                 max_frames: int = DEFAULT_FRAMES) -> None:
        if max_frames < 1:
            raise InputError(f"max_frames must be at least 1, got {max_frames}", fix="keep at least one pair")
        self.model: Transform = model
        self.max_uncertainty_px = max_uncertainty_px
        self.max_frames = max_frames
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.read = 0
        self._views: list[np.ndarray] = []
        self._registration: Registration | None = None
        self._estimated_from = 0

    def offer(self, ir: np.ndarray, vis: np.ndarray) -> bool:
        """Consider one pair; True when it was kept (a new view with shared structure, see the module doc)."""
        self.read += 1
        if self.kept and (ir.shape[:2] != self.kept[0][0].shape[:2] or vis.shape[:2] != self.kept[0][1].shape[:2]):
            raise InputError(f"the frame size changed while calibrating: IR {ir.shape[1]}x{ir.shape[0]}, VIS "
                             f"{vis.shape[1]}x{vis.shape[0]} after {self.kept[0][0].shape[1]}x"
                             f"{self.kept[0][0].shape[0]}, {self.kept[0][1].shape[1]}x{self.kept[0][1].shape[0]}",
                             fix="keep the cameras' modes fixed while calibrating")
        view = _view(vis)
        if view is None or any(float(view @ other) >= NEW_VIEW_CORRELATION for other in self._views):
            return False
        if self._registration is None:
            try:
                first = from_frames([(ir, vis)], self.model, max_uncertainty_px=None)
            except InputError:  # too little shared structure for an estimate from this pair
                return False
            self._keep(ir, vis, view)
            self._registration, self._estimated_from = first, 1
            return True
        if structure_matches(ir, vis, self._registration.matrix) < MIN_MATCHES:
            return False
        self._keep(ir, vis, view)
        count = len(self.kept)
        if count & (count - 1) == 0 or count >= self.max_frames:  # a power of two, or the last
            self._estimate()
        return True

    @property
    def done(self) -> bool:
        """Enough: ``max_frames`` pairs kept, or an estimate from every kept pair within the bound."""
        if len(self.kept) >= self.max_frames:
            return True
        return (self._registration is not None and self._estimated_from == len(self.kept)
                and self._uncertainty(self._registration) <= self.max_uncertainty_px)

    def progress(self) -> Progress:
        registration = self._registration
        if registration is None:
            return Progress(self.read, len(self.kept), None, 0, None)
        return Progress(self.read, len(self.kept), self._uncertainty(registration), self._estimated_from,
                        float(registration.extra["coverage"]))

    def result(self) -> Registration:
        """The estimate from every kept pair; an error (one line) when none was kept or it is too uncertain."""
        if not self.kept:
            raise InputError(f"none of the {self.read} frame pairs read showed enough shared structure to calibrate "
                             "from", fix="point the cameras at a scene with clear edges both see (daylight, objects "
                             "near the frame's edges), or use point pairs (--points)")
        if self._estimated_from != len(self.kept):
            self._estimate()
        registration = self._registration
        assert registration is not None  # estimated above
        uncertainty = self._uncertainty(registration)
        if uncertainty > self.max_uncertainty_px:
            raise InputError(
                f"calibration too uncertain: from the {len(self.kept)} frame pair(s) kept of {self.read} read, the "
                f"{registration.extra['fitted_model']} fit's expected error at the output's corners is "
                f"{uncertainty:.2f} px (limit {self.max_uncertainty_px:g} px; matches cover "
                f"{100 * float(registration.extra['coverage']):.0f} % of the frame)",
                fix="let it keep more frame pairs of other scenes (move the rig, raise --frames), show it structure "
                    "near the frame's edges, or use point pairs (--points)")
        return registration

    def _keep(self, ir: np.ndarray, vis: np.ndarray, view: np.ndarray) -> None:
        self.kept.append((ir, vis))
        self._views.append(view)

    def _estimate(self) -> None:
        start = None if self._registration is None else self._registration.matrix
        self._registration = from_frames(self.kept, self.model, initial=start, max_uncertainty_px=None)
        self._estimated_from = len(self.kept)

    @staticmethod
    def _uncertainty(registration: Registration) -> float:
        return float(registration.extra["corner_uncertainty_px"]["max"])


def _view(vis: np.ndarray) -> np.ndarray | None:
    """A VIS frame's coarse structure as a unit vector (zero mean), or None for a frame without any."""
    height = max(round(VIEW_WIDTH * vis.shape[0] / vis.shape[1]), 1)
    small = cv2.resize(vis, (VIEW_WIDTH, height), interpolation=cv2.INTER_AREA)
    values = structure_map(small, VIEW_BLUR).ravel().astype(np.float64)
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 1e-9 else None
