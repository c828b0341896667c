"""The real-time model's quality next to maefuse-tiny, mean and max fusion (issue 24 item 1), for
benchmarks/training.md: Qabf, SCD, VIF, SSIM, Nabf and NLPD (default convention), mean over RoadScene test50 (held
out of every training run) and the six MSRS pairs shipped in ../shared/data/ivif/MSRS6 (the MSRS test split is not
available here), and any further folders given with --set (TNO: `benchmarks/get_tno.sh`), with a side-by-side
picture (IR | VIS | maefuse-tiny | the model) of two pairs of each.

Both models fuse with the full runtime in torch float32 at the input's own size (their ``native`` policy): the
scores are of the models, not of a backend's precision. Under each table, the model minus the baseline pair by
pair (signed so that + is better) with a 95 % bootstrap interval of the mean: whether a difference in the means is
beyond what the pairs' spread can tell apart.

    python benchmarks/realtime_quality.py [--model maefuse-rt] [--baseline maefuse-tiny]
        [--data-root ../shared/data/ivif] [--set tno=DIR ...] [--out benchmarks]

Writes OUT/realtime_quality.json and OUT/realtime_quality_SET.png for each set; prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from maefuse_deploy.bench.machine import describe_machine
from maefuse_deploy.io import write_image
from maefuse_deploy.train.dataset import find_root_pairs, read_names
from maefuse_deploy.train.evaluate import split_report, stack_rows

METRICS = ("Qabf", "SCD", "VIF", "SSIM", "Nabf", "NLPD")
LOWER_IS_BETTER = ("Nabf", "NLPD")
PICTURED = {"roadscene": ("FLIR_04688", "FLIR_05893"), "msrs": ("00537D", "00858N")}
PICTURE_WIDTH = 1600
RESAMPLES = 10000


def paired(model: list[dict[str, float]], baseline: list[dict[str, float]], metric: str) -> dict[str, float]:
    """The model minus the baseline on the same pairs, signed so that positive is better (Nabf, NLPD: lower is
    better): mean, a 95 % interval of that mean (seeded bootstrap over the pairs) and on how many pairs it is
    better. The interval says whether a mean difference is beyond what these pairs' spread can tell apart."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    differences = sign * (np.array([row[metric] for row in model]) - np.array([row[metric] for row in baseline]))
    draws = np.random.default_rng(0).integers(0, len(differences), (RESAMPLES, len(differences)))
    low, high = np.percentile(differences[draws].mean(axis=1), [2.5, 97.5])
    return {"mean": float(differences.mean()), "low": float(low), "high": float(high),
            "better_pairs": int((differences > 0).sum()), "pairs": len(differences)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="maefuse-rt")
    parser.add_argument("--baseline", default="maefuse-tiny")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/ivif"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR", dest="extra_sets",
                        help="another held-out set: DIR holds ir/ and vi/ (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args()
    roadscene = args.data_root / "RoadScene"
    test50 = set(read_names(roadscene / "test50.txt"))
    sets = {
        "roadscene": [pair for pair in find_root_pairs(roadscene) if pair.name in test50],
        "msrs": find_root_pairs(args.data_root / "MSRS6"),
    }
    for extra in args.extra_sets:
        name, separator, folder = extra.partition("=")
        if not separator or not name or name in sets:
            parser.error(f"--set {extra!r}: give NAME=DIR with a new name (taken: {', '.join(sets)})")
        sets[name] = find_root_pairs(folder)
    started = time.perf_counter()
    results, comparisons = {}, {}
    for set_name, pairs in sets.items():
        print(f"{set_name}: {len(pairs)} pairs")
        # A further set pictures its first and last pair by name: fixed before anything is scored.
        pictured = PICTURED.get(set_name, (pairs[0].name, pairs[-1].name))
        report = split_report({name: name for name in (args.baseline, args.model)}, pairs, METRICS,
                             pictured=pictured, progress=True)
        results[set_name] = report.scores
        comparisons[set_name] = {metric: paired(report.per_pair[args.model], report.per_pair[args.baseline], metric)
                                 for metric in METRICS}
        write_image(args.out / f"realtime_quality_{set_name}.png",
                    stack_rows(list(report.pictures.values()), PICTURE_WIDTH))
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "command": "python benchmarks/realtime_quality.py " + f"--model {args.model} --baseline {args.baseline}"
                   + "".join(f" --set {extra}" for extra in args.extra_sets),
        "seconds": round(time.perf_counter() - started, 1),
        "convention": "default",
        "pairs": {name: len(pairs) for name, pairs in sets.items()},
        "results": results,
        "paired_vs_baseline": comparisons,
    }
    (args.out / "realtime_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    for set_name, table in results.items():
        print(f"\n{set_name} ({len(sets[set_name])} pairs)\n")
        print("| fusion | " + " | ".join(f"{m} {'(lower better)' if m in LOWER_IS_BETTER else ''}".strip()
                                         for m in METRICS) + " |")
        print("|---" * (len(METRICS) + 1) + "|")
        for name, values in table.items():
            print(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |")
        print(f"| {args.model} - {args.baseline}, better = + (95 % interval; pairs better) | " + " | ".join(
            f"{c['mean']:+.4f} ({c['low']:+.4f} .. {c['high']:+.4f}; {c['better_pairs']}/{c['pairs']})"
            for c in comparisons[set_name].values()) + " |")


if __name__ == "__main__":
    main()
