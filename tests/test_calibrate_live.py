"""Calibration from a live rig (issue 25 item 4): ``maefuse-calibrate --ir SOURCE --vis SOURCE --frames N`` reads
the sources maefuse-stream reads, pairs frames by timestamp, keeps new views with shared structure, stops when the
corner uncertainty is within the bound (or N pairs are kept), shows its progress, and writes the calibration or
refuses in one line.

The rigs are real video files made from the shipped MSRS pairs: several scenes in sequence, the IR view changed
by a known homography, IR at 25 fps and VIS at 30 fps (FFV1, lossless, so every frame of a scene is the same
picture: a camera standing still). The truth is the method's own estimate on the unchanged pairs composed with
the change, as in tests/test_calibration_trust.py."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner
from conftest import write_video
from test_calibration_trust import ALL, make_pair

from maefuse_deploy.cli.calibrate import main as calibrate_main
from maefuse_deploy.registration import corner_error, from_frames, view_change

SCENE_S = 0.4  # each scene lasts 10 IR frames at 25 fps and 12 VIS frames at 30 fps: scene changes pair cleanly


def write_rig(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]], change: np.ndarray,
              canvas: tuple[int, int]) -> tuple[str, str]:
    """The pairs as one IR and one VIS video, scene after scene, the IR view changed by ``change``."""
    ir_frames, vis_frames = [], []
    for ir, vis in pairs:
        changed = cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR)
        ir_frames += [cv2.cvtColor(changed, cv2.COLOR_GRAY2BGR)] * round(SCENE_S * 25)
        vis_frames += [vis] * round(SCENE_S * 30)
    write_video(folder / "ir.mkv", ir_frames, fps=25)
    write_video(folder / "vis.mkv", vis_frames, fps=30)
    return str(folder / "ir.mkv"), str(folder / "vis.mkv")


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_live_rig_is_calibrated_from_one_pair_per_scene_within_2_px_of_the_truth(msrs, tmp_path):
    """12 scenes (256x256 crops of the 6 MSRS pairs, day and night, colour VIS): every scene's first pair is a new
    view and kept, its repeats are not. The estimate is re-made after 1, 2, 4 and 8 kept pairs (measured 4.3, 18.6,
    6.9, 3.2 px uncertain: not yet within 2 px, so collecting goes on) and, when the videos end, from all 12:
    1.7 px, written; 0.3 px from the truth."""
    pairs = [make_pair(msrs, name, f"256 crop at {at}", False) for name in ALL for at in ("(100, 60)", "(300, 180)")]
    change, canvas = view_change((256, 256), -1.5, 1.03, (-4.0, 5.0), 1.0)
    ir, vis = write_rig(tmp_path, pairs, change, canvas)
    result = CliRunner().invoke(calibrate_main, ["--ir", ir, "--vis", vis, "--frames", "20", "-o",
                                                 str(tmp_path / "H.json"), "--preview", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("calibrating:")]
    # Outside a terminal one line per change: each kept pair, the first of every scene (12 VIS frames each).
    assert len(progress) == len(pairs), result.output
    for scene, line in enumerate(progress):
        assert f"{scene * 12 + 1} pairs read, {scene + 1} kept, uncertainty" in line, line
    assert "the sources ended after 144 frame pairs" in result.output
    assert "from 12 kept of 144 frame pairs read" in result.output
    data = json.loads((tmp_path / "H.json").read_text())
    assert data["pairs_given"] == len(pairs) and data["corner_uncertainty_px"]["max"] <= 2.0
    assert data["ir_size"] == list(canvas) and data["vis_size"] == [256, 256]
    # The method's own estimate on the unchanged pairs, started at the identity (they are registered to a few px,
    # well within the +-30 px an initial estimate may be off; the coarse search would double this test's time).
    own = from_frames(pairs, initial=np.eye(3), max_uncertainty_px=None)
    error = corner_error(np.array(data["homography"]), own.matrix @ np.linalg.inv(change), (256, 256))
    assert error <= 2.0, f"{data['fitted_model']} {error:.2f} px from the truth (+-{data['corner_uncertainty_px']})"
    assert cv2.imread(str(tmp_path / "p.png")).shape == (256, 256, 3)


def test_a_live_rig_stops_at_the_bound_or_is_refused_in_one_line_with_nothing_written(msrs, tmp_path):
    """Full 640x480 MSRS frames hold structure only in a band across the middle: 1 pair leaves the corners 14 px
    uncertain, 2 kept pairs 4.7 px (measured). Within a 20 px bound collecting stops at the first pair; at the
    default 2 px, --frames 2 ends in a refusal naming the fixes, after the progress lines, writing nothing."""
    pairs = [make_pair(msrs, name, "640x480", False) for name in ("00633D", "00537D", "00556D")]
    change, canvas = view_change((640, 480), 2.0, 0.95, (6.0, -4.0), 0.0)
    ir, vis = write_rig(tmp_path, pairs, change, canvas)
    runner = CliRunner()
    result = runner.invoke(calibrate_main, ["--ir", ir, "--vis", vis, "--max-uncertainty", "20", "-o",
                                            str(tmp_path / "L.json")])
    assert result.exit_code == 0 and "from 1 kept of 1 frame pairs read" in result.output, result.output
    assert 2 < json.loads((tmp_path / "L.json").read_text())["corner_uncertainty_px"]["max"] <= 20
    result = runner.invoke(calibrate_main, ["--ir", ir, "--vis", vis, "--frames", "2", "-o",
                                            str(tmp_path / "H.json"), "--preview", str(tmp_path / "p.png")])
    lines = result.output.splitlines()
    assert result.exit_code == 1 and error_lines(result.output) == [lines[-1]], result.output
    assert "2 frame pair(s) kept of 13 read" in lines[-1] and "uncertain" in lines[-1]
    assert "--frames" in lines[-1] and "--points" in lines[-1] and "edges" in lines[-1]
    assert sum(line.startswith("calibrating: ") for line in lines) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["L.json", "ir.mkv", "vis.mkv"]


def test_a_rig_without_shared_structure_is_refused_after_its_stream_ends(msrs, tmp_path):
    """A capped VIS lens (black frames): no pair is kept; when the sources end, one line says so."""
    ir, _ = make_pair(msrs, "00537D", "256 crop at (100, 60)", False)
    black = np.zeros((256, 256, 3), np.uint8)
    ir_video, vis_video = write_rig(tmp_path, [(ir, black)] * 2, np.eye(3), (256, 256))
    result = CliRunner().invoke(calibrate_main, ["--ir", ir_video, "--vis", vis_video, "-o", str(tmp_path / "H.json")])
    assert result.exit_code == 1 and len(error_lines(result.output)) == 1, result.output
    assert "the sources ended after 24 frame pairs" in result.output
    assert "none of the 24 frame pairs read showed enough shared structure" in result.output
    assert not (tmp_path / "H.json").exists()


def test_images_and_folders_stay_the_frame_pair_mode_and_modes_do_not_mix(msrs, tmp_path):
    """A path to an image or a folder is the frame-pair mode (unchanged: tests/test_calibration_trust.py runs it);
    a video file, device, URL or pipeline is a live source. Mixing them, --frames for images and --check or
    --points for live sources are usage errors (exit 2) before anything is read."""
    image = str(msrs / "ir" / "00537D.png")
    video = str(tmp_path / "missing.mkv")
    out = ["-o", str(tmp_path / "H.json")]
    runner = CliRunner()
    for arguments in (["--ir", image, "--vis", video, *out],
                      ["--ir", str(msrs / "ir"), "--vis", "videotestsrc ! appsink", *out],
                      ["--ir", image, "--vis", str(msrs / "vi" / "00537D.png"), "--frames", "3", *out],
                      ["--ir", video, "--vis", video, "--check", str(tmp_path / "H.json")],
                      ["--ir", video, "--vis", video, "--points", str(tmp_path / "p.txt"), *out]):
        result = runner.invoke(calibrate_main, arguments)
        assert result.exit_code == 2, (arguments, result.output)
    # A live source that cannot open is one line (the stream's own message), nothing written.
    result = runner.invoke(calibrate_main, ["--ir", video, "--vis", video, *out])
    assert result.exit_code == 1 and len(error_lines(result.output)) == 1, result.output
    assert "missing.mkv" in result.output and not (tmp_path / "H.json").exists()
