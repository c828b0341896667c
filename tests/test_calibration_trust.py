"""A calibration you can trust (issue 25): every estimate carries its uncertainty at the output's corners, the
model is chosen by evidence, an estimate too uncertain is refused in one line, and point pairs are checked
against the frame sizes.

The truth for the automatic estimate is the method's own estimate on the unchanged pair (data sets ship pairs a
few px off): a known change of the IR view must be recovered on top of it, on real pairs of several sizes (the
MSRS 640x480 pairs, 256x256 crops, a 768x576 resize), grey and colour VIS, day and night."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.calibrate import main as calibrate_main
from maefuse_deploy.errors import InputError
from maefuse_deploy.registration import corner_error, from_frames, from_points, map_points, view_change

CORNERS = ("top_left", "top_right", "bottom_right", "bottom_left")


def load(msrs, name: str, grey_vis: bool) -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(msrs / "vi" / f"{name}.png"), cv2.IMREAD_GRAYSCALE if grey_vis else cv2.IMREAD_COLOR)
    return ir, vis


ALL = ("00537D", "00556D", "00633D", "00858N", "00881N", "01023N")  # 3 day, 3 night scenes
# A case is a rig: k frame pairs (pair name, how it is made from the MSRS pair, grey VIS?) and one known change of
# the IR view applied to all of them (degrees, scale, shift, tilt in px at the frame's edge), as a user calibrating
# a rig gives it. Measured (docs/streaming.md "Measured accuracy"): MSRS frames hold structure only in a band
# across the middle, so at 640x480 and 768x576 the perspective terms stay 3-4 px uncertain at the corners however
# many pairs are given, and those rigs are refused; 256x256 crops of that band are covered and accepted, untilted
# (1.56 px uncertain, 0.91 px off), while under a 1 px tilt the same 12 crops read 2.01 px (1.03 px off): refused
# since the jackknife (the bootstrap before it read 1.91 px).
CROPS_12 = tuple((name, f"256 crop at {at}", False) for name in ALL for at in ("(100, 60)", "(300, 180)"))
RIGS = (
    ("256x256 crops, colour VIS, day+night, 12 pairs", CROPS_12, (2.0, 0.95, (6.0, -4.0), 0.0)),
    ("256x256 crops, colour VIS, day+night, 12 pairs, 1 px tilt", CROPS_12, (-1.5, 1.03, (-4.0, 5.0), 1.0)),
    ("640x480, grey VIS, night, 1 pair", (("00881N", "640x480", True),), (1.5, 0.96, (4.0, 4.0), 0.0)),
    ("768x576, colour VIS, day, 3 pairs", tuple((name, "768x576", False) for name in ALL[:3]),
     (2.0, 0.95, (6.0, -4.0), 0.0)),
)


def make_pair(msrs, name: str, how: str, grey_vis: bool) -> tuple[np.ndarray, np.ndarray]:
    ir, vis = load(msrs, name, grey_vis)
    if how == "768x576":
        return (cv2.resize(ir, (768, 576), interpolation=cv2.INTER_CUBIC),
                cv2.resize(vis, (768, 576), interpolation=cv2.INTER_CUBIC))
    if how.startswith("256 crop"):
        x, y = (int(v) for v in how.split("(")[1].rstrip(")").split(","))
        return ir[y:y + 256, x:x + 256].copy(), vis[y:y + 256, x:x + 256].copy()
    return ir, vis


def test_known_view_changes_of_real_rigs_of_several_sizes_are_recovered_or_refused(msrs):
    """Every accepted estimate within 2 px of the truth at the output's corners (the method's own estimate on the
    unchanged pairs, composed with the known change), its reported uncertainty within the bound; a refusal is one
    line that asks for more frame pairs. (The issue's ">= 60 % accepted" is not met on MSRS-like scenes, see
    RIGS.)"""
    accepted, outcomes = 0, []
    for label, members, (degrees, scale, shift, tilt) in RIGS:
        pairs = [make_pair(msrs, *member) for member in members]
        ir, vis = pairs[0]
        vis_size = (vis.shape[1], vis.shape[0])
        change, canvas = view_change((ir.shape[1], ir.shape[0]), degrees, scale, shift, tilt)
        changed = [(cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR), vis) for ir, vis in pairs]
        try:
            estimate = from_frames(changed)
        except InputError as exc:
            message = str(exc)
            assert "\n" not in message and "uncertain" in message and "more frame pairs" in message, message
            outcomes.append(f"{label}: refused")
            continue
        own = from_frames(pairs, max_uncertainty_px=None)
        accepted += 1
        uncertainty = estimate.extra["corner_uncertainty_px"]
        assert set(uncertainty) == {*CORNERS, "max"} and uncertainty["max"] <= 2.0
        error = corner_error(estimate.matrix, own.matrix @ np.linalg.inv(change), vis_size)
        outcomes.append(f"{label}: {estimate.extra['fitted_model']} {error:.2f} px (+-{uncertainty['max']:.2f})")
        assert error <= 2.0, outcomes
    assert accepted >= 1, outcomes


def roadscene_pair(roadscene, name: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """A RoadScene pair as is ("native") or its 256x256 centre crop ("crop-256", as benchmarks/calibration_roadscene.py
    makes it): IR HxW uint8, VIS HxWx3 uint8 BGR."""
    ir = cv2.imread(str(roadscene / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(roadscene / "vi" / f"{name}.jpg"))
    if variant == "crop-256":
        top, left = max((ir.shape[0] - 256) // 2, 0), (ir.shape[1] - 256) // 2
        return ir[top:top + 256, left:left + 256].copy(), vis[top:top + 256, left:left + 256].copy()
    return ir, vis


@pytest.mark.parametrize("variant", ["native", "crop-256"])
def test_roadscene_pairs_are_mostly_accepted_and_never_more_than_2_px_off(roadscene, variant):
    """The issue's measure on frames with structure over most of the frame: the first 24 RoadScene test50 pairs
    (446x259 to 597x370, colour VIS, day and night) and their 256x256 centre crops, a 3-degree roll, scale 1.04,
    shift (-5, 3) px, without and with a 2 px perspective tilt. auto must accept at least 60 % at the default bound
    and every accepted estimate must be within 2 px of the truth (benchmarks/calibration_roadscene.py, whose truth
    is the least uncertain of three models' estimates: native 16 and 16 of 24, worst 0.38 and 1.39 px; crops 17 and
    17, worst 1.50 and 1.33 px. With the bootstrap before the jackknife one crop was accepted 2.07 px off; before
    auto reported its least uncertain fit 16 and 15 native, worst 1.84 and 1.96 px; before auto weighed the
    homography when the affine was not supported, 9 and 10; before the path check 17 and 15)."""
    names = [Path(line.strip()).stem for line in (roadscene / "test50.txt").read_text().splitlines()][:24]
    rig = []  # each pair read and estimated unchanged once, for both changes: (name, ir, vis, own estimate or None)
    for name in names:
        ir, vis = roadscene_pair(roadscene, name, variant)
        try:
            own = from_frames([(ir, vis)], max_uncertainty_px=None)
        except InputError as exc:
            assert "\n" not in str(exc)
            own = None
        rig.append((name, ir, vis, own))
    for degrees, tilt in ((3.0, 0.0), (3.0, 2.0)):
        outcomes = []
        for name, ir, vis, own in rig:
            change, canvas = view_change((ir.shape[1], ir.shape[0]), degrees, 1.04, (-5.0, 3.0), tilt)
            try:
                estimate = from_frames([(cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR), vis)])
            except InputError as exc:
                assert "\n" not in str(exc)
                continue
            if own is None:  # no truth for this pair: counted as not accepted, as the estimate cannot be checked
                continue
            error = corner_error(estimate.matrix, own.matrix @ np.linalg.inv(change), (vis.shape[1], vis.shape[0]))
            outcomes.append((name, estimate.extra["fitted_model"], round(error, 2)))
            assert error <= 2.0, outcomes
        assert len(outcomes) >= 0.6 * len(names), (tilt, outcomes)


def test_an_auto_estimate_that_depends_on_its_matching_path_is_refused_saying_how_far_the_paths_end(roadscene):
    """FLIR_04722 resized to 768x576 with a tilted view: auto took a similarity at half resolution, matched the last
    rounds under that warp and ended 7.2 px from the truth with a bootstrap spread of 1.97 px: accepted. Matched
    with the homography from the first round on, the same frames end 5.8 px away; that gap now counts."""
    ir = cv2.resize(cv2.imread(str(roadscene / "ir" / "FLIR_04722.jpg"), cv2.IMREAD_GRAYSCALE), (768, 576),
                    interpolation=cv2.INTER_CUBIC)
    vis = cv2.resize(cv2.imread(str(roadscene / "vi" / "FLIR_04722.jpg")), (768, 576), interpolation=cv2.INTER_CUBIC)
    change, canvas = view_change((768, 576), 3.0, 1.04, (-5.0, 3.0), 2.0)
    with pytest.raises(InputError, match=r"matched with the homography from the first round on it ends [\d.]+ px "
                                         r"away") as refused:
        from_frames([(cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR), vis)])
    assert "\n" not in str(refused.value)


def test_the_second_paths_end_counts_in_the_uncertainty_like_a_richer_models_move():
    """Chosen.with_other_path on two fits 3 px apart at the right edge: that move becomes the bias there, the
    evidence says how far, and a path that found too few matches changes nothing but says so."""
    from maefuse_deploy.registration.estimate import Chosen, Fit

    def fit(matrix: np.ndarray) -> Fit:
        empty = np.zeros(0)
        return Fit("homography", matrix, empty, empty, empty, np.zeros((0, 8)), empty)

    shifted = np.eye(3)
    shifted[0, 0] = 1.0 + 3.0 / 639  # x' = x * (1 + 3/639): the right corners move 3 px, the left ones not at all
    chosen = Chosen(fit(np.eye(3)), np.zeros((200, 4, 2)), np.zeros((4, 2)), 0.9, {"similarity": {}})
    counted = chosen.with_other_path(Chosen(fit(shifted), np.zeros((200, 4, 2)), np.zeros((4, 2)), 0.9, {}),
                                     (640, 480))
    assert counted.evidence["homography path"]["corner_gap_px"] == pytest.approx(3.0, abs=1e-6)
    assert np.allclose(np.linalg.norm(counted.bias, axis=1), [0.0, 3.0, 3.0, 0.0])  # top-left first, clockwise
    unchanged = chosen.with_other_path(None, (640, 480))
    assert np.array_equal(unchanged.bias, chosen.bias)
    assert unchanged.evidence["homography path"] == {"rejected": "too few matches"}


def test_auto_reports_the_least_uncertain_model_of_its_last_round_not_only_the_supported_one():
    """least_uncertain: a similarity whose possible bias (the homography's 3 px corner move) makes it 3 px
    uncertain against a homography fitted to the same matches at 1 px: the homography is reported, the evidence
    saying which model support chose; where the alternative is no less uncertain, the supported one stays."""
    from maefuse_deploy.registration.estimate import Chosen, Fit, least_uncertain

    def fit(model: str, matrix: np.ndarray) -> Fit:
        empty = np.zeros(0)
        return Fit(model, matrix, empty, empty, empty, np.zeros((0, 8)), empty)

    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 4, 2))
    spread /= np.sqrt(np.mean(np.sum(spread ** 2, axis=2), axis=0))[None, :, None]  # 1 px RMS at every corner
    tilted = np.eye(3)
    tilted[0, 0] = 1.0 + 3.0 / 639  # the right corners 3 px away
    homography = Chosen(fit("homography", tilted), spread, np.zeros((4, 2)), 0.9, {})
    move = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    similarity = Chosen(fit("similarity", np.eye(3)), 0.5 * spread, move, 0.9, {"similarity": {}},
                        alternatives=(homography,))
    assert similarity.uncertainty_px == pytest.approx(np.sqrt(0.25 + 9.0), abs=0.3)
    reported = least_uncertain(similarity, homography, (640, 480))
    assert reported.fit.model == "homography" and reported.uncertainty_px == pytest.approx(1.0, abs=1e-6)
    assert reported.evidence["reported"]["supported_model"] == "similarity" and reported.alternatives == ()
    assert reported.evidence["reported"]["supported_uncertainty_px"] > 3.0
    noisy = replace(homography, offsets=4.0 * spread)  # the homography as uncertain as its move: support stands
    kept = least_uncertain(replace(similarity, alternatives=(noisy,)), None, (640, 480))
    assert kept.fit.model == "similarity" and kept.evidence["reported"]["model"] == "similarity"


def test_a_forced_model_the_frames_contradict_is_refused_naming_the_model_they_show(msrs):
    """--transform affine on a rig whose IR view was tilted (perspective, 3 px at the edges): the affine fit alone
    reads 1.7 px of bootstrap spread and was accepted 7.3 px off; the homography the frames show counts against it."""
    pairs = [make_pair(msrs, name, f"256 crop at {at}", False)
             for name in ALL[:3] for at in ("(100, 60)", "(300, 180)")]
    change, canvas = view_change((256, 256), -1.5, 1.03, (-4.0, 5.0), 3.0)
    changed = [(cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR), vis) for ir, vis in pairs]
    with pytest.raises(InputError, match="frames show a homography") as caught:
        from_frames(changed, "affine")
    assert "\n" not in str(caught.value) and "--transform auto or homography" in str(caught.value)


def test_a_homography_extrapolated_from_central_matches_is_refused_and_auto_falls_back(msrs):
    """The issue's failure: matches only in the middle of the frame, the perspective terms extrapolate to the
    corners. Forced, the homography is refused for its corner uncertainty; so is "auto" (the simpler models
    cannot rule the perspective terms out), naming the coverage."""
    ir, vis = load(msrs, "00537D", False)
    flat = np.full_like(vis, 90)
    flat[140:340, 190:450] = vis[140:340, 190:450]  # structure only in the middle third
    with pytest.raises(InputError, match="uncertain") as caught:
        from_frames([(ir, flat)], "homography")
    message = str(caught.value)
    assert "\n" not in message and "--points" in message and "edges" in message and "pairs" in message
    with pytest.raises(InputError, match=r"uncertain.*cover") as caught:
        from_frames([(ir, flat)])
    assert "\n" not in str(caught.value)


def test_cli_writes_uncertainty_coverage_and_draws_it_refuses_in_one_line(msrs, tmp_path):
    ir, vis = load(msrs, "00633D", False)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    frames = ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png")]
    runner = CliRunner()
    # One pair leaves the corners uncertain by a few px (13 px, refused at the default 2 px): a looser bound writes it.
    result = runner.invoke(calibrate_main, [*frames, "-o", str(tmp_path / "H.json"), "--preview",
                                            str(tmp_path / "p.png"), "--max-uncertainty", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "H.json").read_text())
    assert data["model"] in ("affine", "homography") and data["fitted_model"] in ("similarity", "affine",
                                                                                     "homography")
    assert set(data["corner_uncertainty_px"]) == {*CORNERS, "max"} and 0 < data["corner_uncertainty_px"]["max"] <= 20
    assert 0 < data["coverage"] <= 1
    assert "uncertainty" in result.output and "coverage" in result.output
    assert cv2.imread(str(tmp_path / "p.png")).shape == vis.shape
    # --check prints the file's uncertainty and its own.
    result = runner.invoke(calibrate_main, [*frames, "--check", str(tmp_path / "H.json")])
    assert result.exit_code == 0 and "uncertainty" in result.output, result.output
    # Above --max-uncertainty: one line naming the fixes, exit 1, nothing written.
    result = runner.invoke(calibrate_main, [*frames, "-o", str(tmp_path / "R.json"), "--max-uncertainty", "0.01",
                                            "--preview", str(tmp_path / "r.png")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and errors[0] == result.output.splitlines()[-1], result.output
    assert "--points" in errors[0] and "more frame pairs" in errors[0]
    assert not (tmp_path / "R.json").exists() and not (tmp_path / "r.png").exists()
    assert {path.name for path in tmp_path.iterdir()} == {"ir.png", "vis.png", "H.json", "p.png"}
    # Explicit models are still there: an affine fit is saved as affine.
    result = runner.invoke(calibrate_main, [*frames, "-o", str(tmp_path / "A.json"), "--transform", "similarity",
                                            "--max-uncertainty", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "A.json").read_text())
    assert data["model"] == "affine" and data["fitted_model"] == "similarity"


def test_cli_says_when_auto_reports_another_fit_than_support_chose(msrs, tmp_path):
    """00633D with its IR view rolled 3 degrees and tilted 2 px, one pair (measured: the similarity supported, 16.3
    px uncertain with the richer models' moves as its possible bias; the homography fitted to the same matches 4.0
    px, a margin no CPU's rounding moves): the line names both, the file records both."""
    ir, vis = load(msrs, "00633D", False)
    change, canvas = view_change((ir.shape[1], ir.shape[0]), 3.0, 1.04, (-5.0, 3.0), 2.0)
    ir = cv2.warpPerspective(ir, change, canvas, flags=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    result = CliRunner().invoke(calibrate_main, ["--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
                                                 "-o", str(tmp_path / "H.json"), "--max-uncertainty", "20"])
    assert result.exit_code == 0, result.output
    reported = json.loads((tmp_path / "H.json").read_text())["model_evidence"]["reported"]
    assert reported["model"] != reported["supported_model"], reported
    assert reported["uncertainty_px"] < reported["supported_uncertainty_px"]
    line = next(line for line in result.output.splitlines() if line.startswith("fitted as"))
    assert line.startswith(f"fitted as {reported['model']}, the least uncertain fit (the matches support the "
                           f"{reported['supported_model']}, whose possible bias makes it "
                           f"{reported['supported_uncertainty_px']:.2f} px uncertain)"), line


@pytest.mark.parametrize("cell_sigma", [0.0, 0.6, 1.0])
def test_the_reported_uncertainty_is_the_spread_the_estimate_has_when_matches_err_together(cell_sigma):
    """Block matches of a 256x256 frame (16 cells of 64 px) from a known homography, each cell's matches displaced
    alike (an object off the plane, a shared matching bias: ``cell_sigma`` px) plus 0.3 px each; over 60 draws the
    median reported uncertainty must be about the estimate's real RMS error at the worst corner and not below it
    (5 % for the draws' own noise): the jackknife over cells read 1.0-1.26x it (the bootstrap it replaced
    0.96-1.07x on these balanced cells). Matches taken one by one, as if independent, would not see the cells'
    shared error, which grows the real error 5-9x from the 0 px row to the 0.6 and 1 px rows."""
    from maefuse_deploy.registration.estimate import UNCERTAINTY_CELL, choose_model
    from maefuse_deploy.registration.mapping import frame_corners

    size = (256, 256)
    truth, _ = view_change(size, 2.0, 1.02, (3.0, -2.0), 1.0)
    grid = np.arange(24.0, 256 - 23, 16.0)
    ir = np.array([(x, y) for y in grid for x in grid])
    clean = map_points(truth, ir)
    groups = np.floor(clean[:, 1] / UNCERTAINTY_CELL) * 1000 + np.floor(clean[:, 0] / UNCERTAINTY_CELL)
    labels, member = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(2)
    corners = frame_corners(size)
    reported, offsets = [], []
    for _ in range(60):
        vis = clean + rng.normal(0.0, cell_sigma, (len(labels), 2))[member] + rng.normal(0.0, 0.3, clean.shape)
        chosen = choose_model(np.column_stack([ir, vis, np.ones(len(ir)), groups]), "homography", size, size,
                              np.eye(3))
        reported.append(chosen.uncertainty_px)
        offsets.append(map_points(chosen.fit.matrix, map_points(np.linalg.inv(truth), corners)) - corners)
    real = float(np.sqrt(np.mean(np.sum(np.square(offsets), axis=2), axis=0)).max())
    assert 0.95 * real <= float(np.median(reported)) <= 1.5 * real, (np.median(reported), real)


def test_point_pairs_get_an_uncertainty_from_their_residuals_and_are_checked_against_the_sizes(tmp_path):
    rng = np.random.default_rng(3)
    truth = np.array([[1.02, 0.01, -12.0], [-0.01, 1.01, 8.0], [2e-5, -1e-5, 1.0]])
    ir_points = rng.uniform([20, 20], [620, 440], size=(12, 2))  # all map inside the 640x480 VIS frame
    noisy = map_points(truth, ir_points) + rng.normal(0, 0.5, size=(12, 2))
    registration = from_points(ir_points, noisy, (640, 512), (640, 480))
    uncertainty = registration.extra["corner_uncertainty_px"]
    actual = corner_error(registration.matrix, truth, (640, 480))
    assert 0.1 < uncertainty["max"] < 3.0 and actual < 3 * uncertainty["max"], (uncertainty, actual)
    exact = from_points(ir_points[:4], map_points(truth, ir_points[:4]), (640, 512), (640, 480))
    assert exact.extra["corner_uncertainty_px"] is None and "exactly" in exact.extra["corner_uncertainty_note"]
    # Points for another frame size: one line naming the option.
    lines = [f"{x} {y} {u} {v}" for (x, y), (u, v) in zip(ir_points * 2, noisy * 2, strict=True)]
    (tmp_path / "points.txt").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(calibrate_main, ["--points", str(tmp_path / "points.txt"), "--ir-size", "640x512",
                                                 "--vis-size", "640x480", "-o", str(tmp_path / "H.json")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--ir-size 640x512" in result.output and not (tmp_path / "H.json").exists()
