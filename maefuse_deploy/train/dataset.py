"""Training data: registered IR/VIS pairs in ``ir/`` and ``vi/`` folders, matched by file stem.

Every image is decoded once when the dataset is built, so an unreadable file fails before training starts and
epochs cost no JPEG decoding. Images are held as the network sees them before normalisation: IR as HxW uint8
grey, VIS as the HxW uint8 Y plane of its YCrCb (the released preprocessing, DESIGN 2.4).

Items crossing this module's boundary are float32 (3, H, W) tensors, ImageNet-normalised, the grey plane in each
channel. Augmentation is a pure function of (seed, epoch, index), so a resumed run or another rank draws exactly
the same crops and flips without carrying random-generator state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..imageio import ImagePair, find_pairs, read_image
from ..imaging import check_pair, ir_to_grey8, normalise, vis_to_bgr8

Preprocess = Literal["official", "native"]
PREPROCESS: tuple[str, ...] = ("official", "native")
# RoadScene's published test split: never trained on unless the user names it as a split on purpose.
DEFAULT_HOLDOUT = "test50.txt"


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """A split file: one pair name per line (a file name or stem); blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file not found: {path}", fix="check the path")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(Path(line).stem)
    if not names:
        raise InputError(f"split file {path} lists no names", fix="put one pair name per line")
    return names


def find_root_pairs(root: str | os.PathLike[str]) -> list[ImagePair]:
    """``root/ir`` and ``root/vi`` (``root/vis`` also accepted) -> pairs sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}", fix="pass a folder holding ir/ and vi/")
    vis_dir = next((root / name for name in ("vi", "vis") if (root / name).is_dir()), None)
    if not (root / "ir").is_dir() or vis_dir is None:
        raise InputError(f"data folder {root} has no ir/ and vi/ subfolders", fix="put IR in ir/ and VIS in vi/")
    return find_pairs(root / "ir", vis_dir)


def select_pairs(
    roots: Sequence[str | os.PathLike[str]],
    split: str | os.PathLike[str] | None = None,
    exclude: Sequence[str | os.PathLike[str]] = (),
    holdout_default: bool = True,
) -> tuple[list[ImagePair], list[str]]:
    """Pairs of every root, restricted to ``split`` and without the names of ``exclude``.

    With ``holdout_default`` each root's ``test50.txt`` is excluded too. Returns (pairs, notes for the user).
    """
    notes: list[str] = []
    pairs: list[ImagePair] = []
    excluded: set[str] = set()
    for path in exclude:
        excluded.update(read_names(path))
    for root in roots:
        found = find_root_pairs(root)
        holdout = Path(root) / DEFAULT_HOLDOUT
        if holdout_default and holdout.is_file() and (split is None or Path(split).resolve() != holdout.resolve()):
            names = set(read_names(holdout))
            excluded.update(names)
            notes.append(f"{root}: holding out the {len(names)} pairs of {DEFAULT_HOLDOUT}")
        pairs.extend(found)
    if split is not None:
        wanted = read_names(split)
        by_name = {pair.name: pair for pair in pairs}
        absent = [name for name in wanted if name not in by_name]
        if absent:
            raise InputError(
                f"split {split} names {len(absent)} pair(s) not in the data: {', '.join(absent[:5])}",
                fix="check the split file against the ir/ and vi/ folders",
            )
        pairs = [by_name[name] for name in wanted]
    pairs = [pair for pair in pairs if pair.name not in excluded]
    if not pairs:
        raise InputError("no training pairs left after the split and exclusions", fix="check --split/--exclude")
    return pairs, notes


def load_grey_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """One pair on disk -> (IR grey, VIS Y plane), both HxW uint8 of the VIS's size."""
    ir = read_image(pair.ir, "IR")
    vis = read_image(pair.vis, "VIS")
    check_pair(ir, vis, pair.name)
    ir8 = ir_to_grey8(ir)
    vis8 = vis_to_bgr8(vis)
    vis_y = cv2.cvtColor(vis8, cv2.COLOR_BGR2YCrCb)[:, :, 0] if vis8.ndim == 3 else vis8
    return ir8, np.ascontiguousarray(vis_y)


@dataclass(frozen=True)
class Augment:
    """Random crops and flips. ``crop`` takes an img_size window after rescaling the short side to a random
    length between the smallest that fits and the image's own (so scales between the official resize and native
    resolution are seen); ``flip`` mirrors left-right with probability 1/2."""

    crop: bool = False
    flip: bool = False


class PairDataset(Dataset):
    """IR/VIS training pairs. Item: {"ir": (3,H,W), "vis": (3,H,W), "index": int}, float32 normalised."""

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        size: tuple[int, int],
        patch_size: int,
        preprocess: Preprocess = "official",
        augment: Augment = Augment(),
        seed: int = 0,
    ) -> None:
        if preprocess not in PREPROCESS:
            raise InputError(f"unknown preprocessing {preprocess!r}", fix=f"use one of {', '.join(PREPROCESS)}")
        if not pairs:
            raise InputError("the dataset holds no pairs", fix="check the data folder and split")
        self.pairs = list(pairs)
        self.size = size
        self.patch_size = patch_size
        self.preprocess = preprocess
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.images = [load_grey_pair(pair) for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def names(self) -> list[str]:
        return [pair.name for pair in self.pairs]

    def _geometry(self, planes: Sequence[np.ndarray], index: int) -> list[np.ndarray]:
        """Apply the same preprocessing and augmentation to every HxW uint8 plane of one item."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        height, width = planes[0].shape
        target_h, target_w = self.size
        if self.augment.crop:
            smallest = max(target_h / height, target_w / width)
            scale = rng.uniform(smallest, max(smallest, 1.0))
            new_w, new_h = max(target_w, round(width * scale)), max(target_h, round(height * scale))
            top = int(rng.integers(0, new_h - target_h + 1))
            left = int(rng.integers(0, new_w - target_w + 1))
            resized = [cv2.resize(p, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for p in planes]
            planes = [p[top : top + target_h, left : left + target_w] for p in resized]
        elif self.preprocess == "official":
            planes = [cv2.resize(p, (target_w, target_h), interpolation=cv2.INTER_LINEAR) for p in planes]
        else:
            pad_h, pad_w = -height % self.patch_size, -width % self.patch_size
            planes = [cv2.copyMakeBorder(p, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE) for p in planes]
        if self.augment.flip and rng.random() < 0.5:
            planes = [p[:, ::-1] for p in planes]
        return [np.ascontiguousarray(p) for p in planes]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        ir, vis = self._geometry(self.images[index], index)
        return {"ir": torch.from_numpy(normalise(ir)), "vis": torch.from_numpy(normalise(vis)), "index": index}


class ImageView(Dataset):
    """Both images of every pair as single images (MAE and decoder stages). Item: {"image": (3,H,W), "index"}."""

    def __init__(self, pairs: PairDataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        pair_index, which = divmod(index, 2)
        # Offset the augmentation index so the IR and VIS of one pair are cropped independently.
        (plane,) = self.pairs._geometry([self.pairs.images[pair_index][which]], len(self.pairs) * which + pair_index)
        return {"image": torch.from_numpy(normalise(plane)), "index": index}


def check_batchable(dataset: PairDataset, batch_size: int) -> None:
    """Native preprocessing keeps each image's size; a batch needs one size."""
    if dataset.preprocess == "native" and not dataset.augment.crop and batch_size > 1:
        sizes = {ir.shape for ir, _ in dataset.images}
        if len(sizes) > 1:
            raise InputError(
                f"native preprocessing keeps {len(sizes)} different image sizes; they cannot share a batch",
                fix="use --batch-size 1, --crop, or --preprocess official",
            )
