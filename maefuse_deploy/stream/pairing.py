"""Pairing IR and VIS frames: by timestamp (cameras that are not triggered together) or by index (lockstep files).

Timestamp rule (deterministic, the same online as offline): with the IR timestamps shifted by ``ir_offset``
seconds, an IR frame and a VIS frame are partners when each is the other's nearest frame (ties go to the earlier
frame) and they are at most ``tolerance`` seconds apart. Every other frame is unpaired, counted and dropped. Pairs
come out in time order. The default tolerance is half the frame period of the slower source, so a frame can only
pair with the frame that overlaps it in time.

Online, a frame's nearest partner is known once the other stream has delivered a frame at or after it (or has
ended); :meth:`TimestampPairer.needs` says which stream the pairer is waiting on, so the pipeline reads exactly
that one and never buffers more than a frame or two per stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .sources import Frame

ROLES = ("ir", "vis")


@dataclass
class Pair:
    ir: Frame
    vis: Frame


class TimestampPairer:
    def __init__(self, tolerance: float | None = None, ir_offset: float = 0.0,
                 fps: tuple[float | None, float | None] = (None, None)) -> None:
        """``tolerance`` in seconds (None: half the slower source's period, from ``fps`` (ir, vis) or, where a
        rate is unknown, from the first two frames' spacing); ``ir_offset`` is added to every IR timestamp."""
        self.tolerance = tolerance
        self.ir_offset = ir_offset
        self._fps = dict(zip(ROLES, fps, strict=True))
        self._pending: dict[str, deque[Frame]] = {role: deque() for role in ROLES}
        self._last_removed: dict[str, float | None] = {role: None for role in ROLES}
        self._first_two: dict[str, list[float]] = {role: [] for role in ROLES}
        self._ended = {role: False for role in ROLES}
        self.unpaired = {role: 0 for role in ROLES}
        self._waiting_for: str | None = None

    def _time(self, role: str, frame: Frame) -> float:
        return frame.timestamp + (self.ir_offset if role == "ir" else 0.0)

    def add(self, role: str, frame: Frame | None) -> list[Pair]:
        """Give the pairer the next frame of ``role`` (None: that stream ended); returns the pairs now decided."""
        if frame is None:
            self._ended[role] = True
        else:
            self._pending[role].append(frame)
            if len(self._first_two[role]) < 2:
                self._first_two[role].append(frame.timestamp)
        return self._resolve()

    def needs(self) -> str | None:
        """The stream whose next frame the pairer waits for; None when both have ended and all is decided."""
        if self._waiting_for is not None and not self._ended[self._waiting_for]:
            return self._waiting_for
        open_roles = [role for role in ROLES if not self._ended[role]]
        return open_roles[0] if open_roles else None

    def _current_tolerance(self) -> float | None:
        if self.tolerance is not None:
            return self.tolerance
        periods = []
        for role in ROLES:
            fps = self._fps[role]
            if fps:
                periods.append(1.0 / fps)
            elif len(self._first_two[role]) == 2:
                periods.append(abs(self._first_two[role][1] - self._first_two[role][0]))
            elif not self._ended[role]:
                self._waiting_for = role
                return None
        if not periods:
            return 0.0
        self.tolerance = 0.5 * max(periods)
        return self.tolerance

    def _nearest(self, t: float, candidates: Sequence[tuple[float, Frame | None]]) -> tuple[float, Frame | None] | None:
        best = None
        for time_, frame in candidates:  # in time order: ties keep the earlier
            if best is None or abs(time_ - t) < abs(best[0] - t):
                best = (time_, frame)
        return best

    def _resolve(self) -> list[Pair]:
        tolerance = self._current_tolerance()
        if tolerance is None:
            return []
        pairs: list[Pair] = []
        while True:
            heads = [(self._time(r, self._pending[r][0]), i, r) for i, r in enumerate(ROLES) if self._pending[r]]
            if not heads:
                self._waiting_for = None
                return pairs
            t_a, _, role_a = min(heads)
            role_b = "vis" if role_a == "ir" else "ir"
            queue_a, queue_b = self._pending[role_a], self._pending[role_b]
            if not queue_b and not self._ended[role_b]:
                self._waiting_for = role_b
                return pairs  # a's nearest partner is not known yet
            # a is the earliest pending frame: B's candidates are its last removed frame and its pending head.
            candidates_b: list[tuple[float, Frame | None]] = []
            last_removed = self._last_removed[role_b]
            if last_removed is not None:
                candidates_b.append((last_removed, None))
            if queue_b:
                candidates_b.append((self._time(role_b, queue_b[0]), queue_b[0]))
            nearest_b = self._nearest(t_a, candidates_b)
            if nearest_b is None or nearest_b[1] is None or abs(nearest_b[0] - t_a) > tolerance:
                self._drop(role_a)
                continue
            t_b = nearest_b[0]
            # b's nearest in A: a, or the A frames after a up to the first at or after t_b.
            candidates_a = [(self._time(role_a, f), f) for f in queue_a]
            last_before = [c for c in candidates_a if c[0] <= t_b]
            first_after = [c for c in candidates_a if c[0] >= t_b]
            if not first_after and not self._ended[role_a]:
                self._waiting_for = role_a
                return pairs  # a later A frame might still be nearer to b
            window = last_before[-1:] + first_after[:1]  # a (at or before t_b) is in last_before
            nearest_a = self._nearest(t_b, window)
            if nearest_a is not None and nearest_a[1] is queue_a[0]:
                frame_a, frame_b = queue_a[0], queue_b[0]
                self._remove(role_a)
                self._remove(role_b)
                pairs.append(Pair(frame_a, frame_b) if role_a == "ir" else Pair(frame_b, frame_a))
            else:
                self._drop(role_a)

    def _remove(self, role: str) -> Frame:
        frame = self._pending[role].popleft()
        self._last_removed[role] = self._time(role, frame)
        return frame

    def _drop(self, role: str) -> None:
        self._remove(role)
        self.unpaired[role] += 1


class IndexPairer:
    """Frame n of IR with frame n of VIS (files recorded in lockstep); stops at the shorter stream."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[Frame]] = {role: deque() for role in ROLES}
        self._ended = {role: False for role in ROLES}
        self.unpaired = {role: 0 for role in ROLES}

    def add(self, role: str, frame: Frame | None) -> list[Pair]:
        if frame is None:
            self._ended[role] = True
        else:
            self._pending[role].append(frame)
        pairs = []
        while self._pending["ir"] and self._pending["vis"]:
            pairs.append(Pair(self._pending["ir"].popleft(), self._pending["vis"].popleft()))
        return pairs

    def needs(self) -> str | None:
        if self._ended["ir"] or self._ended["vis"]:
            for role in ROLES:  # the longer stream's leftovers are unpaired
                self.unpaired[role] += len(self._pending[role])
                self._pending[role].clear()
            return None
        return "ir" if len(self._pending["ir"]) <= len(self._pending["vis"]) else "vis"
