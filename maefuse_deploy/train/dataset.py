"""Training data: registered IR/VIS pairs in ``ir/`` and ``vi/`` folders, matched by file stem.

Every image is decoded once when the dataset is built, so an unreadable file fails before training starts and
epochs cost no JPEG decoding. Images are held as the network sees them before normalisation: IR as HxW uint8
grey, VIS as the HxW uint8 Y plane of its YCrCb (the released preprocessing, docs/model.md §4).

Items crossing this module's boundary are float32 (3, H, W) tensors, ImageNet-normalised, the grey plane in each
channel. Augmentation is a pure function of (seed, epoch, index), so a resumed run or another rank draws exactly
the same crops and flips without carrying random-generator state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, ImagePair, find_pairs, read_image
from ..processing import check_pair, ir_to_grey8, normalise, vis_to_bgr8

Preprocess = Literal["official", "native"]
PREPROCESS: tuple[str, ...] = ("official", "native")
# RoadScene's published test split: never trained on unless the user names it as a split on purpose.
DEFAULT_HOLDOUT = "test50.txt"


def pair_name(entry: str) -> str:
    """A split file's entry -> the pair name: the whole entry (names may hold dots, ``scene.001``), less a
    known image suffix (``scene.001.png`` -> ``scene.001``) and any folder part."""
    path = Path(entry)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """A split file: one pair name per line (a file name or stem); blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file not found: {path}", fix="check the path")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(pair_name(line))
    if not names:
        raise InputError(f"split file {path} lists no names", fix="put one pair name per line")
    return names


def match_names(names: Sequence[str], pair_names: Sequence[str], source: str) -> tuple[set[str], list[str]]:
    """The pairs a list of names to keep out of training removes, and notes for the user.

    A name matches its pair exactly or, failing that, ignoring case (held out anyway, with a warning: test data
    must never reach training); a name matching nothing is warned about. The note counts pairs removed, not
    names in the file.
    """
    exact = set(pair_names)
    by_fold: dict[str, list[str]] = {}
    for name in pair_names:
        by_fold.setdefault(name.casefold(), []).append(name)
    removed: set[str] = set()
    case_only: list[str] = []
    unmatched: list[str] = []
    for name in dict.fromkeys(names):
        if name in exact:
            removed.add(name)
        elif name.casefold() in by_fold:
            removed.update(by_fold[name.casefold()])
            case_only.append(f"{name} -> {', '.join(by_fold[name.casefold()])}")
        else:
            unmatched.append(name)
    wanted = len(dict.fromkeys(names))
    notes = [f"{source}: holding out {len(removed)} pairs ({wanted - len(unmatched)} of the {wanted} names matched)"]
    if case_only:
        notes.append(f"WARNING: {source}: {len(case_only)} name(s) match a pair only ignoring case, held out anyway: "
                     f"{'; '.join(case_only[:5])}")
    if unmatched:
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        notes.append(f"WARNING: {source}: {len(unmatched)} name(s) match no pair in the data: "
                     f"{', '.join(unmatched[:5])}{more} (check the file against the ir/ and vi/ folders)")
    return removed, notes


# A data folder's image folders: IR in ir/, VIS in vi/ (vis/ also accepted).
IR_FOLDER = "ir"
VIS_FOLDERS = ("vi", "vis")


def find_root_pairs(root: str | os.PathLike[str]) -> list[ImagePair]:
    """``root/ir`` and ``root/vi`` (``root/vis`` also accepted) -> pairs sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}", fix="pass a folder holding ir/ and vi/")
    vis_dir = next((root / name for name in VIS_FOLDERS if (root / name).is_dir()), None)
    if not (root / IR_FOLDER).is_dir() or vis_dir is None:
        raise InputError(f"data folder {root} has no ir/ and vi/ subfolders", fix="put IR in ir/ and VIS in vi/")
    return find_pairs(root / IR_FOLDER, vis_dir)


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
    for root in roots:
        found = find_root_pairs(root)
        holdout = Path(root) / DEFAULT_HOLDOUT
        if holdout_default and holdout.is_file() and (split is None or Path(split).resolve() != holdout.resolve()):
            removed, holdout_notes = match_names(read_names(holdout), [pair.name for pair in found], str(holdout))
            excluded.update(removed)
            notes += holdout_notes
        pairs.extend(found)
    for path in exclude:
        removed, exclude_notes = match_names(read_names(path), [pair.name for pair in pairs], f"--exclude {path}")
        excluded.update(removed)
        notes += exclude_notes
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


def split_validation(
    pairs: Sequence[ImagePair], val_split: str | os.PathLike[str] | None = None, val_count: int = 8
) -> tuple[list[ImagePair], list[ImagePair]]:
    """``pairs`` (as :func:`select_pairs` returns them) -> (training, validation): the names in ``val_split``, or
    without one the last ``val_count`` pairs (none when that would leave nothing to train on)."""
    if val_split is not None:
        wanted = set(read_names(val_split))
        return [p for p in pairs if p.name not in wanted], [p for p in pairs if p.name in wanted]
    if 0 < val_count < len(pairs):
        return list(pairs[:-val_count]), list(pairs[-val_count:])
    return list(pairs), []


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
    resolution are seen); ``flip`` mirrors left-right with probability 1/2.

    ``native_tokens`` > 0 takes native-resolution windows instead (no rescaling) whose token grid is drawn per
    batch, at most ``native_tokens`` patches: a model for the native policy must meet every grid shape and
    position it will see at inference, and the content at the scale the camera delivers it. Each batch's first
    token is also given a random position so that every position of a ``native_positions`` square grid is
    trained (absolute position embeddings are never learned for positions no crop reached: the model paints
    patterns there).

    ``photometric`` is the probability that each plane (IR and VIS apart) gets a random gamma and gain
    (:func:`photometric`): a student distilled on one camera's frames follows its teacher less closely on
    another's (maefuse-rt on MSRS), and a teacher labels any pixels it is given.
    """

    crop: bool = False
    flip: bool = False
    native_tokens: int = 0
    native_positions: int = 64
    photometric: float = 0.0


# --photometric: each plane, with that probability, gets a random gamma and gain (the tones of another camera or a
# night scene): 255 * gain * (x / 255) ** gamma, both drawn log-uniformly. The ranges reach night frames: MSRS's
# night VIS and its IR average 14-30 grey levels where RoadScene's average 95-190 (gain 0.15 and gamma 2.5 take a
# 128 mean to about 7); a range that stopped at gain 0.4 / gamma 1.6 (mean 34) closed only part of maefuse-rt's gap
# to its teacher on MSRS.
PHOTOMETRIC_GAMMA = (0.6, 2.5)
PHOTOMETRIC_GAIN = (0.15, 1.0)


def photometric(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HxW uint8 -> HxW uint8 with a random gamma and gain (``PHOTOMETRIC_GAMMA``, ``PHOTOMETRIC_GAIN``)."""
    gamma, gain = (float(np.exp(rng.uniform(*np.log(bounds)))) for bounds in (PHOTOMETRIC_GAMMA, PHOTOMETRIC_GAIN))
    table = np.clip(255.0 * gain * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(plane, table)


class PairItem(TypedDict):
    ir: torch.Tensor
    vis: torch.Tensor
    index: int
    origin: torch.Tensor


class ImageItem(TypedDict):
    image: torch.Tensor
    index: int
    origin: torch.Tensor


class PairDataset(Dataset):
    """IR/VIS training pairs. Item: {"ir": (3,H,W), "vis": (3,H,W) float32 normalised, "index": int, "origin":
    (2,) int64 position of the first token (see :class:`Augment`)}."""

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

    def batch_window(
        self, sizes: Sequence[tuple[int, int]], indices: Sequence[int]
    ) -> tuple[tuple[int, int] | None, tuple[int, int]]:
        """((H, W) native crop, (row, col) position of its first token) shared by one batch of images of
        ``sizes``; (None, (0, 0)) without native crops.

        Drawn from (seed, epoch, the batch's indices), so resumed runs and every rank draw the same windows. Rows
        are drawn first, then columns within the token budget; both are bounded by the batch's smallest image.
        """
        budget = self.augment.native_tokens
        if budget <= 0:
            return None, (0, 0)
        rng = np.random.default_rng([self.seed, self.epoch, 1, *indices])
        patch = self.patch_size
        max_rows = min(h for h, _ in sizes) // patch
        max_cols = min(w for _, w in sizes) // patch
        if min(max_rows, max_cols) < 1:
            raise InputError(f"an image smaller than one {patch}x{patch} patch cannot be cropped",
                             fix="remove it from the training data")
        smallest = min(4, max_rows, max_cols, math.isqrt(budget))
        rows = int(rng.integers(smallest, min(max_rows, budget // smallest) + 1))
        cols = int(rng.integers(smallest, min(max_cols, budget // rows) + 1))
        span = self.augment.native_positions
        origin = int(rng.integers(0, max(0, span - rows) + 1)), int(rng.integers(0, max(0, span - cols) + 1))
        return (rows * patch, cols * patch), origin

    def _geometry(
        self, planes: Sequence[np.ndarray], index: int, window: tuple[int, int] | None = None
    ) -> list[np.ndarray]:
        """Apply the same preprocessing and augmentation to every HxW uint8 plane of one item (``window``: the
        batch's native crop size, see :meth:`batch_window`)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        height, width = planes[0].shape
        target_h, target_w = self.size
        if window is not None:
            window_h, window_w = window
            top = int(rng.integers(0, height - window_h + 1))
            left = int(rng.integers(0, width - window_w + 1))
            planes = [p[top : top + window_h, left : left + window_w] for p in planes]
        elif self.augment.crop:
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
        planes = [np.ascontiguousarray(p) for p in planes]
        if self.augment.photometric > 0:
            # A stream of its own, so that runs without it keep their crops and flips.
            tone = np.random.default_rng([self.seed, self.epoch, index, 2])
            planes = [photometric(p, tone) if tone.random() < self.augment.photometric else p for p in planes]
        return planes

    def __getitem__(self, index: int) -> PairItem:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[PairItem]:
        """One batch (the DataLoader calls this with a batch's indices, so native crops can share a grid)."""
        window, origin = self.batch_window([self.images[index][0].shape for index in indices], indices)
        items: list[PairItem] = []
        for index in indices:
            ir, vis = self._geometry(self.images[index], index, window)
            ir_tensor, vis_tensor = torch.from_numpy(normalise(ir)), torch.from_numpy(normalise(vis))
            items.append({"ir": ir_tensor, "vis": vis_tensor, "index": index, "origin": torch.tensor(origin)})
        return items


class ImageView(Dataset):
    """Both images of every pair as single images (MAE and decoder stages). Item: {"image": (3,H,W), "index",
    "origin"}."""

    def __init__(self, pairs: PairDataset) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __getitem__(self, index: int) -> ImageItem:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[ImageItem]:
        planes = [self.pairs.images[index // 2][index % 2] for index in indices]
        window, origin = self.pairs.batch_window([plane.shape for plane in planes], indices)
        items: list[ImageItem] = []
        for index, source in zip(indices, planes, strict=True):
            pair_index, which = divmod(index, 2)
            # Offset the augmentation index so the IR and VIS of one pair are cropped independently.
            (plane,) = self.pairs._geometry([source], len(self.pairs) * which + pair_index, window)
            items.append({"image": torch.from_numpy(normalise(plane)), "index": index, "origin": torch.tensor(origin)})
        return items


def check_batchable(dataset: PairDataset, batch_size: int) -> None:
    """Native preprocessing keeps each image's size; a batch needs one size."""
    crops = dataset.augment.crop or dataset.augment.native_tokens > 0
    if dataset.preprocess == "native" and not crops and batch_size > 1:
        sizes = {ir.shape for ir, _ in dataset.images}
        if len(sizes) > 1:
            raise InputError(
                f"native preprocessing keeps {len(sizes)} different image sizes; they cannot share a batch",
                fix="use --batch-size 1, --crop, or --preprocess official",
            )
