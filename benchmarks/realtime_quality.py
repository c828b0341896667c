"""The real-time model's quality next to maefuse-tiny, mean and max fusion (issue 24 item 1), for
benchmarks/training.md: Qabf, SCD, VIF, SSIM, Nabf and NLPD (default convention), mean over RoadScene test50 (held
out of every training run) and the six MSRS pairs shipped in ../shared/data/ivif/MSRS6 (the MSRS test split is not
available here), with a side-by-side picture (IR | VIS | maefuse-tiny | the model) of a few pairs of each.

Both models fuse with the full runtime in torch float32 at the input's own size (their ``native`` policy): the
scores are of the models, not of a backend's precision.

    python benchmarks/realtime_quality.py [--model maefuse-rt] [--baseline maefuse-tiny]
        [--data-root ../shared/data/ivif] [--out benchmarks]

Writes OUT/realtime_quality.json and OUT/realtime_quality_roadscene.png, OUT/realtime_quality_msrs.png; prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from maefuse_deploy.bench.machine import describe_machine
from maefuse_deploy.io import read_image, write_image
from maefuse_deploy.metrics import get_convention
from maefuse_deploy.metrics.compute import to_grey
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.train.dataset import find_root_pairs, read_names
from maefuse_deploy.train.evaluate import baseline, mean_scores, score, strip

METRICS = ("Qabf", "SCD", "VIF", "SSIM", "Nabf", "NLPD")
LOWER_IS_BETTER = ("Nabf", "NLPD")
PICTURED = {"roadscene": ("FLIR_04688", "FLIR_05893", "FLIR_08835"), "msrs": ("00537D", "00858N")}
PICTURE_WIDTH = 1600


def evaluate_set(pairs: list, fusers: dict[str, Fuser], pictured: tuple[str, ...]) -> tuple[dict, list]:
    """Mean scores per fusion (the models, then mean and max fusion) and the picture rows of ``pictured`` pairs."""
    grey_mode = get_convention("default").grey
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*fusers, "mean", "max")}
    picture_rows = []
    for index, pair in enumerate(pairs, 1):
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        fused = {name: fuser.fuse(ir, vis) for name, fuser in fusers.items()}
        for name, image in fused.items():
            rows[name].append(score(image, ir, vis, METRICS))
        ir_grey, vis_grey = to_grey(ir, grey_mode), to_grey(vis, grey_mode)
        for kind in ("mean", "max"):
            rows[kind].append(score(baseline(ir_grey, vis_grey, kind), ir, vis, METRICS))
        if pair.name in pictured:
            row = strip([ir, vis, *fused.values()])
            picture_rows.append(cv2.resize(row, (PICTURE_WIDTH, round(row.shape[0] * PICTURE_WIDTH / row.shape[1])),
                                           interpolation=cv2.INTER_AREA))
        print(f"\r  {index}/{len(pairs)} pairs", end="", flush=True)
    print()
    return {name: mean_scores(values) for name, values in rows.items()}, picture_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="maefuse-rt")
    parser.add_argument("--baseline", default="maefuse-tiny")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/ivif"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args()
    roadscene = args.data_root / "RoadScene"
    test50 = set(read_names(roadscene / "test50.txt"))
    sets = {
        "roadscene": [pair for pair in find_root_pairs(roadscene) if pair.name in test50],
        "msrs": find_root_pairs(args.data_root / "MSRS6"),
    }
    fusers = {name: Fuser.open(name, "torch", device="cpu") for name in (args.baseline, args.model)}
    started = time.perf_counter()
    results = {}
    for set_name, pairs in sets.items():
        print(f"{set_name}: {len(pairs)} pairs")
        results[set_name], picture = evaluate_set(pairs, fusers, PICTURED[set_name])
        write_image(args.out / f"realtime_quality_{set_name}.png", np.concatenate(picture, axis=0))
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "command": "python benchmarks/realtime_quality.py " + f"--model {args.model} --baseline {args.baseline}",
        "seconds": round(time.perf_counter() - started, 1),
        "convention": "default",
        "pairs": {name: len(pairs) for name, pairs in sets.items()},
        "results": results,
    }
    (args.out / "realtime_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    for set_name, table in results.items():
        print(f"\n{set_name} ({len(sets[set_name])} pairs)\n")
        print("| fusion | " + " | ".join(f"{m} {'(lower better)' if m in LOWER_IS_BETTER else ''}".strip()
                                         for m in METRICS) + " |")
        print("|---" * (len(METRICS) + 1) + "|")
        for name, values in table.items():
            print(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
