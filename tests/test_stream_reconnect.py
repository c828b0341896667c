"""Cameras that come and go (issue 26): a real RTSP server on 127.0.0.1 (gst-rtsp-server through PyGObject,
tests/rtsp_server.py) is killed and restarted, or frozen (SIGSTOP: the socket stays open, no frame comes), while
a Pipeline reads it through GStreamer's rtspsrc; the stream must go on, count and time the outage, count the other
camera's frames as unpaired meanwhile, and fuse frames after it."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import require_module

from maefuse_deploy.errors import InputError
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.stream import Pipeline, Reconnect

require_module("gi", "pip install -e '.[gst]' (and Debian's gir1.2-gst-rtsp-server-1.0)")
SERVER = Path(__file__).parent / "rtsp_server.py"
FAST = Reconnect(stall_s=1.0, backoff_s=0.25, max_backoff_s=0.5, give_up_s=20.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RtspServer:
    """tests/rtsp_server.py in a child process: start, kill, restart on the same port, freeze and thaw."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"rtspsrc location=rtsp://127.0.0.1:{self.port}/cam latency=0 ! rtpjpegdepay ! jpegdec"

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(SERVER), str(self.port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            pytest.fail(f"the RTSP server did not start: {line!r} (Debian: gir1.2-gst-rtsp-server-1.0)")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


@pytest.fixture
def servers():
    started = [RtspServer(), RtspServer()]  # IR, VIS
    yield started
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def fuser():
    with Fuser.open("random:maefuse-micro", device="cpu", batch_size=4) as opened:
        yield opened


class Collector:
    """The sink: every fused frame's meta and the monotonic time it arrived."""

    def __init__(self) -> None:
        self.metas: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, image, meta) -> None:
        with self.lock:
            self.metas.append((time.monotonic(), meta))

    def count(self) -> int:
        with self.lock:
            return len(self.metas)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count() < count:
            assert time.monotonic() < deadline, f"only {self.count()} frames fused in {timeout_s} s"
            time.sleep(0.05)


def run_with_an_outage(fuser, servers, interrupt, resume) -> tuple:
    ir, vis = servers
    collected = Collector()
    pipeline = Pipeline(fuser, ir.url, vis.url, sink=collected, policy="drop-oldest", reconnect=FAST)
    with pipeline:
        collected.wait_for(20)
        interrupt(ir)
        time.sleep(2.5)
        resume(ir)
        resumed_at = time.monotonic()
        collected.wait_for(collected.count() + 25)
        pipeline.stop()
    stats = pipeline.join()
    return stats, collected, resumed_at


def test_a_camera_that_goes_away_and_comes_back_on_the_same_port(fuser, servers):
    stats, collected, resumed_at = run_with_an_outage(fuser, servers, RtspServer.kill, RtspServer.start)
    assert stats.outages_ir == 1 and stats.outages_vis == 0, stats.summary()
    assert 2.0 <= stats.outage_s_ir <= 10.0, stats.summary()
    after = [meta for arrived, meta in collected.metas if arrived > resumed_at]
    assert len(after) >= 25  # frames fused after the camera came back
    # The reopened camera's clock restarted at zero; its timestamps were rebased to go on from before the outage.
    ir_times = [meta["ir_timestamp"] for _, meta in collected.metas]
    assert all(b >= a for a, b in itertools.pairwise(ir_times)), "IR timestamps went backwards"
    assert stats.unpaired_vis > 0  # the VIS camera's frames while IR was away: counted, not queued
    assert "outages IR 1" in stats.summary()


def test_a_stalled_camera_is_noticed_and_reopened(fuser, servers):
    stats, collected, resumed_at = run_with_an_outage(
        fuser, servers, lambda s: s.signal(signal.SIGSTOP), lambda s: s.signal(signal.SIGCONT))
    assert stats.outages_ir >= 1 and stats.outages_vis == 0, stats.summary()
    assert len([1 for arrived, _ in collected.metas if arrived > resumed_at]) >= 25


def test_without_reconnect_an_outage_ends_the_stream_with_one_line(fuser, servers):
    ir, vis = servers
    collected = Collector()
    pipeline = Pipeline(fuser, ir.url, vis.url, sink=collected, policy="drop-oldest",
                        reconnect=Reconnect(enabled=False))
    pipeline.start()
    collected.wait_for(10)
    ir.kill()
    assert pipeline.wait(30)
    with pytest.raises(InputError) as info:
        pipeline.join()
    assert "\n" not in str(info.value) and "IR" in str(info.value)


def test_an_outage_longer_than_the_give_up_time_ends_the_stream(fuser, servers):
    ir, vis = servers
    collected = Collector()
    pipeline = Pipeline(fuser, ir.url, vis.url, sink=collected, policy="drop-oldest",
                        reconnect=Reconnect(stall_s=1.0, backoff_s=0.25, max_backoff_s=0.5, give_up_s=2.0))
    pipeline.start()
    collected.wait_for(10)
    ir.kill()
    assert pipeline.wait(30)
    with pytest.raises(InputError, match="has been away for") as info:
        pipeline.join()
    assert "--give-up-s" in str(info.value) and "\n" not in str(info.value)
