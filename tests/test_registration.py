"""Registration: the calibration file, exact point-pair estimation, the automatic structure-based estimate on
real pairs with a known homography, and registered fusion against the fusion of the aligned pair.

The MSRS pairs are not registered to better than a few pixels themselves (their structure is displaced by a median
4-5 px, measured in docs/streaming.md), so the automatic estimate is judged against the pair's own registration:
the same method on the undistorted pair. What the known homography changes must be recovered exactly."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy import Fuser
from maefuse_deploy.cli.calibrate import main as calibrate_main
from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.compare import psnr
from maefuse_deploy.errors import InputError
from maefuse_deploy.registration import (
    Registration,
    corner_error,
    from_frames,
    from_points,
    load_registration,
    map_points,
)

PAIR = "00537D"  # an MSRS daytime pair, 640x480
DAY_PAIRS = ("00537D", "00633D", "00556D")
IR_CANVAS = (640, 512)  # (W, H): a typical thermal core beside a 640x480 VIS camera
VIS_SIZE = (640, 480)


def known_distortion() -> np.ndarray:
    """Original IR (registered to VIS) -> a 640x512 IR frame: 0.92 scale, 2 degrees roll, a shift, slight tilt.

    The whole original frame stays inside the canvas, so warping back loses nothing."""
    angle, scale = np.deg2rad(2.0), 0.92
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, 30.0], [s, c, 18.0], [2e-6, -2e-6, 1.0]])


@pytest.fixture(scope="module")
def pair(msrs):
    """(IR, VIS, IR distorted by the known homography onto a 640x512 canvas)."""
    ir = cv2.imread(str(msrs / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(msrs / "vi" / f"{PAIR}.png"))
    distorted = cv2.warpPerspective(ir, known_distortion(), IR_CANVAS, flags=cv2.INTER_LINEAR)
    return ir, vis, distorted


def test_homography_from_point_pairs_is_exact():
    rng = np.random.default_rng(1)
    truth = np.array([[1.05, 0.03, -12.0], [-0.02, 0.97, 7.5], [3e-5, -2e-5, 1.0]])
    for count in (4, 5, 12):
        ir_points = rng.uniform([0, 0], [640, 512], size=(count, 2))
        vis_points = map_points(truth, ir_points)
        registration = from_points(ir_points, vis_points, (640, 512), (1280, 720))
        assert np.max(np.abs(registration.matrix - truth)) <= 1e-6 * np.max(np.abs(truth))
        assert registration.residual_px < 1e-6


def test_affine_from_point_pairs_is_exact_and_degenerate_points_fail():
    truth = np.array([[0.9, 0.1, 5.0], [-0.05, 1.1, -3.0], [0.0, 0.0, 1.0]])
    ir_points = np.array([[10, 10], [600, 30], [300, 500], [50, 400]], dtype=np.float64)
    registration = from_points(ir_points, map_points(truth, ir_points), (640, 512), (640, 560), "affine")
    assert np.max(np.abs(registration.matrix - truth)) <= 1e-6
    with pytest.raises(InputError, match="degenerate"):
        line = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=np.float64)
        from_points(line, line * 2, (640, 512), (640, 480))
    with pytest.raises(InputError, match="at least 4 point pairs"):
        from_points(ir_points[:3], ir_points[:3], (640, 512), (640, 560))


def test_calibration_file_round_trip_and_one_line_errors(tmp_path):
    registration = Registration(np.array([[1.1, 0, 2], [0, 1.1, 3], [1e-5, 0, 1]]), (640, 512), (1280, 720),
                                method="points", residual_px=0.25)
    path = registration.save(tmp_path / "H.json")
    data = json.loads(path.read_text())
    assert data["model"] == "homography" and data["ir_size"] == [640, 512] and data["vis_size"] == [1280, 720]
    assert len(data["homography"]) == 3 and all(len(row) == 3 for row in data["homography"])
    loaded = load_registration(path)
    assert np.array_equal(loaded.matrix, registration.matrix) and loaded.vis_size == (1280, 720)
    loaded.check_sizes((512, 640), (720, 1280, 3))
    with pytest.raises(InputError, match="calibration is for IR 640x512 -> VIS 1280x720"):
        loaded.check_sizes((480, 640), (720, 1280, 3))
    for text, message in (("{", "not valid JSON"), ('{"homography": [[1, 0], [0, 1]], "ir_size": [1, 1], '
                          '"vis_size": [1, 1]}', "3x3"), ('{"homography": [[1,0,0],[0,1,0],[0,0,1]]}', "lacks"),
                          ('{"format": "other", "homography": 1}', "format"),
                          # Found by a sweep of bad inputs: 640.5 was read as 640, NaN named the matrix's shape.
                          ('{"homography": [[1,0,0],[0,1,0],[0,0,1]], "ir_size": [640.5, 512], "vis_size": [1, 1]}',
                           r"ir_size must be \[width, height\] in whole pixels"),
                          ('{"homography": [[1,0,0],[0,NaN,0],[0,0,1]], "ir_size": [1, 1], "vis_size": [1, 1]}',
                           "NaN or infinite"),
                          ('{"homography": [[1,0,0],[0,1,0],[0,0,1]], "ir_size": [1, 1], "vis_size": [0, -5]}',
                           r"vis_size .* got \[0, -5\] \(fix: re-estimate"),
                          ('{"homography": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=message) as info:
            load_registration(tmp_path / "bad.json")
        assert "\n" not in str(info.value) and "bad.json" in str(info.value)


def test_cli_points_then_registered_fusion_matches_the_aligned_pair(pair, tmp_path):
    ir, vis, distorted = pair
    truth = np.linalg.inv(known_distortion())  # distorted IR -> VIS
    rng = np.random.default_rng(2)
    ir_points = rng.uniform([0, 0], IR_CANVAS, size=(8, 2))
    lines = [f"{x:.9f} {y:.9f} {u:.9f} {v:.9f}" for (x, y), (u, v) in zip(ir_points, map_points(truth, ir_points),
                                                                            strict=True)]
    (tmp_path / "points.txt").write_text("# ir_x ir_y vis_x vis_y\n" + "\n".join(lines) + "\n")
    for folder, image in (("ir", distorted), ("ir_aligned", ir), ("vi", vis)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / f"{PAIR}.png"), image)
    runner = CliRunner()
    result = runner.invoke(calibrate_main, ["--points", str(tmp_path / "points.txt"), "--ir-size", "640x512",
                                            "--vis-size", "640x480", "-o", str(tmp_path / "H.json")])
    assert result.exit_code == 0, result.output
    calibration = load_registration(tmp_path / "H.json")
    assert np.max(np.abs(calibration.matrix - truth / truth[2, 2])) <= 1e-6
    result = runner.invoke(fuse_main, ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "--out",
                                       str(tmp_path / "registered"), "--homography", str(tmp_path / "H.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(fuse_main, ["--ir", str(tmp_path / "ir_aligned"), "--vis", str(tmp_path / "vi"),
                                       "--out", str(tmp_path / "aligned")])
    assert result.exit_code == 0, result.output
    registered = cv2.imread(str(tmp_path / "registered" / f"{PAIR}.png"))
    aligned = cv2.imread(str(tmp_path / "aligned" / f"{PAIR}.png"))
    assert registered.shape == vis.shape
    assert psnr(registered, aligned) >= 35.0
    # Without the calibration the sizes differ: a one-line error, as before.
    result = runner.invoke(fuse_main, ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "--out",
                                       str(tmp_path / "x")])
    assert result.exit_code == 1 and "640x512" in result.output


@pytest.mark.parametrize("name", DAY_PAIRS)
def test_automatic_calibration_recovers_a_known_homography_on_real_pairs(msrs, name):
    ir = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(msrs / "vi" / f"{name}.png"))
    distorted = cv2.warpPerspective(ir, known_distortion(), IR_CANVAS, flags=cv2.INTER_LINEAR)
    # the pair's own registration: the method on the pair as shipped
    own = from_frames([(ir, vis)], "homography", max_uncertainty_px=None)
    # The fit leaves structure displaced by parallax only (the dataset's alignment leaves a median 3.7-5.3 px).
    assert own.residual_px <= 2.0, own.residual_px
    registration = from_frames([(distorted, vis)], "homography", max_uncertainty_px=None)
    assert registration.ir_size == IR_CANVAS and registration.vis_size == VIS_SIZE
    assert registration.method == "structure-blocks" and registration.extra["matches"] >= 50
    truth = own.matrix @ np.linalg.inv(known_distortion())  # distorted IR -> IR -> VIS
    error = corner_error(registration.matrix, truth, VIS_SIZE)
    assert error <= 2.0, f"{name}: corner error {error:.2f} px"  # measured 0.72, 0.48, 1.04 px


def test_registered_fusion_matches_the_fusion_of_the_registered_pair(pair):
    """Fusion through the automatic calibration of the distorted IR = fusion of the pair as its own calibration
    registers it, up to resampling."""
    ir, vis, distorted = pair
    own = from_frames([(ir, vis)], "homography", max_uncertainty_px=None)
    registration = from_frames([(distorted, vis)], "homography", max_uncertainty_px=None)
    fuser = Fuser.open()
    registered = fuser.fuse(registration.warp(distorted), vis)
    reference = fuser.fuse(own.warp(ir), vis)
    assert registered.shape == vis.shape
    assert psnr(registered, reference) >= 35.0  # measured 49.0 dB


def test_automatic_calibration_fails_in_one_line_without_shared_structure(msrs):
    ir = cv2.imread(str(msrs / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)
    capped = np.full((480, 640, 3), 12, np.uint8)  # a VIS camera with its lens cap on
    with pytest.raises(InputError, match="structure matches") as caught:
        from_frames([(ir, capped)], "homography", max_uncertainty_px=None)
    assert "\n" not in str(caught.value) and "--points" in str(caught.value)


def test_cli_automatic_calibration_writes_json_and_preview(pair, tmp_path):
    _, vis, distorted = pair
    cv2.imwrite(str(tmp_path / "ir.png"), distorted)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    result = CliRunner().invoke(calibrate_main, ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                                                 "--transform", "affine", "--max-uncertainty", "100", "-o",
                                                 str(tmp_path / "A.json"), "--preview", str(tmp_path / "overlay.png")])
    assert result.exit_code == 0, result.output
    calibration = load_registration(tmp_path / "A.json")
    assert calibration.model == "affine" and np.allclose(calibration.matrix[2], [0, 0, 1])
    own = from_frames([(pair[0], vis)], "affine", max_uncertainty_px=None)
    truth = own.matrix @ np.linalg.inv(known_distortion())
    assert corner_error(calibration.matrix, truth, VIS_SIZE) <= 2.0  # measured 1.83 px
    assert cv2.imread(str(tmp_path / "overlay.png")).shape == vis.shape


def test_cli_check_measures_a_calibration_and_fails_one_that_no_longer_fits(pair, tmp_path):
    _, vis, distorted = pair
    cv2.imwrite(str(tmp_path / "ir.png"), distorted)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    frames = ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png")]
    runner = CliRunner()
    assert runner.invoke(calibrate_main, [*frames, "--max-uncertainty", "100", "-o",
                                          str(tmp_path / "H.json")]).exit_code == 0
    result = runner.invoke(calibrate_main, [*frames, "--check", str(tmp_path / "H.json")])
    assert result.exit_code == 0, result.output
    assert "median" in result.output and "structure matches" in result.output
    # The IR camera knocked 8 px sideways: the same calibration no longer fits.
    moved = Registration(np.array([[1, 0, 8.0], [0, 1, 0], [0, 0, 1]]) @ load_registration(tmp_path / "H.json").matrix,
                         IR_CANVAS, VIS_SIZE)
    moved.save(tmp_path / "moved.json")
    result = runner.invoke(calibrate_main, [*frames, "--check", str(tmp_path / "moved.json")])
    assert result.exit_code != 0 and "re-calibrate" in result.output and "Traceback" not in result.output
    # Frames of another size than the calibration's: one line naming both.
    cv2.imwrite(str(tmp_path / "small.png"), cv2.resize(distorted, (320, 256)))
    result = runner.invoke(calibrate_main, ["--ir", str(tmp_path / "small.png"), "--vis", str(tmp_path / "vis.png"),
                                            "--check", str(tmp_path / "H.json")])
    assert result.exit_code != 0 and "320x256" in result.output
    result = runner.invoke(calibrate_main, frames)
    assert result.exit_code != 0 and "--out" in result.output
