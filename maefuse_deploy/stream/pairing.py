"""Pairing IR and VIS frames: by timestamp (cameras that are not triggered together) or by index (lockstep files).

Timestamp rule, the one rule of this toolkit (the same in the ``maefusemux`` GStreamer element:
engines/gstreamer/pairing_rule.hpp; shared cases in tests/data/pairing_cases.json; docs/streaming.md, "Pairing"):
the output runs at the VIS rate. Each VIS frame is fused with the IR frame whose timestamp plus ``ir_offset`` is
nearest to it (on a tie, the earlier IR frame) when they are at most ``tolerance`` apart; otherwise the VIS frame is
unpaired (counted, dropped). An IR frame may serve several VIS frames when IR runs slower (counted as reused); IR
frames that no VIS frame chose are counted unpaired. The default tolerance is half the slower source's frame period,
within which every VIS frame finds a partner while both streams flow. Times are compared as integer nanoseconds,
so this pairer and the element decide ties and the tolerance boundary identically.

Online, a VIS frame's partner is known once the IR stream has delivered a frame after it (or has ended):
:meth:`TimestampPairer.needs` says which stream the pairer is waiting on, so the pipeline reads exactly that one and
holds at most the two IR frames around the oldest waiting VIS frame.

A source in an outage (a camera that dropped: :class:`~.sources.Gap`) is treated as ended until its next frame:
VIS frames decide without it (and are counted unpaired when the last IR frame is too old), IR frames while the VIS
camera is away are counted unpaired as soon as a newer one arrives, so nothing queues without bound.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sources import Frame, Gap

ROLES = ("ir", "vis")
NS = 1_000_000_000


def to_ns(seconds: float) -> int:
    """Seconds (a frame's timestamp, an offset) as integer nanoseconds, the unit every pairing comparison uses."""
    return round(seconds * NS)


def period_ns(fps: float) -> int:
    """A frame rate's period in whole nanoseconds, truncated as GStreamer's ``gst_util_uint64_scale_int``."""
    return int(NS / fps)


@dataclass
class Pair:
    ir: Frame
    vis: Frame


class TimestampPairer:
    def __init__(self, tolerance: float | None = None, ir_offset: float = 0.0,
                 fps: tuple[float | None, float | None] = (None, None)) -> None:
        """``tolerance`` in seconds (None: half the slower source's period, from ``fps`` (ir, vis) or, where a
        rate is unknown, from its first two frames' spacing); ``ir_offset`` seconds are added to every IR
        timestamp."""
        self.tolerance = tolerance
        self.ir_offset = ir_offset
        self._offset_ns = to_ns(ir_offset)
        self._tolerance_ns = None if tolerance is None else to_ns(tolerance)
        self._fps = dict(zip(ROLES, fps, strict=True))
        self._first_two: dict[str, list[int]] = {role: [] for role in ROLES}
        self._ir: deque[tuple[int, Frame]] = deque()  # IR frames that may still be chosen: (shifted ns, frame)
        self._vis: deque[Frame] = deque()  # VIS frames waiting for their partner to be known
        self._ended = {role: False for role in ROLES}
        self._away = {role: False for role in ROLES}  # in an outage (a Gap), until the role's next frame
        self._last_used: Frame | None = None
        self._used: set[int] = set()  # id() of the IR frames in self._ir that a VIS frame chose
        self.unpaired = {role: 0 for role in ROLES}
        self.reused = 0
        self._waiting_for: str | None = None

    def add(self, role: str, frame: Frame | Gap | None) -> list[Pair]:
        """Give the pairer the next frame of ``role`` (None: that stream ended; a Gap: its source is away until
        its next frame); returns the pairs now decided."""
        if frame is None:
            self._ended[role] = True
        elif isinstance(frame, Gap):
            self._away[role] = True
        else:
            self._away[role] = False
            if len(self._first_two[role]) < 2:
                self._first_two[role].append(to_ns(frame.timestamp))
            if role == "ir":
                self._ir.append((to_ns(frame.timestamp) + self._offset_ns, frame))
                while self._away["vis"] and len(self._ir) > 1:  # no VIS frame will come for the older ones
                    self._forget_first_ir()
            else:
                self._vis.append(frame)
        return self._resolve()

    def needs(self) -> str | None:
        """The stream whose next frame the pairer waits for; None when both have ended and all is decided. After
        the VIS stream ends the IR stream is still read to its end, its frames counted unpaired, so that every
        frame read is accounted for (read = paired + unpaired)."""
        if self._waiting_for is not None and not self._gone(self._waiting_for):
            return self._waiting_for
        flowing = [role for role in ("vis", "ir") if not self._gone(role)]
        open_roles = [role for role in ("vis", "ir") if not self._ended[role]]
        candidates = flowing or open_roles
        return candidates[0] if candidates else None

    def away(self, role: str) -> bool:
        """Whether ``role``'s source is in an outage (its Gap came, its next frame not yet)."""
        return self._away[role] and not self._ended[role]

    def _gone(self, role: str) -> bool:
        return self._ended[role] or self._away[role]

    def _current_tolerance(self) -> int | None:
        """The tolerance in ns, or None while it waits for a second frame to measure a period (``_waiting_for``)."""
        if self._tolerance_ns is not None:
            return self._tolerance_ns
        periods = []
        for role in ROLES:
            fps = self._fps[role]
            if fps:
                periods.append(period_ns(fps))
            elif len(self._first_two[role]) == 2:
                periods.append(abs(self._first_two[role][1] - self._first_two[role][0]))
            elif not self._gone(role):
                self._waiting_for = role
                return None
        self._tolerance_ns = max(periods) // 2 if periods else 0
        self.tolerance = self._tolerance_ns / NS
        return self._tolerance_ns

    def _resolve(self) -> list[Pair]:
        pairs: list[Pair] = []
        self._waiting_for = None
        tolerance = self._current_tolerance()
        if tolerance is not None:
            while self._vis:
                vis = self._vis[0]
                t_vis = to_ns(vis.timestamp)
                # Forget IR frames that a later one replaces as "the latest at or before" this (and every later)
                # VIS frame.
                while len(self._ir) > 1 and self._ir[1][0] <= t_vis:
                    self._forget_first_ir()
                held = self._ir[0] if self._ir and self._ir[0][0] <= t_vis else None
                following = [item for item in list(self._ir)[:2] if item[0] > t_vis]
                if not following and not self._gone("ir"):
                    self._waiting_for = "ir"  # the next IR frame may be nearer than the held one
                    break
                chosen = _choose(held, following[0] if following else None, t_vis, tolerance)
                self._vis.popleft()
                if chosen is None:
                    self.unpaired["vis"] += 1
                    continue
                if chosen is self._last_used:
                    self.reused += 1
                self._last_used = chosen
                self._used.add(id(chosen))
                pairs.append(Pair(chosen, vis))
        if self._ended["vis"] and not self._vis:
            while self._ir:  # nothing left to choose them
                self._forget_first_ir()
        return pairs

    def _forget_first_ir(self) -> None:
        _, frame = self._ir.popleft()
        if id(frame) in self._used:
            self._used.discard(id(frame))
        else:
            self.unpaired["ir"] += 1


def _choose(held: tuple[int, Frame] | None, following: tuple[int, Frame] | None, t_vis: int,
            tolerance: int) -> Frame | None:
    """The rule's decision for one VIS frame (pairing_rule.hpp's ``choose``): the nearer of the latest IR frame
    at or before it and the first after it, the earlier on a tie, if within ``tolerance`` ns."""
    best: tuple[int, Frame] | None = None
    if held is not None:
        best = (t_vis - held[0], held[1])
    if following is not None and (best is None or following[0] - t_vis < best[0]):
        best = (following[0] - t_vis, following[1])
    return best[1] if best is not None and best[0] <= tolerance else None


class IndexPairer:
    """Frame n of IR with frame n of VIS (files recorded in lockstep); stops at the shorter stream."""

    reused = 0  # never: one frame, one pair

    def away(self, role: str) -> bool:
        return False

    def __init__(self) -> None:
        self._pending: dict[str, deque[Frame]] = {role: deque() for role in ROLES}
        self._ended = {role: False for role in ROLES}
        self.unpaired = {role: 0 for role in ROLES}

    def add(self, role: str, frame: Frame | Gap | None) -> list[Pair]:
        if isinstance(frame, Gap):  # frame numbers do not survive an outage: index pairing just goes on
            return []
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
