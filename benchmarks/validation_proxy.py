"""Issue 24's six metrics on the validation pairs `maefuse-train` holds out, as they are and toned like a night frame,
each model minus a baseline: the numbers benchmarks/training.md chooses training rounds on, with no test pair.

The validation pairs are the ones `maefuse-train --data ROOT` validates on by default (test50.txt and the training
pairs left out; the last 8 names: maefuse_deploy.train.dataset.split_validation). The night proxy keeps each pair's
IR and darkens its VIS to a night frame's tones, ``255 x 0.35 x (VIS / 255)^2.2`` (rounded to uint8): MSRS's night
pairs are where maefuse-rt-linear's SCD fell below maefuse-tiny's, and this asks the same question of pairs that
were never a test set. Models fuse in torch float32 at each pair's own size (as realtime_quality.py).

    python benchmarks/validation_proxy.py MODEL [MODEL ...] [--baseline maefuse-tiny]
        [--data ../shared/data/ivif/RoadScene] [--json OUT.json]

MODEL: a trained model's name or a checkpoint. Prints one row per model and set: the mean difference from the
baseline per metric, signed so that + is better (Nabf, NLPD: lower is better), and on how many pairs it is better
(realtime_quality.paired, which the JSON also takes its 95 % bootstrap interval from).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from realtime_quality import METRICS, paired  # the sibling script: one definition of the metrics and the difference

from maefuse_deploy.bench.machine import describe_machine
from maefuse_deploy.io import ImagePair, read_image, write_image
from maefuse_deploy.train.dataset import find_root_pairs, select_pairs, split_validation
from maefuse_deploy.train.evaluate import split_report

NIGHT_GAIN, NIGHT_GAMMA = 0.35, 2.2


def night_toned(vis: np.ndarray) -> np.ndarray:
    """uint8 VIS (any channels) -> the same frame darkened to night tones: 255 x gain x (VIS / 255)^gamma."""
    dark = 255.0 * NIGHT_GAIN * (vis.astype(np.float64) / 255.0) ** NIGHT_GAMMA
    return np.clip(dark, 0, 255).round().astype(np.uint8)


def night_proxy(pairs: list[ImagePair], folder: Path) -> list[ImagePair]:
    """Write each pair's IR as it is and its VIS night-toned under folder/ir and folder/vi (PNG, lossless)."""
    for pair in pairs:
        write_image(folder / "ir" / f"{pair.name}.png", read_image(pair.ir, "IR"))
        write_image(folder / "vi" / f"{pair.name}.png", night_toned(read_image(pair.vis, "VIS")))
    return find_root_pairs(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="trained model names or checkpoints")
    parser.add_argument("--baseline", default="maefuse-tiny")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ivif/RoadScene"))
    parser.add_argument("--val-count", type=int, default=8, help="as maefuse-train's --val-count")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    pairs, _ = select_pairs([args.data])
    _, validation = split_validation(pairs, None, args.val_count)
    labels = [args.baseline, *args.models]
    record: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        sets = {"validation": validation, "night proxy": night_proxy(validation, Path(scratch))}
        for set_name, set_pairs in sets.items():
            report = split_report({label: label for label in labels}, set_pairs, METRICS)
            record[set_name] = {model: {metric: paired(report.per_pair[model], report.per_pair[args.baseline], metric)
                                        for metric in METRICS} for model in args.models}
    print(f"{len(validation)} validation pairs of {args.data}; each model - {args.baseline}, + = better "
          "(mean; pairs better)\n")
    print("| set | model | " + " | ".join(METRICS) + " |")
    print("|---|---" + "|---" * len(METRICS) + "|")
    for set_name, models in record.items():
        for model, values in models.items():
            print(f"| {set_name} | {model} | " + " | ".join(
                f"{v['mean']:+.5f} ({v['better_pairs']}/{v['pairs']})" for v in values.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": describe_machine(),
            "data": str(args.data), "pairs": [pair.name for pair in validation], "baseline": args.baseline,
            "night_tones": {"gain": NIGHT_GAIN, "gamma": NIGHT_GAMMA}, "leads": record}, indent=2) + "\n")


if __name__ == "__main__":
    main()
