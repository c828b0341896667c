"""Accuracy of the automatic calibration (maefuse-calibrate from frame pairs) on the real MSRS pairs, for
docs/streaming.md: numbers to benchmarks/calibration_msrs.json, a picture to benchmarks/calibration_msrs.png.

For every pair and model: the pair's own registration (the method on the pair as shipped, started at the
identity); a known homography (0.92 scale, 2 degrees roll, shift (30, 18), tilt 2e-6; the IR on a 640x512 canvas)
applied to the IR frame and estimated back from the distorted pair; the corner error (VIS frame corners, VIS
pixels) against the pair's own registration ("relative") and against the dataset's alignment ("absolute"); the
structure displacement left by the dataset's alignment and by the method; and the fused output through the
estimate against the fusion of the pair as registered by the method and as shipped (built-in model, PSNR).

    python benchmarks/calibration_msrs.py [--data ../shared/data/ivif/MSRS6] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from maefuse_deploy import Fuser
from maefuse_deploy.compare import psnr
from maefuse_deploy.errors import InputError
from maefuse_deploy.registration import alignment_residuals, corner_error, from_frames
from maefuse_deploy.registration.estimate import MAX_UNCERTAINTY_PX

CANVAS = (640, 512)
DAY_PAIRS = ("00537D", "00633D", "00556D")


def known_distortion(tilt: float = 2e-6) -> np.ndarray:
    angle, scale = np.deg2rad(2.0), 0.92
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, 30.0], [s, c, 18.0], [tilt, -tilt, 1.0]])


def evaluate(fuser: Fuser, ir: np.ndarray, vis: np.ndarray, model: str) -> dict[str, object]:
    vis_size = (vis.shape[1], vis.shape[0])
    distortion = known_distortion()
    distorted = cv2.warpPerspective(ir, distortion, CANVAS, flags=cv2.INTER_LINEAR)
    row: dict[str, object] = {"model": model}
    try:
        # Measured whatever the uncertainty (no refusal), then marked as the default bound would treat it: the
        # table shows both what was refused and how far off it was.
        own = from_frames([(ir, vis)], model, max_uncertainty_px=None)  # type: ignore[arg-type]
        started = time.perf_counter()
        estimate = from_frames([(distorted, vis)], model, max_uncertainty_px=None)  # type: ignore[arg-type]
        row["seconds"] = round(time.perf_counter() - started, 2)
    except InputError as exc:
        row["error"] = str(exc)
        return row
    back = np.linalg.inv(distortion)
    row["matches"] = estimate.extra["matches"]
    row["corner_uncertainty_px"] = round(float(estimate.extra["corner_uncertainty_px"]["max"]), 2)
    row["coverage"] = estimate.extra["coverage"]
    row["accepted_at_default_bound"] = row["corner_uncertainty_px"] <= MAX_UNCERTAINTY_PX
    row["relative_corner_error_px"] = round(corner_error(estimate.matrix, own.matrix @ back, vis_size), 2)
    row["absolute_corner_error_px"] = round(corner_error(estimate.matrix, back, vis_size), 2)
    for label, matrix in (("dataset", np.eye(3)), ("method", own.matrix)):
        displacement = float(np.median(alignment_residuals(ir, vis, matrix)))
        row[f"{label}_structure_displacement_median_px"] = round(displacement, 2)
    registered = fuser.fuse(estimate.warp(distorted), vis)
    row["fusion_psnr_vs_own_registration_db"] = round(psnr(registered, fuser.fuse(own.warp(ir), vis)), 1)
    row["fusion_psnr_vs_dataset_alignment_db"] = round(psnr(registered, fuser.fuse(ir, vis)), 1)
    return row


def edges(grey: np.ndarray) -> np.ndarray:
    equalised = cv2.createCLAHE(3.0, (8, 8)).apply(grey)
    return cv2.Canny(cv2.GaussianBlur(equalised, (0, 0), 1.2), 40, 100) > 0


def edge_overlay(ir: np.ndarray, vis_grey: np.ndarray) -> np.ndarray:
    """VIS edges green, IR edges red, both yellow: HxWx3 BGR uint8."""
    picture = cv2.cvtColor((vis_grey * 0.4).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    vis_edges, ir_edges = edges(vis_grey), edges(ir)
    picture[vis_edges] = (0, 200, 0)
    picture[ir_edges] = (0, 0, 255)
    picture[ir_edges & vis_edges] = (0, 255, 255)
    return picture


def picture(data: Path, out: Path) -> None:
    """00633D, top right: the pair as shipped (left) and as the method registers it (right), 2x zoom."""
    ir = cv2.imread(str(data / "ir" / "00633D.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(data / "vi" / "00633D.png"), cv2.IMREAD_GRAYSCALE)
    own = from_frames([(ir, vis)], max_uncertainty_px=None)
    x, y, w, h = 400, 60, 220, 160
    panels = [edge_overlay(image, vis)[y:y + h, x:x + w] for image in (ir, own.warp(ir))]
    gap = np.full((h, 4, 3), 255, np.uint8)
    strip = cv2.resize(np.hstack([panels[0], gap, panels[1]]), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    for text, left in (("as shipped", 8), ("registered by maefuse-calibrate", 2 * w + 16)):
        cv2.putText(strip, text, (left, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.imwrite(str(out), strip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ivif/MSRS6")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    fuser = Fuser.open(backend="torch")  # float32: the fusion PSNRs measure registration, not quantization
    rows = []
    names = sorted(p.stem for p in (args.data / "ir").glob("*.png"))
    for name in names:
        ir = cv2.imread(str(args.data / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(args.data / "vi" / f"{name}.png"))
        for model in ("homography", "affine"):
            row = {"pair": name, **evaluate(fuser, ir, vis, model)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    joint = {}
    day = [(cv2.imread(str(args.data / "ir" / f"{n}.png"), cv2.IMREAD_GRAYSCALE),
            cv2.imread(str(args.data / "vi" / f"{n}.png"))) for n in DAY_PAIRS]
    distorted = [(cv2.warpPerspective(ir, known_distortion(), CANVAS, flags=cv2.INTER_LINEAR), vis) for ir, vis in day]
    for model in ("homography", "affine"):
        own = from_frames(day, model, max_uncertainty_px=None)  # type: ignore[arg-type]
        estimate = from_frames(distorted, model, max_uncertainty_px=None)  # type: ignore[arg-type]
        back = np.linalg.inv(known_distortion())
        relative = corner_error(estimate.matrix, own.matrix @ back, (640, 480))
        joint[model] = {"pairs": list(DAY_PAIRS), "matches": estimate.extra["matches"],
                        "relative_corner_error_px": round(relative, 2),
                        "corner_uncertainty_px": round(float(estimate.extra["corner_uncertainty_px"]["max"]), 2),
                        "absolute_corner_error_px": round(corner_error(estimate.matrix, back, (640, 480)), 2)}
        print(json.dumps({"joint": model, **joint[model]}), flush=True)
    record = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "command": "python benchmarks/calibration_msrs.py",
              "data": "MSRS6 (tests/data/MSRS6, 640x480)", "known_distortion": known_distortion().tolist(),
              "rows": rows, "joint_day_pairs": joint}
    (args.out / "calibration_msrs.json").write_text(json.dumps(record, indent=1) + "\n")
    picture(args.data, args.out / "calibration_msrs.png")
    print(f"wrote {args.out / 'calibration_msrs.json'} and {args.out / 'calibration_msrs.png'}")


if __name__ == "__main__":
    main()
