"""The one status line a long engine build keeps up to date.

TensorRT 10+ reports build phases through ``IProgressMonitor`` (from several threads at once); where that is
missing, a spinner thread shows that the build is alive. On a terminal the line is redrawn in place; in a log
(not a TTY) only phase starts and a heartbeat are printed, so CI logs stay short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

_SPIN = "|/-\\"


class ProgressLine:
    def __init__(
        self,
        stream: TextIO,
        label: str = "building engine",
        *,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float = 30.0,
    ) -> None:
        self._stream = stream
        self._label = label
        self._clock = clock
        self._start = clock()
        self._live = bool(getattr(stream, "isatty", lambda: False)())
        self._heartbeat_s = heartbeat_s
        self._last_print = self._start
        self._width = 0
        self._spin = 0
        self._lock = threading.Lock()
        self._phases: dict[str, list] = {}  # name -> [parent, steps, done]; insertion order = nesting order

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self._phases[name] = [parent, max(int(steps), 1), 0]
            if self._live:
                self._draw()
            elif parent is None:
                self._println(f"{self._label}: {name} ({self._elapsed():.0f} s)")

    def step(self, name: str, step: int) -> None:
        with self._lock:
            if name in self._phases:
                self._phases[name][2] = int(step) + 1
            if self._live:
                self._draw()

    def phase_finish(self, name: str) -> None:
        with self._lock:
            self._phases.pop(name, None)
            if self._live:
                self._draw()

    def tick(self) -> None:
        """Redraw (terminal) or print a heartbeat now and then (log), for builds without phase reports."""
        with self._lock:
            self._spin += 1
            if self._live:
                self._draw()
            elif self._clock() - self._last_print >= self._heartbeat_s:
                self._println(f"{self._label}: still running ({self._elapsed():.0f} s)")

    def close(self, message: str) -> None:
        with self._lock:
            if self._live:
                self._stream.write("\r" + " " * self._width + "\r")
            self._println(f"{message} ({self._elapsed():.1f} s)")

    def render(self) -> str:
        """The current line without terminal control characters."""
        parts = [f"{self._label} {_SPIN[self._spin % len(_SPIN)]}"]
        if self._phases:
            top = next(iter(self._phases))
            inner = next(reversed(self._phases))
            _, steps, done = self._phases[inner]
            parts.append(top if top == inner else f"{top} > {inner}")
            parts.append(f"{done}/{steps}")
        parts.append(f"[{self._elapsed():.0f} s]")
        return " ".join(parts)

    def _draw(self) -> None:
        text = self.render()
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(text))

    def _println(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
        self._last_print = self._clock()

    def _elapsed(self) -> float:
        return self._clock() - self._start


class Spinner:
    """Calls ``line.tick()`` from a background thread while the ``with`` block runs."""

    def __init__(self, line: ProgressLine, interval_s: float = 0.25) -> None:
        self._line = line
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maefuse-build-spinner", daemon=True)

    def __enter__(self) -> Spinner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._line.tick()
