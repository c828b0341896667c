"""The fault suite (issue 13): what a failing, interrupted or killed run leaves behind, hostile image headers,
video mismatches, output permissions and the frictions a new user hit. Each test reproduces a reported case with
real files, real processes and the real CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.atomic import TEMP_PREFIX, atomic_path, remove_leftovers
from maefuse_deploy.cli.eval import main as eval_main
from maefuse_deploy.cli.export import main as export_main
from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.cli.train import main as train_main
from maefuse_deploy.errors import InputError, MaeFuseError, UnavailableError
from maefuse_deploy.io import DEFAULT_MAX_PIXELS, header_size, read_image
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.model.maefuse import build_model
from maefuse_deploy.model.sources import resolve_torch_model
from maefuse_deploy.runtime.files import fuse_pairs, plan_fuse_job
from maefuse_deploy.runtime.fuser import Fuser, ResizeWarning
from maefuse_deploy.runtime.limits import check_native_pass, native_pass_bytes
from maefuse_deploy.train.trainer import Trainer, TrainOptions

REPO = Path(__file__).resolve().parents[1]
RANDOM = "random:maefuse-micro"
NAMES = ["00537D", "00556D", "00633D", "00858N"]


def run_fuse(args: list[str]):
    return CliRunner().invoke(fuse_main, args, catch_exceptions=False)


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file in ``folder``: name -> (SHA-256, mtime in ns)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{TEMP_PREFIX}*")) if folder.is_dir() else []


@pytest.fixture
def pairs(msrs, tmp_path):
    """Four real MSRS pairs, as JPEG files (the format of most public sets), in ir/ and vi/ folders the test may
    break."""
    for side in ("ir", "vi"):
        (tmp_path / side).mkdir()
        for name in NAMES:
            image = cv2.imread(str(msrs / side / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(tmp_path / side / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return tmp_path


def fuse_into(pairs: Path, out: Path, *extra: str):
    return run_fuse(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vi"), "--out", str(out), "-c", RANDOM,
                     "--batch", "1", *extra])


# -- 1. output safety ------------------------------------------------------------------------------------------


def test_failing_rerun_keeps_earlier_results(pairs):
    out = pairs / "out"
    assert fuse_into(pairs, out).exit_code == 0
    before = snapshot(out)
    assert len(before) == len(NAMES)
    # The reported case: more pairs into the folder of earlier results, the last VIS unreadable.
    for side in ("ir", "vi"):
        shutil.copy(pairs / side / "00537D.jpg", pairs / side / "99999X.jpg")
    (pairs / "vi" / "99999X.jpg").write_text("not a JPEG")
    refused = fuse_into(pairs, out)
    assert "already exist" in one_line_error(refused) and "--overwrite" in refused.output
    failed = fuse_into(pairs, out, "--overwrite")
    assert "99999X.jpg" in one_line_error(failed)
    assert snapshot(out) == before  # nothing deleted, nothing replaced, nothing added
    assert temp_files(out) == []


def test_interrupted_rerun_keeps_earlier_results(pairs):
    out = pairs / "out"
    assert fuse_into(pairs, out).exit_code == 0
    before = snapshot(out)
    job = plan_fuse_job(pairs / "ir", pairs / "vi", out, overwrite=True)
    done = []

    def interrupt_after_two(count: int) -> None:
        done.append(count)
        if len(done) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, here at a known point

    with Fuser.from_checkpoint(RANDOM, batch_size=1) as fuser, pytest.raises(KeyboardInterrupt):
        fuse_pairs(fuser, job, progress=interrupt_after_two)
    assert snapshot(out) == before
    assert temp_files(out) == []


def test_overwrite_replaces_only_after_success(pairs):
    out = pairs / "out"
    assert fuse_into(pairs, out).exit_code == 0
    before = snapshot(out)
    again = fuse_into(pairs, out, "--overwrite", "--processing", "native")
    assert again.exit_code == 0, again.output
    after = snapshot(out)
    assert after.keys() == before.keys() and all(after[k][1] != before[k][1] for k in before)


def test_failed_run_into_a_new_folder_leaves_no_folder(pairs):
    (pairs / "vi" / "00858N.jpg").write_text("not a JPEG")
    out = pairs / "new" / "out"
    one_line_error(fuse_into(pairs, out))
    assert not out.exists()


@pytest.mark.parametrize("where", ["is", "inside", "contains"])
def test_out_overlapping_an_input_folder_is_refused_before_anything(pairs, where):
    ir = pairs / "ir"
    out = {"is": ir, "inside": ir / "fused", "contains": pairs}[where]
    before = snapshot(ir)
    # A checkpoint that does not exist: the overlap must be found before any model is looked at.
    result = run_fuse(["--ir", str(ir), "--vis", str(pairs / "vi"), "--out", str(out), "-c", "nowhere.safetensors"])
    line = one_line_error(result)
    assert "overlaps the IR input folder" in line and "nowhere" not in line
    assert snapshot(ir) == before and not (ir / "fused").exists()


def test_out_file_equal_to_an_input_is_refused(pairs):
    ir, vis = pairs / "ir" / "00537D.jpg", pairs / "vi" / "00537D.jpg"
    before = vis.read_bytes()
    result = run_fuse(["--ir", str(ir), "--vis", str(vis), "--out", str(vis), "-c", RANDOM, "--format", "jpg",
                       "--lossy", "--overwrite"])
    assert "is one of the input images" in one_line_error(result)
    assert vis.read_bytes() == before


def test_out_single_png_for_one_pair_is_a_file(pairs, tmp_path):
    target = tmp_path / "single.png"
    result = run_fuse(["--ir", str(pairs / "ir" / "00537D.jpg"), "--vis", str(pairs / "vi" / "00537D.jpg"),
                       "--out", str(target), "-c", RANDOM, "--side-by-side"])
    assert result.exit_code == 0, result.output
    assert target.is_file() and cv2.imread(str(target)).shape == cv2.imread(str(pairs / "vi" / "00537D.jpg")).shape
    assert (tmp_path / "single_sbs.png").is_file()
    assert f"wrote 1 fused image and 1 side-by-side for 1 pair to {target}" in result.output
    many = run_fuse(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vi"), "--out", str(tmp_path / "many.png"),
                     "-c", RANDOM])
    assert "names one image file but there are 4 pairs" in one_line_error(many)
    clash = run_fuse(["--ir", str(pairs / "ir" / "00537D.jpg"), "--vis", str(pairs / "vi" / "00537D.jpg"),
                      "--out", str(tmp_path / "x.png"), "--format", "tif", "-c", RANDOM])
    assert "--format is tif" in one_line_error(clash)


def test_sigkill_leftover_is_removed_by_the_next_run(pairs, tmp_path):
    """A video run killed with SIGKILL leaves its temporary output; the next run into that folder removes it."""
    ir_video, vis_video = make_videos(pairs, tmp_path, frames=6)
    out = tmp_path / "videos" / "fused.avi"
    script = (
        "import sys, time\n"
        "from maefuse_deploy import Fuser\n"
        "from maefuse_deploy.runtime.video import fuse_video, plan_video\n"
        "job = plan_video(sys.argv[1], sys.argv[2], sys.argv[3])\n"
        "def stall(count):\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
        f"fuse_video(Fuser.from_checkpoint({RANDOM!r}, batch_size=2), job, progress=stall)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(ir_video), str(vis_video), str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        leftovers = temp_files(out.parent)
        assert len(leftovers) == 1 and leftovers[0].name.endswith("-fused.avi")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert temp_files(out.parent) == leftovers  # SIGKILL runs no cleanup: the leftover is there
    unrelated = out.parent / "notes.txt"
    unrelated.write_text("mine")
    result = run_fuse(["--ir", str(ir_video), "--vis", str(vis_video), "--out", str(out), "-c", RANDOM])
    assert result.exit_code == 0, result.output
    assert temp_files(out.parent) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["fused.avi", "notes.txt"]


def test_leftovers_of_live_processes_are_kept(tmp_path):
    alive = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-abc-x.png"  # our parent (pytest's launcher) is alive
    alive.write_bytes(b"in progress")
    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abc-y.png"
    mine.write_bytes(b"in progress")
    assert remove_leftovers(tmp_path) == []
    assert alive.exists() and mine.exists()


def test_outputs_are_0644_under_the_default_umask(pairs, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "fused"
        assert fuse_into(pairs, out, "--side-by-side").exit_code == 0
        ir_video, vis_video = make_videos(pairs, tmp_path, frames=2)
        video = tmp_path / "fused.avi"
        assert run_fuse(["--ir", str(ir_video), "--vis", str(vis_video), "--out", str(video), "-c", RANDOM]
                        ).exit_code == 0
        weights = tmp_path / "model.safetensors"
        save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=0), weights)
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("{}")
        files = [*out.iterdir(), video, weights, tmp_path / "report.json"]
        assert len(files) == 2 * len(NAMES) + 3
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    finally:
        os.umask(old)


# -- 2. input limits -------------------------------------------------------------------------------------------


def zero_png(width: int, height: int, rows_per_block: int = 500) -> bytes:
    """A valid grey PNG of zeros that declares width x height: a few hundred KB for 30000x30000.

    Built from one deflate block repeated after full flushes (the compressor's state resets, so identical input
    compresses to identical bytes) instead of compressing 900 MB; the checksum of all-zero data is a formula.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    assert height % rows_per_block == 0
    block = b"\x00" * ((width + 1) * rows_per_block)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = ((((width + 1) * height) % 65521) << 16) | 1  # Adler-32 of n zero bytes
    stream = b"\x78\xda" + first + repeat * (height // rows_per_block - 1) + b"\x03\x00" + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def test_zero_png_is_a_real_decodable_image():
    image = cv2.imdecode(np.frombuffer(zero_png(1200, 1000), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (1000, 1200) and image.max() == 0


def test_30000x30000_png_is_refused_fast_with_little_memory(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(zero_png(30000, 30000))
    assert bomb.stat().st_size < 2_000_000
    # Peak memory is read inside the child (VmHWM: this process image's high-water mark). The rusage of a child
    # would also count the pytest process it was forked from.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from maefuse_deploy.errors import InputError\n"
        "from maefuse_deploy.io import read_image\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    read_image(sys.argv[1], 'IR')\n"
        "except InputError as exc:\n"
        "    seconds = time.perf_counter() - start\n"
        "    peak = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))\n"
        "    print(f'{seconds:.3f}', int(peak.split()[1]), exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seconds, peak_kib, message = result.stdout.split(" ", 2)
    assert float(seconds) < 2.0
    assert int(peak_kib) * 1024 < 500 * 2**20
    assert "30000x30000" in message and "--max-pixels" in message and "\n" not in message.strip()


def test_bomb_is_refused_by_the_cli_before_the_model_loads(pairs, tmp_path):
    (tmp_path / "bomb").mkdir()
    bomb = tmp_path / "bomb" / "ir.png"
    bomb.write_bytes(zero_png(30000, 30000))
    start = time.perf_counter()
    result = run_fuse(["--ir", str(bomb), "--vis", str(pairs / "vi" / "00537D.jpg"), "--out",
                       str(tmp_path / "o"), "-c", "nowhere.safetensors"])
    assert time.perf_counter() - start < 2.0
    assert "30000x30000" in one_line_error(result)
    raised = run_fuse(["--ir", str(pairs / "ir" / "00537D.jpg"), "--vis", str(pairs / "vi" / "00537D.jpg"),
                       "--out", str(tmp_path / "o"), "-c", RANDOM, "--max-pixels", "1000"])
    assert "(0.307 megapixels), over the limit of 0.001 megapixels" in one_line_error(raised)


def test_header_sizes_match_the_decoder(pairs, msrs):
    for path in [*sorted((pairs / "vi").glob("*.jpg")), *sorted((msrs / "ir").iterdir())]:
        image = read_image(path)
        assert header_size(path.read_bytes()) == (image.shape[1], image.shape[0]), path
    _ok, bmp = cv2.imencode(".bmp", np.zeros((37, 55, 3), np.uint8))
    assert header_size(bmp.tobytes()) == (55, 37)
    assert DEFAULT_MAX_PIXELS >= 40_000_000  # an 8K frame pair still fuses by default


def test_native_memory_estimate_refuses_what_does_not_fit():
    l640 = CONFIGS["maefuse-l640"]
    # A 4K frame on the released-size network at batch 8 needs tens of GiB: refused with the numbers.
    with pytest.raises(InputError, match=r"240x135 token grid needing about \d+\.\d GiB.*--policy official"):
        check_native_pass(l640, "cpu", 2160, 3840, 8)
    assert native_pass_bytes(l640, 480, 640, 1) < 2**30  # a VGA frame stays small
    check_native_pass(CONFIGS["maefuse-tiny"], "cpu", 480, 640, 1)


# -- 3. videos -------------------------------------------------------------------------------------------------


def make_videos(pairs: Path, folder: Path, frames: int, vis_frames: int | None = None) -> tuple[Path, Path]:
    size = (160, 128)
    paths = []
    for role, count in (("ir", frames), ("vi", vis_frames or frames)):
        image = cv2.resize(cv2.imread(str(pairs / role / "00537D.jpg")), size)
        path = folder / f"{role}_{count}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
        for shift in range(count):
            writer.write(np.roll(image, shift * 3, axis=1))
        writer.release()
        paths.append(path)
    return paths[0], paths[1]


def test_image_given_as_video_is_refused(pairs, tmp_path):
    ir_video, _ = make_videos(pairs, tmp_path, frames=3)
    out = tmp_path / "fused.mp4"
    result = run_fuse(["--ir", str(ir_video), "--vis", str(pairs / "vi" / "00537D.jpg"), "--out", str(out),
                       "-c", "nowhere.safetensors"])
    assert "is a video but VIS" in one_line_error(result)
    assert not out.exists() and temp_files(tmp_path) == []


def test_unequal_lengths_warn_with_counts_and_strict_fails(pairs, tmp_path):
    ir_video, vis_video = make_videos(pairs, tmp_path, frames=5, vis_frames=3)
    out = tmp_path / "fused.avi"
    result = run_fuse(["--ir", str(ir_video), "--vis", str(vis_video), "--out", str(out), "-c", RANDOM])
    assert result.exit_code == 0, result.output
    assert "warning: IR video has 5 frames but VIS video has 3: only the first 3 pair up" in result.output
    assert "wrote 3 fused frames" in result.output
    strict_out = tmp_path / "strict.avi"
    strict = run_fuse(["--ir", str(ir_video), "--vis", str(vis_video), "--out", str(strict_out), "-c", RANDOM,
                       "--strict"])
    assert "5 frames but VIS video has 3" in one_line_error(strict)
    assert not strict_out.exists() and temp_files(tmp_path) == []


def test_truncated_video_is_reported(pairs, tmp_path):
    ir_video, vis_video = make_videos(pairs, tmp_path, frames=30)
    data = ir_video.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])  # the header still declares 30 frames
    capture = cv2.VideoCapture(str(truncated))
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert declared == 30
    result = run_fuse(["--ir", str(truncated), "--vis", str(vis_video), "--out", str(tmp_path / "f.avi"), "-c",
                       RANDOM])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "container declares" in line]
    assert len(warning) == 1 and "of the 30 its container declares" in warning[0]
    assert "IR video has" in result.output  # and it is shorter than the VIS


# -- 4. what a new user tripped on -----------------------------------------------------------------------------


def test_format_is_validated_before_the_model_loads(pairs, tmp_path):
    for fmt in ("gif", "pgm"):
        result = run_fuse(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vi"), "--out", str(tmp_path / fmt),
                           "-c", "nowhere.safetensors", "--format", fmt])
        assert result.exit_code == 2 and "--format" in result.output and "nowhere" not in result.output
        assert not (tmp_path / fmt).exists()
    with pytest.raises(InputError, match="unknown output format 'gif'"):
        plan_fuse_job(pairs / "ir", pairs / "vi", tmp_path / "o", fmt="gif")


def test_exit_codes_are_distinct():
    assert MaeFuseError("x").exit_code == 1 and InputError("x").exit_code == 1
    assert UnavailableError("x").exit_code == 3  # click's usage errors exit 2
    result = CliRunner().invoke(fuse_main, ["--no-such-option"])
    assert result.exit_code == 2


def test_model_names_mean_trained_weights():
    tiny = resolve_torch_model("maefuse-tiny")
    builtin = resolve_torch_model(None)
    assert resolve_torch_model("maefuse-rt-linear").path == builtin.path
    assert "built-in maefuse-rt-linear" in builtin.description
    softmax = resolve_torch_model("maefuse-rt")
    assert softmax.path not in (None, builtin.path) and "shipped maefuse-rt" in softmax.description
    assert tiny.path is not None and tiny.path != builtin.path and not tiny.warnings
    assert "shipped maefuse-tiny" in tiny.description
    random = resolve_torch_model("random:maefuse-tiny")
    assert random.path is None and "RANDOM" in random.description and random.warnings
    for name, weights in zip(tiny.model.state_dict().values(), random.model.state_dict().values(), strict=True):
        if name.numel() > 1 and not np.allclose(name.numpy(), weights.numpy()):
            break
    else:
        pytest.fail("random:maefuse-tiny has the trained weights")
    with pytest.raises(InputError, match=r"maefuse-micro is a model configuration without shipped trained weights"
                                         r".*random:maefuse-micro"):
        resolve_torch_model("maefuse-micro")
    with pytest.raises(InputError, match="unknown model config 'nope'"):
        resolve_torch_model("random:nope")


def test_native_model_export_needs_the_camera_size_and_fuse_warns_on_resize(tmp_path):
    native = tmp_path / "native.safetensors"
    model = build_model(CONFIGS["maefuse-micro"], seed=0)
    model.config = model.config.replace(policy="native")
    save_checkpoint(model, native)
    refused = CliRunner().invoke(export_main, ["--onnx", str(tmp_path / "a.onnx"), "-c", str(native), "--no-verify"])
    line = one_line_error(refused)
    assert "native policy" in line and "--height H --width W" in line
    assert not (tmp_path / "a.onnx").exists()
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.zeros((48, 80, 3), np.uint8))
    sized = CliRunner().invoke(export_main, ["--onnx", str(tmp_path / "b.onnx"), "-c", str(native), "--no-verify",
                                             "--size-from", str(frame)])
    assert sized.exit_code == 0, sized.output
    assert "bakes in a 80x48 grid" in sized.output
    rng = np.random.default_rng(0)
    ir, vis = rng.integers(0, 255, (48, 80), np.uint8), rng.integers(0, 255, (48, 80, 3), np.uint8)
    with Fuser.from_checkpoint(tmp_path / "b.onnx") as fuser, warnings.catch_warnings():
        warnings.simplefilter("error")  # the camera size: no resize, no warning
        assert fuser.backend.input_size == (48, 80)
        fuser.fuse(ir, vis)
    small = CliRunner().invoke(export_main, ["--onnx", str(tmp_path / "c.onnx"), "-c", str(native), "--no-verify",
                                             "--height", "64", "--width", "64"])
    assert small.exit_code == 0, small.output
    with Fuser.from_checkpoint(tmp_path / "c.onnx") as fuser, pytest.warns(ResizeWarning) as caught:
        fuser.fuse(ir, vis)
        fuser.fuse(ir, vis)  # once per size
    # The graph's backend (auto: OpenVINO where installed, else onnxruntime) names itself in the warning.
    expected = f"80x48 frames are resized to the {fuser.backend.name} graph's fixed 64x64 grid"
    assert len(caught) == 1 and expected in str(caught[0].message)


def test_eval_skips_side_by_side_images(pairs, tmp_path):
    out = tmp_path / "fused"
    assert fuse_into(pairs, out, "--side-by-side").exit_code == 0
    table = tmp_path / "scores.csv"
    result = CliRunner().invoke(eval_main, ["--fused", str(out), "--ir", str(pairs / "ir"), "--vis",
                                            str(pairs / "vi"), "--metrics", "EN,SD", "--csv", str(table)])
    assert result.exit_code == 0, result.output
    rows = table.read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows if row.split(",")[0] in NAMES) == sorted(NAMES)
    assert not any("_sbs" in row for row in rows)


def make_train_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for side in ("ir", "vi"):
        (root / side).mkdir(parents=True)
    for k in range(4):
        cv2.imwrite(str(root / "ir" / f"p{k}.png"), rng.integers(0, 255, (64, 64), np.uint8))
        cv2.imwrite(str(root / "vi" / f"p{k}.png"), rng.integers(0, 255, (64, 64, 3), np.uint8))
    return root


def test_train_out_over_a_previous_run_is_refused(tmp_path):
    data = make_train_data(tmp_path / "data")
    out = tmp_path / "run"
    args = ["--stage", "decoder", "--data", str(data), "--out", str(out), "--config", "maefuse-micro", "--steps", "1",
            "--batch-size", "2", "--val-count", "0", "--no-progress", "--device", "cpu"]
    first = CliRunner().invoke(train_main, args)
    assert first.exit_code == 0, first.output
    model = out / "model.safetensors"
    before = model.read_bytes()
    again = CliRunner().invoke(train_main, args)
    assert again.exit_code == 1 and "holds a previous run" in again.output and "--overwrite" in again.output
    assert model.read_bytes() == before
    replaced = CliRunner().invoke(train_main, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_fine_tuning_keeps_the_init_models_policy(tmp_path):
    data = make_train_data(tmp_path / "data")
    native = tmp_path / "native.safetensors"
    model = build_model(CONFIGS["maefuse-micro"], seed=0)
    model.config = model.config.replace(policy="native")
    save_checkpoint(model, native)
    common = dict(stage="fuse", data=[data], config="maefuse-micro", init=native, steps=1, batch_size=2,
                  val_count=0, progress=False, device="cpu")
    kept = Trainer(TrainOptions(out=tmp_path / "a", **common), echo=lambda _m: None)  # type: ignore[arg-type]
    assert kept.options.preprocess == "native" and kept.module.model.config.policy == "native"
    asked = Trainer(TrainOptions(out=tmp_path / "b", preprocess="official", **common),  # type: ignore[arg-type]
                    echo=lambda _m: None)
    assert asked.module.model.config.policy == "official"


def test_train_init_accepts_the_built_in_model_name(tmp_path):
    data = make_train_data(tmp_path / "data")
    trainer = Trainer(TrainOptions(stage="fuse", data=[data], out=tmp_path / "run", config="maefuse-tiny",
                                   init=Path("maefuse-tiny"), steps=1, batch_size=2, val_count=0, progress=False,
                                   device="cpu"), echo=lambda _m: None)
    trained, _ = load_checkpoint(REPO / "maefuse_deploy" / "weights" / "maefuse-tiny.safetensors")
    assert trainer.options.preprocess == "native"  # the built-in model is a native one
    for (name, value), expected in zip(trainer.module.model.state_dict().items(), trained.state_dict().values(),
                                       strict=True):
        assert np.array_equal(value.numpy(), expected.numpy()), name


def test_cli_fix_texts_use_cli_spelling(pairs, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    result = run_fuse(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vi"), "--out", str(tmp_path / "o"), "-c",
                       str(engine), "--device", "cpu"])
    assert "--device cuda" in one_line_error(result)
