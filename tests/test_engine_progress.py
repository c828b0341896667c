"""The build's progress line (tensorrt/progress.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import io
import time

from maefuse_deploy.tensorrt.progress import ProgressLine, Spinner


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_in_a_log():
    clock, out = FakeClock(), io.StringIO()
    line = ProgressLine(out, "building m.engine", clock=clock, heartbeat_s=30)
    line.phase_start("Building engine", None, 3)
    line.phase_start("Tactic timing", "Building engine", 40)  # nested: not printed in a log
    line.step("Tactic timing", 5)
    clock.now += 10
    line.tick()  # before the heartbeat interval: silent
    clock.now += 25
    line.tick()
    line.close("built m.engine")
    assert out.getvalue().splitlines() == [
        "building m.engine: Building engine (0 s)",
        "building m.engine: still running (35 s)",
        "built m.engine (35.0 s)",
    ]


def test_progress_line_on_a_terminal():
    clock, out = FakeClock(), TtyBuffer()
    line = ProgressLine(out, "building", clock=clock)
    line.phase_start("Building engine", None, 3)
    line.phase_start("Tactic timing", "Building engine", 40)
    line.step("Tactic timing", 4)
    clock.now += 7
    assert line.render().endswith("Building engine > Tactic timing 5/40 [7 s]")
    line.phase_finish("Tactic timing")
    assert "Building engine 0/3" in line.render()
    assert "\r" in out.getvalue()


def test_spinner_ticks_while_running():
    line = ProgressLine(TtyBuffer(), "building")
    with Spinner(line, interval_s=0.01):
        time.sleep(0.1)
    assert line.render().split()[1] in "|/-\\"
    assert line._spin > 0
