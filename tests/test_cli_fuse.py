"""maefuse-fuse and maefuse-convert end to end, and every bad input's one-line error."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.convert import main as convert_main
from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.io import find_pairs, read_image
from maefuse_deploy.metrics import evaluate
from maefuse_deploy.metrics.compute import to_grey
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.runtime.files import SAMPLES_DIR
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.train.evaluate import baseline

NAMES = ["00537D", "00633D", "00881N"]


@pytest.fixture
def pairs(msrs, tmp_path):
    """Three real MSRS pairs copied into ir/ and vi/ folders the test may break; the last one cropped to 500x329
    (not a multiple of the patch size) and its VIS stored as JPEG, as cameras' files come."""
    for side in ("ir", "vi"):
        (tmp_path / side).mkdir()
        for name in NAMES[:2]:
            shutil.copy(msrs / side / f"{name}.png", tmp_path / side / f"{name}.png")
    cropped = {side: cv2.imread(str(msrs / side / f"{NAMES[2]}.png"))[40:369, 70:570] for side in ("ir", "vi")}
    cv2.imwrite(str(tmp_path / "ir" / f"{NAMES[2]}.png"), cv2.cvtColor(cropped["ir"], cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "vi" / f"{NAMES[2]}.jpg"), cropped["vi"], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return tmp_path


def vis_file(pairs, name):
    return next((pairs / "vi").glob(f"{name}.*"))


def run(args):
    return CliRunner().invoke(fuse_main, args, catch_exceptions=False)


def test_fuses_three_real_pairs_with_side_by_side(pairs):
    out = pairs / "out"
    result = run(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vi"), "--out", str(out),
                  "--model", "random:maefuse-micro", "--side-by-side", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    for name in NAMES:
        fused = cv2.imread(str(out / f"{name}.png"))
        source = cv2.imread(str(vis_file(pairs, name)))
        assert fused.shape == source.shape
        assert cv2.imread(str(out / f"{name}_sbs.png")).shape == (source.shape[0], 3 * source.shape[1], 3)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.png" for n in NAMES] + [f"{n}_sbs.png" for n in
                                                                                         NAMES])


def test_single_files_native_policy_and_tiff_output(pairs):
    out = pairs / "out"
    result = run(["--ir", str(pairs / "ir" / "00881N.png"), "--vis", str(pairs / "vi" / "00881N.jpg"),
                  "--out", str(out), "--model", "random:maefuse-micro", "--processing", "native", "--format", "tif"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out / "00881N.tif")).shape == (329, 500, 3)


def test_default_run_fuses_the_shipped_samples(tmp_path):
    result = run(["--out", str(tmp_path / "fused")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "fused").glob("*.png"))) == 3


def test_built_in_model_runs_native_and_beats_mean_fusion_on_the_samples():
    # The quality target of the shipped model (MODEL_CARD.md), checked on the three shipped MSRS pairs, which it
    # never trained on: mean Qabf and SCD above mean fusion's (measured 0.427 vs 0.354 and 1.69 vs 1.46).
    fuser = Fuser.from_checkpoint()
    assert fuser.policy == "native"
    model_scores, mean_scores = [], []
    for pair in find_pairs(SAMPLES_DIR / "ir", SAMPLES_DIR / "vi"):
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        fused = fuser.fuse(ir, vis)
        assert fused.shape == vis.shape
        mean = baseline(to_grey(ir, "cv2"), to_grey(vis, "cv2"), "mean")
        model_scores.append(evaluate(fused, ir, vis, metrics=["Qabf", "SCD"]))
        mean_scores.append(evaluate(mean, ir, vis, metrics=["Qabf", "SCD"]))
    for metric in ("Qabf", "SCD"):
        ours = np.mean([row[metric] for row in model_scores])
        mean_fusion = np.mean([row[metric] for row in mean_scores])
        assert ours > mean_fusion + 0.03, (metric, ours, mean_fusion)


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", ["missing", "unmatched", "sizes", "not-image", "checkpoint", "lossy"])
def test_bad_input_fails_with_one_line_and_leaves_nothing(pairs, tmp_path, case):
    out = pairs / "out"
    ir, vis = pairs / "ir", pairs / "vi"
    checkpoint = "random:maefuse-micro"
    expect = []
    extra = []
    if case == "missing":
        ir = pairs / "nowhere"
        expect = [str(ir), "fix:"]
    elif case == "unmatched":
        (pairs / "vi" / "00633D.png").rename(pairs / "vi" / "99999X.png")
        expect = ["00633D", "fix:"]
    elif case == "sizes":
        image = cv2.imread(str(pairs / "ir" / "00633D.png"))
        cv2.imwrite(str(pairs / "ir" / "00633D.png"), cv2.resize(image, (300, 200)))
        expect = ["00633D", "300x200", "--resize-ir"]
    elif case == "not-image":
        (pairs / "ir" / "00633D.png").write_text("this is not a PNG")
        expect = [str(pairs / "ir" / "00633D.png"), "not a readable image"]
    elif case == "checkpoint":
        bad = tmp_path / "tiny.safetensors"
        save_checkpoint(build_model(get_config("maefuse-micro")), bad)
        checkpoint = str(bad)
        extra = ["--config", "maefuse-tiny"]
        expect = [str(bad), "maefuse-micro", "maefuse-tiny"]
    elif case == "lossy":
        extra = ["--format", "jpg"]
        expect = ["lossy", "--lossy"]
    result = run(["--ir", str(ir), "--vis", str(vis), "--out", str(out), "--model", checkpoint, *extra])
    assert_one_line_error(result, *expect)
    assert not out.exists() or not any(out.iterdir())


def test_console_script_exit_code_and_stderr(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from maefuse_deploy.cli.fuse import main; main()", "--ir", str(tmp_path / "a.png"),
         "--vis", str(tmp_path / "b.png"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: IR path not found")


def test_video_pair_is_fused_frame_by_frame(pairs, tmp_path):
    ir = cv2.imread(str(pairs / "ir" / "00537D.png"))
    vis = cv2.imread(str(pairs / "vi" / "00537D.png"))
    size = (320, 240)
    paths = {}
    for role, image in (("ir", ir), ("vis", vis)):
        paths[role] = tmp_path / f"{role}.avi"
        writer = cv2.VideoWriter(str(paths[role]), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
        for shift in range(5):
            writer.write(np.roll(cv2.resize(image, size), shift * 4, axis=1))
        writer.release()
    out = tmp_path / "fused.avi"
    result = run(["--ir", str(paths["ir"]), "--vis", str(paths["vis"]), "--out", str(out),
                  "--model", "random:maefuse-micro"])
    assert result.exit_code == 0, result.output
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        frames += 1
    assert frames == 5


def test_convert_released_checkpoint_to_safetensors(tmp_path):
    import torch

    model = build_model(get_config("maefuse-micro"), seed=5)
    released = {("model1." if k.startswith("mae.") else "model2.") + k.split(".", 1)[1]: v
                for k, v in model.state_dict().items()}
    source = tmp_path / "final.pth"
    torch.save({"model": released}, source)
    result = CliRunner().invoke(convert_main, [str(source), str(tmp_path / "out.safetensors"), "--config",
                                               "maefuse-micro"])
    assert result.exit_code == 0, result.output
    converted, report = load_checkpoint(tmp_path / "out.safetensors")
    assert report.layout == "maefuse" and converted.config.name == "maefuse-micro"
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in model.state_dict().items())
    # The output rule every writing command shares: nothing replaced unasked, no input destroyed, no renamed file.
    target = tmp_path / "out.safetensors"
    written = target.read_bytes()
    again = CliRunner().invoke(convert_main, [str(source), str(target), "--config", "maefuse-micro"])
    assert again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output
    assert target.read_bytes() == written
    onto_itself = CliRunner().invoke(convert_main, [str(target), str(target), "--overwrite"])
    assert onto_itself.exit_code == 1 and "is also an input" in onto_itself.output
    assert target.read_bytes() == written
    renamed = CliRunner().invoke(convert_main, [str(source), str(tmp_path / "out.pth"), "--config", "maefuse-micro"])
    assert renamed.exit_code == 1 and "name it out.safetensors" in renamed.output
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    into_folder = CliRunner().invoke(convert_main, [str(source), str(folder), "--config", "maefuse-micro"])
    assert into_folder.exit_code == 1 and "is a folder" in into_folder.output
    from_folder = CliRunner().invoke(convert_main, [str(folder), str(tmp_path / "x.safetensors")])
    assert from_folder.exit_code == 1 and f"checkpoint {folder} is a folder" in from_folder.output
    inside_source = CliRunner().invoke(convert_main, [str(folder), str(folder / "x.safetensors")])
    assert inside_source.exit_code == 1 and "lies inside the input folder" in inside_source.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pth", "folder.safetensors", "out.safetensors"]
    replaced = CliRunner().invoke(convert_main, [str(source), str(target), "--config", "maefuse-micro", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
