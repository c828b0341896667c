"""Where a small MaeFuse loses Qabf: the resize and the autoencoder, measured on mean fusion.

Mean fusion ((IR + VIS) / 2) is the baseline maefuse-tiny must beat. This script scores it (Qabf, default
convention) as is, after the official policy's 256x256 resize round trip, and after passing through the encoder
and decoder of each checkpoint given (no fusion layer, native resolution): the edge detail a fused image can keep
is bounded by what the autoencoder keeps of an image.

    python benchmarks/tiny_diagnostics.py [--pairs val|test50] CHECKPOINT...

``val`` is the 8 validation pairs the trainer holds out (the last 8 RoadScene names outside test50); choices
during training were made on them only.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from maefuse_deploy.io import read_image
from maefuse_deploy.metrics import evaluate, get_convention
from maefuse_deploy.metrics.compute import to_grey
from maefuse_deploy.model.checkpoint import load_checkpoint
from maefuse_deploy.model.vit import unpatchify
from maefuse_deploy.processing import normalise
from maefuse_deploy.train.dataset import find_root_pairs, read_names, select_pairs
from maefuse_deploy.train.evaluate import baseline, tensor_to_grey8


def autoencode(model: torch.nn.Module, grey: np.ndarray) -> np.ndarray:
    """HxW uint8 -> HxW uint8 through the MAE encoder and decoder at native resolution (edge-padded to the patch)."""
    height, width = grey.shape
    patch = model.config.patch_size
    padded = cv2.copyMakeBorder(grey, 0, -height % patch, 0, -width % patch, cv2.BORDER_REPLICATE)
    images = torch.from_numpy(normalise(padded))[None]
    with torch.no_grad():
        grid = model.mae.token_grid(images)
        decoded = unpatchify(model.mae.decode(model.mae.encode(images), grid), grid, patch)
    return tensor_to_grey8(decoded)[0][:height, :width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--pairs", choices=("val", "test50"), default="val")
    parser.add_argument("--data", default="../shared/data/ivif/RoadScene")
    args = parser.parse_args()
    if args.pairs == "val":
        pairs = select_pairs([args.data])[0][-8:]
    else:
        test = set(read_names(f"{args.data}/test50.txt"))
        pairs = [pair for pair in find_root_pairs(args.data) if pair.name in test]
    models = {path: load_checkpoint(path)[0].eval() for path in args.checkpoints}
    grey = get_convention("default").grey
    scores: dict[str, list[float]] = {}
    for pair in pairs:
        ir, vis = read_image(pair.ir, "IR"), read_image(pair.vis, "VIS")
        mean = baseline(to_grey(ir, grey), to_grey(vis, grey), "mean")
        height, width = mean.shape
        small = cv2.resize(mean, (256, 256), interpolation=cv2.INTER_LINEAR)
        candidates = {
            "mean fusion": mean,
            "mean fusion, 256x256 round trip (official policy)": cv2.resize(
                small, (width, height), interpolation=cv2.INTER_CUBIC
            ),
        }
        for path, model in models.items():
            candidates[f"mean fusion through {path}"] = autoencode(model, mean)
        for name, image in candidates.items():
            scores.setdefault(name, []).append(evaluate(image, ir, vis, metrics=["Qabf"])["Qabf"])
    print(f"Qabf (default convention), mean over {len(pairs)} {args.pairs} pairs")
    for name, values in scores.items():
        print(f"{np.mean(values):.4f}  {name}")


if __name__ == "__main__":
    main()
