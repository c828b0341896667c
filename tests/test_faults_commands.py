"""The fault suite, continued (issue 22): maefuse-calibrate and the maefuse-fuse cases found after issue 13, with
the real CLI on real MSRS pairs. Each test reproduces a reported case; docs/reliability.md lists them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.calibrate import main as calibrate_main
from maefuse_deploy.cli.fuse import main as fuse_main

RANDOM = "random:maefuse-micro"
POINTS = "0 0 0 0\n639 0 639 0\n639 479 639 479\n0 479 0 479\n320 240 320 240\n"


def invoke(command, args: list[str]):
    return CliRunner().invoke(command, args, catch_exceptions=False)


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


@pytest.fixture
def frames(msrs: Path, tmp_path: Path) -> Path:
    """One real MSRS pair in ir/ and vi/ folders of the test's own."""
    for side in ("ir", "vi"):
        (tmp_path / side).mkdir()
        shutil.copy(msrs / side / "00537D.png", tmp_path / side / "00537D.png")
    return tmp_path


def calibrate_points(tmp_path: Path, *extra: str):
    (tmp_path / "points.txt").write_text(POINTS)
    return invoke(calibrate_main, ["--points", str(tmp_path / "points.txt"), "--ir-size", "640x480",
                                   "--vis-size", "640x480", *extra])


# -- maefuse-calibrate -------------------------------------------------------------------------------------------


def test_calibrate_refuses_to_replace_an_existing_file_without_overwrite(tmp_path):
    (tmp_path / "H.json").write_text("my rig's calibration\n")
    result = calibrate_points(tmp_path, "-o", str(tmp_path / "H.json"))
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: -o {tmp_path / 'H.json'} already exists (fix: pass --overwrite to "
                                   "replace it, or choose another path)"]
    assert (tmp_path / "H.json").read_text() == "my rig's calibration\n"
    result = calibrate_points(tmp_path, "-o", str(tmp_path / "H.json"), "--overwrite")
    assert result.exit_code == 0, result.output
    assert '"homography"' in (tmp_path / "H.json").read_text()


def test_calibrate_never_writes_over_its_points_file(tmp_path):
    result = calibrate_points(tmp_path, "-o", str(tmp_path / "points.txt"), "--overwrite")
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "points.txt is also an input" in line and "fix:" in line
    assert (tmp_path / "points.txt").read_text() == POINTS


def test_calibrate_preview_without_frames_is_refused_before_anything_is_written(tmp_path):
    result = calibrate_points(tmp_path, "-o", str(tmp_path / "H.json"), "--preview", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "--preview needs --ir/--vis frames" in result.output
    assert not (tmp_path / "H.json").exists() and not (tmp_path / "p.png").exists()


def test_calibrate_preview_is_checked_like_the_calibration(frames):
    (frames / "p.png").write_bytes(b"an earlier preview")
    args = ["--ir", str(frames / "ir"), "--vis", str(frames / "vi"), "-o", str(frames / "H.json"),
            "--preview", str(frames / "p.png")]
    result = invoke(calibrate_main, args)
    assert result.exit_code == 1 and "p.png already exists" in error_lines(result)[0]
    assert not (frames / "H.json").exists() and (frames / "p.png").read_bytes() == b"an earlier preview"
    result = invoke(calibrate_main, [*args[:-1], str(frames / "vi" / "00537D.png"), "--overwrite"])
    assert result.exit_code == 1 and "is also an input" in error_lines(result)[0]


# -- maefuse-fuse ------------------------------------------------------------------------------------------------


def test_fuse_image_pairs_into_a_video_name_is_refused(frames):
    out = frames / "x.mkv"
    result = invoke(fuse_main, ["--ir", str(frames / "ir"), "--vis", str(frames / "vi"), "--out", str(out),
                                "-m", RANDOM])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "x.mkv" in line and "video" in line and "fix:" in line
    assert not out.exists()


def test_a_corrupt_image_late_in_a_folder_is_found_before_the_model_loads(msrs, tmp_path):
    for side in ("ir", "vi"):
        shutil.copytree(msrs / side, tmp_path / side)
    last = sorted((tmp_path / "vi").glob("*.png"))[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # the header is intact: only a full decode finds it
    result = invoke(fuse_main, ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "--out",
                                str(tmp_path / "out"), "-m", "does-not-exist.safetensors"])
    (line,) = error_lines(result)
    assert last.name in line and "does-not-exist" not in line  # the image is checked first: no model was loaded
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--device", "bogus"), ("--batch-range", "nine")])
def test_a_malformed_option_value_is_a_usage_error(option, value, tmp_path):
    from maefuse_deploy.cli.export import main as export_main

    command = fuse_main if option == "--device" else export_main
    args = [option, value] if option == "--device" else ["--onnx", str(tmp_path / "g.onnx"), option, value]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line] == [
        next(line for line in result.output.splitlines() if line.startswith("error: "))]


def test_a_broken_video_is_one_line_without_ffmpeg_log_lines(tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(tmp_path / "ir.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for index in range(10):
        writer.write(np.full((64, 64, 3), index * 20, np.uint8))
    writer.release()
    data = (tmp_path / "ir.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # no moov atom: FFmpeg logs "moov atom not found"
    shutil.copy(tmp_path / "ir.mp4", tmp_path / "vis.mp4")
    script = Path(sys.executable).parent / "maefuse-fuse"  # a real process: FFmpeg writes to fd 2 directly
    result = subprocess.run([str(script), "--ir", str(tmp_path / "cut.mp4"),
                             "--vis", str(tmp_path / "vis.mp4"), "--out", str(tmp_path / "f.mp4"), "-m", RANDOM],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cut.mp4" in lines[0], lines


# -- the output rule in bench, eval and train (found by a sweep of bad inputs over every command, 2026-12-07) ---------


def test_bench_and_eval_reports_never_replace_a_file_or_write_into_their_inputs(frames):
    from maefuse_deploy.cli.bench import main as bench_main
    from maefuse_deploy.cli.eval import main as eval_main

    report = frames / "report.json"
    report.write_text("last week's numbers\n")
    bench = ["-m", RANDOM, "--latency", "--backends", "torch", "--iterations", "1", "--warmup", "0", "--pairs", "1"]
    result = invoke(bench_main, [*bench, "--json", str(report)])
    assert result.exit_code == 1 and error_lines(result) == [
        f"error: --json {report} already exists (fix: pass --overwrite to replace it, or choose another path)"]
    inside = invoke(bench_main, [*bench, "--pairs-dir", str(frames), "--markdown", str(frames / "vi" / "r.md"),
                                 "--overwrite"])
    assert inside.exit_code == 1 and "lies inside the input folder" in error_lines(inside)[0]
    fused_image = frames / "vi" / "00537D.png"
    before = fused_image.read_bytes()
    scored = ["--ir", str(frames / "ir"), "--vis", str(frames / "vi"), "--fused", str(frames / "vi"), "--metrics", "EN"]
    onto_input = invoke(eval_main, [*scored, "--csv", str(fused_image), "--overwrite"])
    assert onto_input.exit_code == 1 and "lies inside the input folder" in error_lines(onto_input)[0]
    existing = invoke(eval_main, [*scored, "--csv", str(report)])
    assert existing.exit_code == 1 and "already exists" in error_lines(existing)[0]
    assert fused_image.read_bytes() == before and report.read_text() == "last week's numbers\n"
    assert sorted(path.name for path in frames.rglob("*")) == ["00537D.png", "00537D.png", "ir", "report.json", "vi"]


@pytest.mark.parametrize("command", ["fuse", "train", "eval", "bench"])
def test_an_output_folder_that_takes_no_files_is_refused_before_any_work(frames, command):
    """/proc refuses new files even to root, whom the permission bits (os.access) let through everywhere: the
    failure used to come after the fusion, or as a traceback from the trainer."""
    from maefuse_deploy.cli.bench import main as bench_main
    from maefuse_deploy.cli.eval import main as eval_main
    from maefuse_deploy.cli.train import main as train_main

    target = Path("/proc/maefuse-no-such-folder/out.png")
    pairs = ["--ir", str(frames / "ir"), "--vis", str(frames / "vi")]
    main, args = {
        "fuse": (fuse_main, [*pairs, "--out", str(target), "-m", RANDOM]),
        "train": (train_main, ["--stage", "fuse", "--config", "maefuse-micro", "--steps", "1", "--data", str(frames),
                               "--out", str(target.parent), "--device", "cpu", "--no-progress"]),
        "eval": (eval_main, [*pairs, "--fused", str(frames / "vi"), "--metrics", "EN", "--csv", str(target)]),
        "bench": (bench_main, ["-m", RANDOM, "--latency", "--backends", "torch", "--json", str(target)]),
    }[command]
    result = invoke(main, args)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "cannot write" in line and "/proc" in line and "fix:" in line
    assert "model:" not in result.output and "pairs" not in result.output.replace(line, "")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--lr", "-1", "--lr -1 is not a learning rate"),
    ("--betas", "2,3", "--betas 2,3: each must be in [0, 1)"),
    ("--weight-decay", "-1", "--weight-decay -1 is not a weight decay"),
    ("--max-minutes", "-1", "--max-minutes -1 is not positive"),
])
def test_train_refuses_optimiser_values_before_loading_anything(frames, option, value, message):
    from maefuse_deploy.cli.train import main as train_main

    result = invoke(train_main, ["--stage", "fuse", "--config", "maefuse-micro", "--steps", "1", "--data",
                                 str(frames), "--out", str(frames / "run"), "--device", "cpu", "--no-progress",
                                 option, value])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(f"error: {message}") and "fix:" in line
    assert not (frames / "run").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--height", "0", "--width", "0"], "error: --height 0 is not a size in pixels"),
    (["--camera-size", "99999x99999", "--io", "uint8"],
     "error: --camera-size 99999x99999 is 10000 megapixels, over the 100 megapixels a frame may have"),
    (["--height", "99984", "--width", "99984"], "error: the graph's grid 99984x99984 is 9997 megapixels"),
])
def test_export_sizes_outside_what_a_frame_can_be_are_refused_before_the_model(tmp_path, args, message):
    """Found by the sweep: 0 silently became the config's size; 99999x99999 asked for 10 GB tensors and ended in
    the allocator's traceback after 40 s."""
    from maefuse_deploy.cli.export import main as export_main

    result = invoke(export_main, ["-m", RANDOM, "--onnx", str(tmp_path / "g.onnx"), "--no-verify", *args])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(message) and "fix:" in line
    assert list(tmp_path.iterdir()) == []


def test_bench_resolution_over_the_frame_limit_is_refused_before_the_model():
    from maefuse_deploy.cli.bench import main as bench_main

    result = invoke(bench_main, ["-m", RANDOM, "--latency", "--backends", "torch", "--resolution", "99984x99984"])
    assert result.exit_code == 1
    assert error_lines(result) == ["error: --resolution 99984x99984 is 9997 megapixels, over the 100 megapixels a "
                                   "frame may have (fix: give the camera's frame size, e.g. 640x480)"]


def test_export_refuses_options_its_run_would_ignore(tmp_path):
    """Found by the sweep: `--aoti X --onnx Y` wrote only X, and --height, --io and --no-verify went unread."""
    from maefuse_deploy.cli.export import main as export_main

    result = CliRunner().invoke(export_main, ["-m", RANDOM, "--aoti", str(tmp_path / "m.pt2"), "--onnx",
                                              str(tmp_path / "m.onnx"), "--camera-size", "64x64", "--height", "64"])
    assert result.exit_code == 2
    assert "--onnx, --height do not apply to a --aoti run" in result.output
    checked = CliRunner().invoke(export_main, ["--check-trt", str(tmp_path / "m.onnx"), "--precision", "fp16"])
    assert checked.exit_code == 2 and "--precision does not apply to a --check-trt run" in checked.output
    assert list(tmp_path.iterdir()) == []


def test_bench_reference_for_torch_weights_is_refused_not_ignored(tmp_path):
    from maefuse_deploy.cli.bench import main as bench_main

    result = invoke(bench_main, ["-m", RANDOM, "--reference", str(tmp_path / "other.safetensors"), "--latency",
                                 "--backends", "torch"])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "is for a graph or engine --model" in line and "fix: drop --reference" in line


def test_a_pair_of_two_sizes_is_refused_before_the_model_loads(frames):
    """Found by the sweep: the size check came after the model load, against "a bad input costs no model load"."""
    import cv2

    small = frames / "ir" / "00537D.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(small), cv2.IMREAD_UNCHANGED), (120, 100)))
    result = invoke(fuse_main, ["--ir", str(frames / "ir"), "--vis", str(frames / "vi"), "--out",
                                str(frames / "out"), "-m", "does-not-exist.safetensors"])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "IR" in line and "is 120x100 but VIS" in line and "--resize-ir" in line  # checked before the model
    assert not (frames / "out").exists()


def test_a_broken_png_is_one_line_with_the_decoders_reason(frames):
    """Found by the sweep: libpng printed its own warning and error lines to fd 2 before the error line (OpenCV's
    log level does not reach it). A real process, since libpng writes to fd 2 directly."""
    import struct
    import subprocess
    import sys
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A valid signature and CRCs around a header that declares a 0x0 image.
    zero = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    (frames / "ir" / "00537D.png").write_bytes(zero)
    script = Path(sys.executable).parent / "maefuse-fuse"
    result = subprocess.run([str(script), "--ir", str(frames / "ir"), "--vis", str(frames / "vi"), "--out",
                             str(frames / "out"), "-m", RANDOM], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: IR file is not a readable image:") and "libpng" in lines[0]


def test_bench_on_a_gpu_this_machine_lacks_is_exit_3_in_one_line():
    """Found by the sweep: --device cuda without a GPU ran the whole bench, skipped every row and exited 1."""
    import torch

    from maefuse_deploy.cli.bench import main as bench_main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    result = invoke(bench_main, ["-m", RANDOM, "--latency", "--backends", "torch", "--device", "cuda"])
    assert result.exit_code == 3
    assert error_lines(result) == ["error: device cuda requested but torch sees no CUDA GPU (fix: use --device cpu "
                                   "(or auto) or a GPU machine)"]
    assert "model:" not in result.output


def test_resume_from_a_corrupt_state_is_one_short_line(frames):
    from maefuse_deploy.cli.train import main as train_main

    args = ["--stage", "fuse", "--config", "maefuse-micro", "--steps", "1", "--batch-size", "1", "--val-count", "0",
            "--data", str(frames), "--out", str(frames / "run"), "--device", "cpu", "--no-progress"]
    assert invoke(train_main, args).exit_code == 0
    (frames / "run" / "checkpoints" / "last.state.pt").write_bytes(b"\xe4 not a torch file")
    result = invoke(train_main, [*args, "--steps", "2", "--resume"])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "last.state.pt is not a training state this toolkit wrote" in line and "fix: start without --resume" in line
    assert "file an issue" not in line and len(line) < 400


def test_damaged_images_of_other_formats_are_one_line_or_one_warning(frames):
    """Found by a second sweep: a truncated BMP or TIFF printed OpenCV's log lines above the error, and a JPEG whose
    data was damaged decoded with libjpeg's complaint held back. A real process: the decoders write to fd 2."""
    import subprocess
    import sys

    import cv2

    image = cv2.imread(str(frames / "ir" / "00537D.png"), cv2.IMREAD_UNCHANGED)
    script = Path(sys.executable).parent / "maefuse-fuse"

    def fuse(ir: Path):
        return subprocess.run([str(script), "--ir", str(ir), "--vis", str(frames / "vi" / "00537D.png"), "--out",
                               str(frames / f"{ir.name}.png"), "-m", RANDOM], capture_output=True, text=True,
                              timeout=120)

    for suffix in (".bmp", ".tif"):
        cv2.imwrite(str(frames / f"whole{suffix}"), image)
        data = (frames / f"whole{suffix}").read_bytes()
        (frames / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        result = fuse(frames / f"cut{suffix}")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: IR file is not a readable image: {frames / f'cut{suffix}'} (")
    cv2.imwrite(str(frames / "whole.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = bytearray((frames / "whole.jpg").read_bytes())
    data[len(data) // 2: len(data) // 2 + 500] = b"\xff" * 500  # damaged entropy-coded data: it still decodes
    (frames / "damaged.jpg").write_bytes(bytes(data))
    result = fuse(frames / "damaged.jpg")
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if "decoded with a complaint" in line]
    assert len(complaints) == 1 and complaints[0].startswith(f"warning: IR image {frames / 'damaged.jpg'}")
    assert not any(line.startswith(("Corrupt JPEG", "[ERROR", "libpng")) for line in result.stderr.splitlines())


def test_bench_reports_may_not_share_a_file_and_train_may_not_write_among_its_pairs(frames):
    from maefuse_deploy.cli.bench import main as bench_main
    from maefuse_deploy.cli.train import main as train_main

    same = invoke(bench_main, ["-m", RANDOM, "--latency", "--backends", "torch", "--json", str(frames / "r.out"),
                               "--markdown", str(frames / "r.out")])
    assert same.exit_code == 2 and "--json and --markdown name the same file" in same.output
    among = CliRunner().invoke(train_main, ["--stage", "fuse", "--config", "maefuse-micro", "--steps", "1", "--data",
                                            str(frames), "--out", str(frames / "vi" / "run"), "--device", "cpu"])
    assert among.exit_code == 1
    assert f"--out {frames / 'vi' / 'run'} lies inside the image folder {frames / 'vi'}" in among.output
    assert sorted(path.name for path in frames.rglob("*")) == ["00537D.png", "00537D.png", "ir", "vi"]
