"""maefuse_deploy.stream and maefuse-stream on real pairs: timestamp pairing of real videos, index pairing against
Fuser.fuse, live GStreamer and push sources, drop/block policies, SIGINT and bad inputs."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module, write_video

from maefuse_deploy.atomic import TEMP_PREFIX
from maefuse_deploy.cli.stream import main as stream_main
from maefuse_deploy.stream import Pipeline, PushSource, TimestampPairer, stream
from maefuse_deploy.stream.sources import Frame

SIZE = (128, 96)  # (W, H): small frames keep the random-weights maefuse-micro fast on two cores


@pytest.fixture(scope="module")
def frames(msrs):
    """Forty distinct frames cut from the six real MSRS pairs (256x192 windows at different places, scaled to
    128x96): IR as 3-channel grey (what a decoded video gives), VIS BGR; frame n of IR is registered to frame n
    of VIS."""
    names = sorted(p.stem for p in (msrs / "ir").glob("*.png"))
    sources = [(cv2.imread(str(msrs / "ir" / f"{n}.png")), cv2.imread(str(msrs / "vi" / f"{n}.png"))) for n in names]
    ir, vis = [], []
    for k in range(40):
        ir_full, vis_full = sources[k % len(sources)]
        x, y = (k * 53) % (640 - 256), (k * 31) % (480 - 192)
        for out, image in ((ir, ir_full), (vis, vis_full)):
            out.append(cv2.resize(image[y : y + 192, x : x + 256], SIZE, interpolation=cv2.INTER_AREA))
    return ir, vis


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    out = []
    while True:
        ok, image = capture.read()
        if not ok:
            return out
        out.append(image)


def mkv_time(index: int, fps: float) -> float:
    """Matroska stores timestamps in milliseconds."""
    return round(index / fps, 3)


def vis_nearest(ir_times, vis_times, tolerance):
    """The pairing rule written out independently (docs/streaming.md): each VIS frame with its nearest IR frame
    (the earlier on a tie) when within tolerance; IR frames may repeat. Compared in integer nanoseconds, as the rule
    says. Returns (ir_index, vis_index) pairs in VIS order."""
    ir_ns, vis_ns, tol = [round(t * 1e9) for t in ir_times], [round(t * 1e9) for t in vis_times], round(tolerance * 1e9)
    pairs = []
    for j, v in enumerate(vis_ns):
        i = min(range(len(ir_ns)), key=lambda k: (abs(ir_ns[k] - v), ir_ns[k]))
        if abs(ir_ns[i] - v) <= tol:
            pairs.append((i, j))
    return pairs


def assert_close_images(actual, expected, label):
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"{label}: max abs diff {diff.max()}, mean {diff.mean():.4f}"


def test_timestamp_pairer_follows_the_rule_on_random_clocks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fps_ir, fps_vis = rng.choice([9, 25, 30, 60]), rng.choice([15, 25, 30])
        offset = rng.uniform(-0.1, 0.1)
        ir_t = [i / fps_ir + rng.uniform(0, 0.004) for i in range(rng.integers(1, 40))]
        vis_t = [0.05 + i / fps_vis + rng.uniform(0, 0.004) for i in range(rng.integers(1, 40))]
        pairer = TimestampPairer(None, offset, (float(fps_ir), float(fps_vis)))
        streams = {"ir": iter([Frame(None, t, i, 0.0) for i, t in enumerate(ir_t)]),
                   "vis": iter([Frame(None, t, i, 0.0) for i, t in enumerate(vis_t)])}
        got = []
        while (role := pairer.needs()) is not None:
            got += [(p.ir.index, p.vis.index) for p in pairer.add(role, next(streams[role], None))]
        expected = vis_nearest([t + offset for t in ir_t], vis_t, 0.5 / min(fps_ir, fps_vis))
        assert got == expected
        chosen = {i for i, _ in got}
        assert pairer.unpaired == {"ir": len(ir_t) - len(chosen), "vis": len(vis_t) - len(got)}
        assert pairer.reused == len(got) - len(chosen)


def test_25_and_30_fps_videos_pair_by_timestamp_with_ir_offset(fuser, frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:20], 25)  # FFV1: decoded frames equal the originals
    vis_path = write_video(tmp_path / "vis.mkv", vis[:24], 30)
    offset = -0.012  # the IR camera stamps its frames 12 ms late
    results = list(stream(fuser, str(ir_path), str(vis_path), ir_offset=offset))
    expected = vis_nearest([mkv_time(i, 25) + offset for i in range(20)], [mkv_time(j, 30) for j in range(24)],
                           0.5 / 25)
    assert [(m["ir_index"], m["vis_index"]) for _, m in results] == expected
    assert len(expected) == 24  # the output runs at the VIS rate: every VIS frame has a partner, 4 IR frames serve two
    for fused, meta in results:
        i, j = meta["ir_index"], meta["vis_index"]
        assert meta["ir_timestamp"] == pytest.approx(mkv_time(i, 25), abs=1e-9)
        assert meta["vis_timestamp"] == pytest.approx(mkv_time(j, 30), abs=1e-9)
        assert_close_images(fused, fuser.fuse(ir[i], vis[j]), f"IR {i} + VIS {j}")


def test_pipeline_counts_unpaired_frames(fuser, frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:20], 25)
    vis_path = write_video(tmp_path / "vis.mkv", vis[:12], 30)  # VIS ends first: the later IR frames are unpaired
    seen = []
    with Pipeline(fuser, str(ir_path), str(vis_path), sink=lambda image, meta: seen.append(meta["vis_index"]),
                  ir_offset=-0.012) as pipeline:
        assert pipeline.wait(60)
    stats = pipeline.join()
    expected = vis_nearest([mkv_time(i, 25) - 0.012 for i in range(20)], [mkv_time(j, 30) for j in range(12)], 0.02)
    assert (stats.read_ir, stats.read_vis) == (20, 12)  # the IR stream is read to its end, its tail counted
    assert stats.paired == stats.fused == stats.written == len(expected) == len(seen)
    chosen = {i for i, _ in expected}
    assert (stats.unpaired_ir, stats.unpaired_vis) == (20 - len(chosen), 12 - len(expected))
    assert stats.reused_ir == len(expected) - len(chosen) > 0  # IR at 25 fps serves some of the 30 fps VIS frames twice
    assert stats.dropped == 0 and pipeline.policy == "block"
    assert stats.latency_ms["p50"] > 0


def test_cli_index_pairing_equals_per_frame_fuse(fuser, frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:12], 25)
    vis_path = write_video(tmp_path / "vis.mkv", vis[:12], 25)
    for out in (tmp_path / "seq", tmp_path / "fused.mkv"):
        result = CliRunner().invoke(stream_main, ["--ir", str(ir_path), "--vis", str(vis_path), "--out", str(out),
                                                  "--pair", "index", "-m", "random:maefuse-micro", "--lossless", "-q"])
        assert result.exit_code == 0, result.output
        assert "wrote 12 fused frames" in result.output
        written = ([cv2.imread(str(p)) for p in sorted(out.glob("*.png"))] if out.is_dir() else read_video(out))
        assert len(written) == 12
        for n, image in enumerate(written):
            assert_close_images(image, fuser.fuse(ir[n], vis[n]), f"{out.name} frame {n}")


def test_side_by_side_and_16_bit_ir_push(fuser, frames):
    ir, vis = frames
    ir_source, vis_source = PushSource("IR", fps=25), PushSource("VIS", fps=25)
    got = []
    with Pipeline(fuser, ir_source, vis_source, sink=lambda image, meta: got.append(image), side_by_side=True,
                  pair="index", policy="block"):
        for n in range(3):
            grey = cv2.cvtColor(ir[n], cv2.COLOR_BGR2GRAY).astype(np.uint16) * 200 + 1000  # raw Y16-like
            ir_source.push(grey, n / 25)
            vis_source.push(vis[n], n / 25)
        ir_source.end()
        vis_source.end()
    assert len(got) == 3 and got[0].shape == (SIZE[1], 3 * SIZE[0], 3)


def push_at_rate(sources, images, fps, count, stop_after=True):
    def run():
        start = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, start + n / fps - time.monotonic()))
            for source, pool in zip(sources, images, strict=True):
                if not source.push(pool[n % len(pool)], n / fps):
                    return  # the pipeline stopped
        if stop_after:
            for source in sources:
                source.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_push_sources_at_camera_rate_run_and_stop(fuser, frames):
    ir, vis = frames
    ir_source, vis_source = PushSource("IR", fps=30), PushSource("VIS", fps=30)
    fused = []
    pipeline = Pipeline(fuser, ir_source, vis_source, sink=lambda image, meta: fused.append(meta))
    assert pipeline.policy == "drop-oldest"  # live sources
    pipeline.start()
    feeder = push_at_rate([ir_source, vis_source], [ir, vis], 30, 10**6, stop_after=False)
    time.sleep(2.0)
    running = pipeline.stats
    assert running.running and running.read_ir > 10 and running.fused > 0
    pipeline.stop()
    assert pipeline.wait(15), "pipeline did not stop"
    stats = pipeline.join()
    feeder.join(timeout=5)
    assert not feeder.is_alive()
    assert not stats.running and stats.written == stats.fused == len(fused) > 0
    assert [m["vis_index"] for m in fused] == sorted(m["vis_index"] for m in fused)


class SlowFuser:
    """The real Fuser behind a fixed extra delay per call: a backend slower than the camera. Records each call's
    duration (the service time) and when it ended."""

    def __init__(self, fuser, delay_s):
        self.fuser, self.delay_s, self.batch_size = fuser, delay_s, 1
        self.calls: list[float] = []

    def fuse_batch(self, pairs):
        start = time.monotonic()
        time.sleep(self.delay_s)
        fused = self.fuser.fuse_batch(pairs)
        self.calls.append(time.monotonic() - start)
        return fused


def test_drop_policy_bounds_latency_and_counts_drops(fuser, frames):
    ir, vis = frames
    depth = 2
    slow = SlowFuser(fuser, 0.15)
    ir_source, vis_source = PushSource("IR", fps=30, maxsize=1), PushSource("VIS", fps=30, maxsize=1)
    pipeline = Pipeline(slow, ir_source, vis_source, sink=lambda image, meta: None, policy="drop-oldest",
                        queue_size=depth)
    with pipeline:
        push_at_rate([ir_source, vis_source], [ir, vis], 30, 60).join()
        assert pipeline.wait(60)
    stats = pipeline.join()
    assert stats.dropped > 0 and stats.fused < 60
    # A pair waits behind at most `depth` queued pairs and the one being fused; the push buffer and the IR/VIS
    # queues in front hold at most 1 + depth frames at 30 fps. Slack for thread wake-ups on a loaded machine.
    service = max(slow.calls)
    bound = (depth + 1) * service + (1 + depth + 1) / 30 + 0.25
    assert stats.latency_ms["max"] / 1000 <= bound, (stats.latency_ms, bound, slow.calls)


def test_block_policy_loses_nothing(fuser, frames):
    ir, vis = frames
    ir_source = PushSource("IR", fps=30, policy="block", maxsize=2)
    vis_source = PushSource("VIS", fps=30, policy="block", maxsize=2)
    seen = []
    pipeline = Pipeline(SlowFuser(fuser, 0.05), ir_source, vis_source, sink=lambda image, meta: seen.append(meta),
                        policy="block", queue_size=2, pair="index")
    with pipeline:
        push_at_rate([ir_source, vis_source], [ir, vis], 30, 40).join()
        assert pipeline.wait(60)
    stats = pipeline.join()
    assert stats.dropped == 0 and stats.fused == stats.written == 40
    assert [m["ir_index"] for m in seen] == list(range(40))


class RecordingFuser:
    """The real Fuser, recording the size of every batch the pipeline hands it."""

    def __init__(self, fuser):
        self.fuser, self.batch_size, self.sizes = fuser, fuser.batch_size, []

    def fuse_batch(self, pairs):
        self.sizes.append(len(pairs))
        return self.fuser.fuse_batch(pairs)


def test_block_policy_fills_batches_and_does_not_wait_at_the_end(fuser, frames, tmp_path):
    ir, vis = frames
    write_video(tmp_path / "ir.mkv", ir[:10], 25)
    write_video(tmp_path / "vis.mkv", vis[:10], 25)
    recording = RecordingFuser(fuser)
    started = time.monotonic()
    with Pipeline(recording, str(tmp_path / "ir.mkv"), str(tmp_path / "vis.mkv"), sink=lambda image, meta: None,
                  batch_wait_ms=5000) as pipeline:
        assert pipeline.wait(60)
    stats = pipeline.join()
    assert stats.fused == 10 and recording.sizes == [4, 4, 2]  # full batches; the rest once the files end
    assert time.monotonic() - started < 5.0  # the end of the stream ends the wait for a full batch


def test_gstreamer_live_videotestsrc_sources_and_appsrc_sink(fuser, tmp_path):
    require_module("gi", "apt-get install libgirepository1.0-dev libcairo2-dev gir1.2-gst-plugins-base-1.0, then "
                   "pip install -e '.[gst]'")
    out = tmp_path / "gst.avi"
    ir = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=128,height=96,framerate=25/1,format=GRAY16_LE"
    vis = "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=128,height=96,framerate=30/1"
    pipeline = Pipeline(fuser, ir, vis, sink=f"jpegenc ! avimux ! filesink location={out}", max_frames=12)
    assert pipeline.policy == "drop-oldest"
    pipeline.start()
    assert pipeline.wait(60), "live GStreamer pipeline did not stop"
    stats = pipeline.join()
    assert stats.paired == 12 and stats.written == stats.fused
    assert stats.read_ir >= 12 and stats.read_vis >= 12 and stats.latency_ms["p99"] > 0
    assert len(read_video(out)) == stats.written


def run_cli(args):
    """maefuse-stream in-process (the SIGINT test runs the real console process)."""
    return CliRunner().invoke(stream_main, args, catch_exceptions=False)


def test_sigint_mid_stream_leaves_a_playable_file_with_the_reported_frames(frames, tmp_path):
    ir, vis = frames
    count = 6000  # about 11 s of fusing at this size: the first status line (2 s) comes well before the end
    ir_path = write_video(tmp_path / "ir.mkv", [ir[n % 40] for n in range(count)], 25)
    vis_path = write_video(tmp_path / "vis.mkv", [vis[n % 40] for n in range(count)], 25)
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "maefuse_deploy.cli.stream", "--ir", str(ir_path), "--vis", str(vis_path), "--out",
         str(out), "-m", "random:maefuse-micro", "--batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # wait until frames are being written
        if line.startswith("in ") and " fused 0 " not in line:
            break
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - start < 15, "did not exit promptly"
    assert process.returncode == 0, stderr
    assert "stopped on SIGINT" in stderr
    written = int(stdout.split("wrote ")[-1].split()[0])
    assert 0 < written < count
    assert len(read_video(out)) == written
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*")), "temporary file left behind"


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_bad_inputs_give_one_line_errors(frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:5], 25)
    vis_path = write_video(tmp_path / "vis.mkv", vis[:5], 25)
    common = ["-m", "random:maefuse-micro", "-q"]
    error = one_line_error(run_cli(["--ir", str(tmp_path / "nope.mp4"), "--vis", str(vis_path), "--out",
                                    str(tmp_path / "a.mp4"), *common]))
    assert "IR video not found" in error
    error = one_line_error(run_cli(["--ir", "rtsp://127.0.0.1:9/none", "--vis", str(vis_path), "--out",
                                    str(tmp_path / "a.mp4"), *common]))
    assert "cannot be opened" in error
    if importlib.util.find_spec("gi") is not None:  # GStreamer strings need the gst extra (the test above says so)
        error = one_line_error(run_cli(["--ir", "videotestsrc num-buffers=0 ! video/x-raw,width=128,height=96",
                                        "--vis", str(vis_path), "--out", str(tmp_path / "a.mp4"), *common]))
        assert "before its first frame" in error
    big = write_video(tmp_path / "big.mkv", [cv2.resize(v, (160, 120)) for v in vis[:5]], 25)
    error = one_line_error(run_cli(["--ir", str(ir_path), "--vis", str(big), "--out", str(tmp_path / "a.mp4"),
                                    *common]))
    assert "IR frames are 128x96 but VIS frames are 160x120" in error
    calibration = tmp_path / "H.json"
    calibration.write_text('{"homography": [[1,0,0],[0,1,0],[0,0,1]], "model": "homography", '
                           '"ir_size": [640, 512], "vis_size": [640, 480]}')
    error = one_line_error(run_cli(["--ir", str(ir_path), "--vis", str(vis_path), "--out", str(tmp_path / "a.mp4"),
                                    "--homography", str(calibration), *common]))
    assert "calibration is for IR 640x512 -> VIS 640x480" in error
    assert not (tmp_path / "a.mp4").exists() and not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_truncated_video_keeps_a_valid_partial_output(frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.avi", ir[:40], 25, "MJPG")
    vis_path = write_video(tmp_path / "vis.mkv", vis[:40], 25)
    data = ir_path.read_bytes()
    ir_path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    result = run_cli(["--ir", str(ir_path), "--vis", str(vis_path), "--out", str(out), "-m", "random:maefuse-micro",
                      "--pair", "index", "-q"])
    error = one_line_error(result)
    assert "truncated" in error
    written = int(result.stdout.split("wrote ")[-1].split()[0])
    assert 0 < written < 40
    assert len(read_video(out)) == written


def test_leaving_the_loop_early_stops_the_stream(fuser, frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:30], 25)
    vis_path = write_video(tmp_path / "vis.mkv", vis[:30], 25)
    start = time.monotonic()
    taken = []
    for _fused, meta in stream(fuser, str(ir_path), str(vis_path), pair="index", queue_size=1):
        taken.append(meta["vis_index"])
        if len(taken) == 2:
            break
    assert taken == [0, 1] and time.monotonic() - start < 30
    assert not [t for t in threading.enumerate() if t.name.startswith("maefuse-") and t.is_alive()]
