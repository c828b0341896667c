"""maefuse-stream and stream.Pipeline under the reliability contract (docs/reliability.md, "maefuse-stream"):
outputs that are inputs, existing outputs, SIGKILL leftovers, GStreamer file sources that must not drop, block
policy with push sources, errors out of the context manager, settings that discard every frame, and the checks
that must happen before the model loads. Real videos written in tmp_path, real GStreamer, real processes, the
micro model."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from conftest import require_module, write_video

from maefuse_deploy.atomic import TEMP_PREFIX
from maefuse_deploy.cli.stream import main as stream_main
from maefuse_deploy.errors import InputError
from maefuse_deploy.stream import Pipeline, PushSource, stream

SIZE = (128, 96)  # (W, H)
RANDOM = "random:maefuse-micro"


@pytest.fixture(scope="module")
def frames(msrs):
    """Thirty-two distinct registered frames cut from the real MSRS pairs: (IR as 3-channel grey, VIS BGR)."""
    names = sorted(p.stem for p in (msrs / "ir").glob("*.png"))
    ir, vis = [], []
    for k in range(32):
        n = names[k % len(names)]
        x, y = (k * 53) % (640 - 256), (k * 31) % (480 - 192)
        for out, side in ((ir, "ir"), (vis, "vi")):
            image = cv2.imread(str(msrs / side / f"{n}.png"))
            out.append(cv2.resize(image[y : y + 192, x : x + 256], SIZE, interpolation=cv2.INTER_AREA))
    return ir, vis


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args: list[str]):
    return CliRunner().invoke(stream_main, [*args, "-q"], catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def videos(frames, tmp_path):
    ir, vis = frames
    return write_video(tmp_path / "ir.mkv", ir[:12]), write_video(tmp_path / "vis.mkv", vis[:12])


# --- output safety --------------------------------------------------------------------------------------------


def test_an_input_as_output_is_refused_before_the_model_loads(videos, tmp_path):
    ir, vis = videos
    before = digest(ir)
    # A model that does not exist: the error must be the output, found before any model is looked at.
    error = one_line_error(run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(ir),
                                    "-m", str(tmp_path / "none.safetensors")]))
    assert "also an input" in error and str(ir) in error
    assert digest(ir) == before


def test_an_existing_video_is_refused_then_replaced_only_by_a_clean_run(videos, frames, tmp_path):
    ir, vis = videos
    out = tmp_path / "fused.mkv"
    assert run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "-m", RANDOM]).exit_code == 0
    assert count_frames(out) == 12
    before = digest(out)
    error = one_line_error(run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out),
                                    "-m", str(tmp_path / "none.safetensors")]))
    assert "already exists" in error and "--overwrite" in error
    assert digest(out) == before
    # A failing run with --overwrite (a truncated IR recording) leaves the earlier video as it was.
    truncated = tmp_path / "cut.avi"
    write_video(truncated, frames[0][:30], fourcc="MJPG")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    long_vis = write_video(tmp_path / "vis30.mkv", frames[1][:30])
    failed = run_cli(["--ir", str(truncated), "--vis", str(long_vis), "--out", str(out), "--overwrite", "-m",
                      RANDOM, "--pair", "index"])
    assert "truncated" in one_line_error(failed)
    assert "keeps the earlier video" in failed.output
    assert digest(out) == before
    replaced = run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--overwrite", "-m", RANDOM,
                        "--frames", "5"])
    assert replaced.exit_code == 0, replaced.output
    assert count_frames(out) == 5
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_an_image_folder_holds_only_the_frames_of_the_last_run(videos, tmp_path):
    ir, vis = videos
    out = tmp_path / "frames"
    assert run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "-m", RANDOM]).exit_code == 0
    assert len(list(out.glob("*.png"))) == 12
    (out / "notes.txt").write_text("mine")
    error = one_line_error(run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--frames", "5",
                                    "-m", str(tmp_path / "none.safetensors")]))
    assert "already holds 12 frames" in error and "--overwrite" in error
    result = run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--frames", "5", "--overwrite",
                      "-m", RANDOM])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{n:06d}.png" for n in range(5)] + ["notes.txt"]


def test_sigkill_leaves_a_recognisable_temporary_the_next_run_removes(frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:16])
    vis_path = write_video(tmp_path / "vis.mkv", vis[:16])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "k.mkv"
    script = (
        "import sys, time\n"
        "from maefuse_deploy import Fuser\n"
        "from maefuse_deploy.stream import Pipeline\n"
        f"fuser = Fuser.from_checkpoint({RANDOM!r}, batch_size=1)\n"
        "class Stalling:\n"
        "    batch_size = 1\n"
        "    calls = 0\n"
        "    def fuse_batch(self, pairs):\n"
        "        self.calls += 1\n"
        "        if self.calls > 2:\n"
        "            time.sleep(600)  # the first frames are in the video; the run is killed here\n"
        "        return fuser.fuse_batch(pairs)\n"
        "Pipeline(Stalling(), sys.argv[1], sys.argv[2], sink=sys.argv[3], pair='index').start().wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(ir_path), str(vis_path), str(out)],
                            preexec_fn=lambda: os.umask(0o022))
    try:
        deadline = time.monotonic() + 60
        while not list(out_dir.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # the first frames reach the file
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    leftovers = list(out_dir.iterdir())
    assert len(leftovers) == 1, leftovers
    assert re.fullmatch(re.escape(TEMP_PREFIX) + rf"{proc.pid}-\w+-k\.mkv", leftovers[0].name), leftovers[0].name
    assert stat.S_IMODE(leftovers[0].stat().st_mode) == 0o644
    (out_dir / "notes.txt").write_text("mine")
    old = os.umask(0o022)
    try:
        result = run_cli(["--ir", str(ir_path), "--vis", str(vis_path), "--out", str(out), "-m", RANDOM])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["k.mkv", "notes.txt"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and count_frames(out) == 16


# --- data silently lost ---------------------------------------------------------------------------------------


def test_gstreamer_file_pipelines_deliver_every_frame(fuser, frames, tmp_path):
    require_module("gi", "apt-get install libgirepository1.0-dev libcairo2-dev gir1.2-gst-plugins-base-1.0, then "
                   "pip install -e '.[gst]'")
    ir, vis = frames
    clip_ir = [ir[n % 32] for n in range(50)]
    clip_vis = [vis[n % 32] for n in range(50)]
    ir_path = write_video(tmp_path / "ir.mkv", clip_ir, fourcc="MJPG")
    vis_path = write_video(tmp_path / "vis.mkv", clip_vis, fourcc="MJPG")
    seen = []
    with Pipeline(fuser, f"filesrc location={ir_path} ! decodebin ! videoconvert",
                  f"filesrc location={vis_path} ! decodebin ! videoconvert",
                  sink=lambda image, meta: seen.append(meta["ir_index"]), pair="index") as pipeline:
        assert pipeline.policy == "block"
        assert pipeline.wait(120)
    stats = pipeline.join()
    assert (stats.read_ir, stats.read_vis) == (50, 50)
    assert stats.fused == stats.written == 50 and stats.dropped == 0
    assert seen == list(range(50))


class SlowFuser:
    """The real Fuser behind a fixed delay per call: a backend slower than the host pushes."""

    def __init__(self, fuser, delay_s):
        self.fuser, self.delay_s, self.batch_size = fuser, delay_s, 1

    def fuse_batch(self, pairs):
        time.sleep(self.delay_s)
        return self.fuser.fuse_batch(pairs)


def test_block_policy_makes_default_push_sources_block(fuser, frames):
    ir, vis = frames
    ir_in, vis_in = PushSource("IR", fps=30), PushSource("VIS", fps=30)
    seen = []
    with Pipeline(SlowFuser(fuser, 0.05), ir_in, vis_in, sink=lambda image, meta: seen.append(meta["ir_index"]),
                  policy="block", pair="index") as pipeline:
        for n in range(10):  # as fast as the host can: the pipeline must hold the pushes back, not drop them
            assert ir_in.push(ir[n], n / 30) and vis_in.push(vis[n], n / 30)
        ir_in.end()
        vis_in.end()
        assert pipeline.wait(60)
    stats = pipeline.join()
    assert stats.fused == 10 and stats.dropped == 0 and seen == list(range(10))
    with pytest.raises(InputError, match="drop-oldest"):
        Pipeline(fuser, PushSource("IR", policy="drop-oldest"), PushSource("VIS"), policy="block")


def test_the_context_manager_raises_a_source_error(fuser, frames, tmp_path):
    ir, vis = frames
    truncated = write_video(tmp_path / "ir.avi", ir[:30], fourcc="MJPG")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    vis_path = write_video(tmp_path / "vis.mkv", vis[:30])
    written = []
    pipeline = Pipeline(fuser, str(truncated), str(vis_path), pair="index", sink=lambda image, meta: written.append(1))
    with pytest.raises(InputError, match="truncated"), pipeline:
        pipeline.wait(60)
    assert 0 < len(written) < 30  # what came before the error was still delivered


# --- settings that discard everything, and bad sources ------------------------------------------------------


@pytest.mark.parametrize("option", [["--tolerance-ms", "-5"], ["--max-latency-ms", "-1"], ["--max-latency-ms", "0"],
                                    ["--fps", "0"], ["--fps", "-5"], ["--batch-wait-ms", "-1"]])
def test_out_of_range_options_are_usage_errors(videos, tmp_path, option):
    ir, vis = videos
    result = CliRunner().invoke(stream_main, ["--ir", str(ir), "--vis", str(vis), "--out", str(tmp_path / "o.mkv"),
                                              "-m", RANDOM, *option])
    assert result.exit_code == 2, result.output
    assert option[0] in result.output
    assert not (tmp_path / "o.mkv").exists()


def test_a_run_that_pairs_nothing_is_an_error_naming_the_cause(fuser, videos, tmp_path):
    ir, vis = videos
    result = run_cli(["--ir", str(ir), "--vis", str(vis), "--out", str(tmp_path / "o.mkv"), "-m", RANDOM,
                      "--ir-offset-ms", "10000"])
    error = one_line_error(result)
    assert "no IR frame paired" in error and "--ir-offset-ms" in error and "--tolerance-ms" in error
    assert not (tmp_path / "o.mkv").exists()
    late = Pipeline(SlowFuser(fuser, 0.0), str(ir), str(vis), sink=lambda image, meta: None, max_latency_ms=1e-6)
    with pytest.raises(InputError, match="--max-latency-ms"), late:
        late.wait(60)
    with pytest.raises(InputError, match="tolerance"):
        Pipeline(fuser, str(ir), str(vis), tolerance=-0.005)
    with pytest.raises(InputError, match="fps"):
        Pipeline(fuser, str(ir), str(vis), fps=0)


def test_index_pairing_of_different_rates_warns(frames, tmp_path):
    ir, vis = frames
    ir_path = write_video(tmp_path / "ir.mkv", ir[:10], 25)
    vis_path = write_video(tmp_path / "vis.mkv", vis[:10], 30)
    result = CliRunner().invoke(stream_main, ["--ir", str(ir_path), "--vis", str(vis_path), "--out",
                                              str(tmp_path / "o.mkv"), "--pair", "index", "-m", RANDOM, "-q"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: index pairing")]
    assert len(warnings) == 1 and "IR at 25 fps with VIS at 30 fps" in warnings[0], result.output


def test_source_problems_are_found_before_the_model_loads(videos, frames, tmp_path):
    ir, vis = videos
    none = ["-m", str(tmp_path / "none.safetensors")]
    still = tmp_path / "frame.png"
    cv2.imwrite(str(still), frames[0][0])
    assert "still image" in one_line_error(run_cli(["--ir", str(still), "--vis", str(vis), "--out",
                                                    str(tmp_path / "o.mkv"), *none]))
    big = write_video(tmp_path / "big.mkv", [cv2.resize(v, (160, 120)) for v in frames[1][:3]])
    assert "IR frames are 128x96 but VIS frames are 160x120" in one_line_error(
        run_cli(["--ir", str(ir), "--vis", str(big), "--out", str(tmp_path / "o.mkv"), *none]))
    assert "--raw-ir" in one_line_error(run_cli(["--ir", str(ir), "--vis", str(vis), "--out",
                                                 str(tmp_path / "o.mkv"), "--raw-ir", *none]))
    assert "not found" in one_line_error(run_cli(["--ir", str(tmp_path / "nope.mkv"), "--vis", str(vis), "--out",
                                                  str(tmp_path / "o.mkv"), *none]))
    assert not (tmp_path / "o.mkv").exists()


def test_stream_takes_a_path_as_homography(fuser, videos, tmp_path):
    ir, vis = videos
    calibration = tmp_path / "H.json"
    calibration.write_text('{"homography": [[1,0,0],[0,1,0],[0,0,1]], "model": "homography", '
                           f'"ir_size": [{SIZE[0]}, {SIZE[1]}], "vis_size": [{SIZE[0]}, {SIZE[1]}]}}')
    fused = [image for image, _ in stream(fuser, str(ir), str(vis), homography=calibration, pair="index")]
    assert len(fused) == 12 and fused[0].shape == (SIZE[1], SIZE[0], 3)


def test_help_names_the_model_spellings_and_what_auto_means():
    text = " ".join(CliRunner().invoke(stream_main, ["--help"]).output.split())
    assert "random:CONFIG" in text and "a config name (random weights)" not in text
    assert "cuda when a GPU is visible" in text
    assert "--overwrite" in text
