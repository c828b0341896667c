"""The staged trainer: one stage per run, resumable, single process or torchrun/DDP.

A run writes into ``out``:
    model.safetensors            the trained model at the end (our checkpoint format, loads anywhere)
    checkpoints/last.safetensors weights at the last checkpoint step
    checkpoints/last.state.pt    optimiser/scaler state, step and training-only parameters (tensors and numbers
                                 only, so it loads with ``weights_only=True``)
    train.csv, val.csv           per-step and per-validation logs; tensorboard/ when tensorboard is installed
    preview.png                  the latest validation preview

Determinism: data order comes from a seeded DistributedSampler per epoch, augmentation from (seed, epoch, index),
MAE masks from (seed, step, rank, micro-batch). A resumed run therefore continues exactly where the interrupted
one would have.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..atomic import atomic_path, check_writable, lies_within
from ..errors import CheckpointError, InputError
from ..io import write_image
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import get_config
from ..model.maefuse import MaeFuse, build_model
from ..model.sources import trained_weights
from .dataset import (
    IR_FOLDER,
    VIS_FOLDERS,
    Augment,
    ImageView,
    PairDataset,
    Preprocess,
    check_batchable,
    select_pairs,
    split_validation,
)
from .distill import DEFAULT_DISTILL_WEIGHT, Teacher
from .distributed import World, barrier, close_world, init_world, mean_across
from .evaluate import mean_scores, score, strip, tensor_to_grey8
from .losses import FUSION_LOSSES, FusionLoss
from .stages import STAGES, StageModule, check_distillation, check_scd, describe_trainable, parse_parts

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

AMP_MODES: tuple[str, ...] = ("auto", "none", "bf16", "fp16")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")
STATE_VERSION = 1


@dataclass
class TrainOptions:
    """Everything a run depends on. Defaults are the release's (docs/model.md §5) where it has one."""

    stage: str
    data: list[Path]
    out: Path
    config: str = "maefuse-tiny"
    init: Path | None = None  # weights to start from (any layout load_checkpoint reads; MAE-only files allowed)
    resume: bool = False
    overwrite: bool = False  # start afresh in an out folder that holds a previous run
    split: Path | None = None
    exclude: list[Path] = field(default_factory=list)
    holdout_default: bool = True  # exclude each data root's test50.txt
    val_split: Path | None = None
    val_count: int = 8  # without val_split: the last N training names, held out for validation
    preprocess: str | None = None  # official | native; None: the policy --init's weights were trained for
    crop: bool = False
    native_tokens: int = 0  # > 0: native-resolution crops of random grids up to this many patches (Augment)
    native_positions: int = 64  # with native crops: positions of grids up to this many patches a side are trained
    flip: bool = False
    photometric: float = 0.0  # probability of a random gamma and gain per plane (Augment)
    train: tuple[str, ...] | None = None  # trainable parts; None = the stage's default
    mask_ratio: float = 0.75
    edge_weight: float = 0.0  # full-image reconstruction: weight of the Sobel error term (stages.StageModule)
    loss: FusionLoss = "sobel-laplacian"
    # Distillation (train/distill.py): a model to fuse each batch too; the student also minimises (or, with
    # distill_only, only) distill_weight x its grey-level L1 distance to the teacher's fused image.
    teacher: str | None = None
    distill_weight: float = DEFAULT_DISTILL_WEIGHT
    distill_only: bool = False
    scd_weight: float = 0.0  # fuse stage: weight of the SCD deficit added to the fusion loss (losses.scd_deficit)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 0
    schedule: str = "constant"
    amp: str = "auto"
    seed: int = 0
    checkpoint_every: int = 200
    val_every: int = 1  # epochs; 0 = only at the end
    log_every: int = 10
    device: str = "auto"
    workers: int = 0
    max_minutes: float | None = None  # stop early (checkpointed) once this much wall time has passed
    progress: bool = True

    @property
    def trained_policy(self) -> Preprocess:
        """The runtime policy these options train for: native-resolution inputs (native crops, or uncropped native
        preprocessing) make a native model; resized inputs an official one."""
        native = self.native_tokens > 0 or (self.preprocess == "native" and not self.crop)
        return "native" if native else "official"

    def resolved(self, init_policy: str) -> TrainOptions:
        """These options with ``preprocess`` decided: unless asked otherwise (--preprocess, --crop, native crops),
        fine-tuning keeps the policy the init model was trained for, so a native model stays native."""
        if self.preprocess is not None:
            return self
        asked_otherwise = self.crop or self.native_tokens > 0
        return replace(self, preprocess="official" if asked_otherwise else init_policy)

    def check(self) -> None:
        if self.stage not in STAGES:
            raise InputError(f"unknown stage {self.stage!r}", fix=f"use one of {', '.join(STAGES)}")
        if self.loss not in FUSION_LOSSES:
            raise InputError(f"unknown fusion loss {self.loss!r}", fix=f"use one of {', '.join(FUSION_LOSSES)}")
        if self.amp not in AMP_MODES:
            raise InputError(f"unknown AMP mode {self.amp!r}", fix=f"use one of {', '.join(AMP_MODES)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}", fix=f"use one of {', '.join(SCHEDULES)}")
        check_distillation(self.stage, self.teacher is not None, self.distill_weight, self.distill_only)
        check_scd(self.stage, self.scd_weight, self.distill_only)
        if self.native_tokens < 0 or (self.native_tokens and self.crop):
            raise InputError("native crops and --crop exclude each other", fix="pass only one of them")
        if self.steps is None and self.epochs is None:
            raise InputError("give --steps or --epochs")
        for value, what in ((self.batch_size, "batch size"), (self.accum, "accumulation"),
                            (self.checkpoint_every, "checkpoint interval"), (self.log_every, "log interval")):
            if value < 1:
                raise InputError(f"{what} must be at least 1, got {value}")
        if not self.data:
            raise InputError("no --data folder given", fix="pass a folder holding ir/ and vi/")
        # The optimiser would refuse these too, but only after the data and the model loaded, as a traceback.
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise InputError(f"--lr {self.lr:g} is not a learning rate", fix="give 0 or more, e.g. 1e-4")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise InputError(f"--betas {self.betas[0]:g},{self.betas[1]:g}: each must be in [0, 1)",
                             fix="give two like 0.9,0.95")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"--weight-decay {self.weight_decay:g} is not a weight decay",
                             fix="give a finite 0 or more, e.g. 0.05")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"--max-minutes {self.max_minutes:g} is not positive",
                             fix="give the wall time in minutes, or leave it out")
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite exclude each other", fix="pass only one of them")
        for root in self.data:  # the run's files (previews are PNGs) would become pairs of the next run
            for side in (IR_FOLDER, *VIS_FOLDERS):
                if lies_within(self.out, Path(root) / side):
                    raise InputError(f"--out {self.out} lies inside the image folder {Path(root) / side}",
                                     fix="write the run to a folder of its own")
        check_writable(self.out / "model.safetensors", "--out")
        previous = [name for name in ("model.safetensors", "checkpoints", "train.csv") if (self.out / name).exists()]
        if previous and not (self.resume or self.overwrite):
            raise InputError(
                f"{self.out} holds a previous run ({', '.join(previous)})",
                fix="pass --resume to continue it, --overwrite to replace it, or another --out",
            )


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    model_path: Path | None
    model: MaeFuse
    losses: list[float]  # the (rank-averaged) loss of every step this process ran


def _mixed_precision(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise InputError("fp16 mixed precision needs a CUDA device", fix="use --amp bf16 or none on a CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, 1-D parameters (norms) and the mask token."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name.endswith("mask_token"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, options: TrainOptions, total: int) -> float:
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    if options.schedule == "cosine":
        span = max(1, total - options.warmup_steps)
        return options.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - options.warmup_steps) / span)))
    return options.lr


def _micro_seed(seed: int, step: int, rank: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank, micro]).generate_state(1)[0])


class CsvLog:
    """Append rows to a CSV; on resume, rows past the resumed step are dropped so the file reads as one run."""

    def __init__(self, path: Path, fields: list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, fields
        rows: list[dict[str, str]] = []
        if keep_until is not None and path.is_file():
            with path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= keep_until]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, float | int | str]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def _crop_to(images: list[np.ndarray], sizes: list[tuple[int, ...] | None]) -> list[np.ndarray]:
    """HxW uint8 greys cropped to their (H, W) in ``sizes`` (None: kept whole), top-left as the padding is added."""
    return [image if size is None else image[: size[0], : size[1]] for image, size in zip(images, sizes, strict=True)]


def _tensorboard(path: Path, echo: Callable[[str], None]) -> SummaryWriter | None:
    """A SummaryWriter, or None where tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        echo("tensorboard is not installed: logging to CSV only (pip install tensorboard for event files)")
        return None
    return SummaryWriter(str(path))


class Trainer:
    def __init__(self, options: TrainOptions, echo: Callable[[str], None] = tqdm.write) -> None:
        options.check()
        torch.manual_seed(options.seed)
        self.options = options
        self.world: World = init_world(options.device)
        self.echo = echo if self.world.main else (lambda _message: None)
        self.spec = STAGES[options.stage]
        self.model_config = get_config(options.config)
        # The teacher loads first: a bad --teacher is refused before the student and the data cost any time.
        self.teacher = Teacher.load(options.teacher).to(self.world.device) if options.teacher else None
        initial = self._load_initial()
        self.options = options.resolved(initial.config.policy)
        if options.preprocess is None and self.options.preprocess == "native":
            self.echo("preprocess: native (what the --init weights were trained for; --preprocess official to change)")
        self._build_data()
        self._build_model(initial)

    # -- setup -----------------------------------------------------------------------------------------------
    def _build_data(self) -> None:
        o = self.options
        pairs, notes = select_pairs(o.data, o.split, o.exclude, o.holdout_default)
        for note in notes:
            self.echo(note)
        train_pairs, val_pairs = split_validation(pairs, o.val_split, o.val_count)
        size, patch = self.model_config.img_size, self.model_config.patch_size
        augment = Augment(o.crop, o.flip, o.native_tokens, o.native_positions, o.photometric)
        # ignore: preprocess is a plain str (resolved() set it from the config's str policy); PairDataset checks it.
        self.train_pairs = PairDataset(train_pairs, size, patch, o.preprocess, augment, o.seed)  # type: ignore[arg-type]
        check_batchable(self.train_pairs, o.batch_size)
        self.dataset = self.train_pairs if self.spec.pairs else ImageView(self.train_pairs)
        # Validate the way the model will be run: whole images, resized (official) or at their own size (native).
        self.val = PairDataset(val_pairs, size, patch, o.trained_policy) if val_pairs else None
        self.sampler: DistributedSampler[int] = DistributedSampler(
            self.dataset, num_replicas=self.world.size, rank=self.world.rank, shuffle=True, seed=o.seed, drop_last=True
        )
        per_rank = len(self.sampler)
        self.batches_per_epoch = per_rank // o.batch_size
        self.steps_per_epoch = self.batches_per_epoch // o.accum
        if self.steps_per_epoch < 1:
            raise InputError(
                f"{len(self.dataset)} training items give no full step of {o.batch_size} x {o.accum} x "
                f"{self.world.size} process(es)",
                fix="lower --batch-size or --accum, or add data",
            )
        if o.steps is not None:
            self.total_steps = o.steps
        elif o.epochs is not None:
            self.total_steps = o.epochs * self.steps_per_epoch
        else:  # TrainOptions.check() refused this in __init__
            raise AssertionError("neither steps nor epochs")
        self.echo(
            f"data: {len(train_pairs)} training pairs ({len(self.dataset)} {'pairs' if self.spec.pairs else 'images'})"
            f", {len(val_pairs)} validation pairs; {self.steps_per_epoch} steps per epoch, {self.total_steps} steps"
        )

    def _load_initial(self) -> MaeFuse:
        o = self.options
        if o.init is None:
            if o.stage != "mae":
                self.echo(f"WARNING: stage {o.stage} starts from RANDOM weights (no --init); the recipe runs mae first")
            return build_model(self.model_config, seed=o.seed)
        model, report = load_checkpoint(
            trained_weights(o.init), self.model_config, allow_partial=True, allow_warm_start=True
        )
        self.echo(f"init: {report.summary()}")
        return model

    def _build_model(self, model: MaeFuse) -> None:
        o = self.options
        # The saved model records the preprocessing it was trained for; the runtime makes it the default.
        model.config = model.config.replace(policy=o.trained_policy)
        trainable = parse_parts(o.train) if o.train else self.spec.default_train
        self.trainable = trainable
        self.module = StageModule(model, o.stage, trainable, o.mask_ratio, o.loss, o.seed, o.edge_weight,
                                  self.teacher, o.distill_weight, o.distill_only, o.scd_weight).to(self.world.device)
        self.echo(f"stage {o.stage}: {self.spec.summary}")
        for line in describe_trainable(self.module):
            self.echo(line)
        if not any(p.requires_grad for p in self.module.parameters()):
            raise InputError("nothing to train: every part is frozen", fix="name parts with --train")
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.module, o.weight_decay), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        self.amp_dtype = _mixed_precision(o.amp, self.world.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.echo(
            f"optimiser: AdamW lr {o.lr:g} ({o.schedule}, warmup {o.warmup_steps}), betas {o.betas}, weight decay "
            f"{o.weight_decay:g}; batch {o.batch_size} x accum {o.accum} x {self.world.size} process(es); "
            f"precision {self.amp_dtype or 'float32'} on {self.world.device}"
        )
        self.step = 0
        if o.resume:
            self._resume()
        self.net: torch.nn.Module = self.module
        if self.world.distributed:
            self.net = DistributedDataParallel(
                self.module, device_ids=[self.world.device.index] if self.world.device.type == "cuda" else None
            )

    # -- checkpoints -----------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.options.out / "checkpoints"

    def _save(self) -> None:
        if not self.world.main:
            return
        meta = {"maefuse.train.stage": self.options.stage, "maefuse.train.step": str(self.step)}
        save_checkpoint(self.module.model, self.checkpoint_dir / "last.safetensors", meta)
        extras = {"mask_token": self.module.mask_token.detach().cpu()} if self.module.mask_token is not None else {}
        state = {
            "version": STATE_VERSION,
            "stage": self.options.stage,
            "config": self.model_config.name,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extras": extras,
            # What the saved optimiser state was made with, so a resume can apply or refuse changes explicitly.
            "options": {"train": list(self.trainable), "mask_ratio": float(self.options.mask_ratio),
                        "weight_decay": float(self.options.weight_decay), "betas": list(self.options.betas)},
        }
        with atomic_path(self.checkpoint_dir / "last.state.pt") as tmp:
            torch.save(state, tmp)

    def _resume(self) -> None:
        weights, state_path = self.checkpoint_dir / "last.safetensors", self.checkpoint_dir / "last.state.pt"
        if not (weights.is_file() and state_path.is_file()):
            raise CheckpointError(f"--resume: no checkpoint in {self.checkpoint_dir}", fix="drop --resume or fix --out")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # The reason's first sentence: torch's own text goes on to suggest weights_only=False and filing an issue.
            reason = " ".join(str(exc).split()).split(". ")[0][:200]
            raise CheckpointError(
                f"--resume: {state_path} is not a training state this toolkit wrote ({exc.__class__.__name__}: "
                f"{reason})", fix="start without --resume, or with --overwrite to replace the run"
            ) from exc
        if state.get("stage") != self.options.stage or state.get("config") != self.model_config.name:
            raise CheckpointError(
                f"--resume: {state_path} belongs to stage {state.get('stage')} of {state.get('config')}, not stage "
                f"{self.options.stage} of {self.model_config.name}",
                fix="resume with the same --stage and --config, or use another --out",
            )
        saved = state.get("options", {})
        self._refuse_changes(state_path, saved)
        model, _ = load_checkpoint(weights, self.model_config)
        self.module.model.load_state_dict(model.state_dict())
        try:
            if self.module.mask_token is not None:
                self.module.mask_token.data.copy_(state["extras"]["mask_token"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as exc:  # a state file written before the options were recorded
            raise CheckpointError(
                f"--resume: the optimiser state in {state_path} does not fit this run's trainable parameters",
                fix="resume with the --train and --mask-ratio the run started with, or use another --out",
            ) from exc
        self._apply_optimiser_options(saved)
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.echo(f"resumed from {weights} at step {self.step}")

    def _refuse_changes(self, state_path: Path, saved: dict[str, Any]) -> None:
        """--train and --mask-ratio decide which parameters the saved optimiser state belongs to: a resume must
        keep them."""
        o = self.options
        kept = (("train", "--train", list(self.trainable)), ("mask_ratio", "--mask-ratio", o.mask_ratio))
        for key, flag, now in kept:
            if key in saved and saved[key] != now:
                shown = ",".join(saved[key]) if key == "train" else saved[key]
                raise CheckpointError(
                    f"--resume: the run in {state_path.parent.parent} trained with {flag} {shown}, not "
                    f"{','.join(now) if isinstance(now, list) else now}",
                    fix=f"resume with {flag} {shown}, or start a new run in another --out",
                )

    def _apply_optimiser_options(self, saved: dict[str, Any]) -> None:
        """Loading the optimiser state restores its saved weight decay and betas; this run's options apply instead
        (the learning rate is set every step from the schedule). Changes are logged."""
        o = self.options
        decay_group, plain_group = self.optimizer.param_groups
        was_decay, was_betas = decay_group["weight_decay"], tuple(decay_group["betas"])
        decay_group["weight_decay"], plain_group["weight_decay"] = o.weight_decay, 0.0
        for group in self.optimizer.param_groups:
            group["betas"] = tuple(o.betas)
        changes = [f"weight decay {was_decay:g} -> {o.weight_decay:g}" if was_decay != o.weight_decay else "",
                   f"betas {was_betas} -> {tuple(o.betas)}" if was_betas != tuple(o.betas) else ""]
        changes = [c for c in changes if c]
        if changes:
            self.echo(f"resume: {', '.join(changes)} (the new values apply from here on)")

    # -- loop ------------------------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int, first: int) -> Iterator[dict[str, torch.Tensor]]:
        """The micro-batches of ``epoch`` from optimiser step ``first`` on, in the seeded order."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        indices = list(self.sampler)
        size = self.options.batch_size
        batches = [indices[k * size : (k + 1) * size] for k in range(self.steps_per_epoch * self.options.accum)]
        loader = DataLoader(self.dataset, batch_sampler=batches[first * self.options.accum :],
                            num_workers=self.options.workers)
        yield from loader

    def _train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> float:
        o = self.options
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(self.step, o, self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro, batch in enumerate(micro_batches):
            batch = {k: v.to(self.world.device, non_blocking=True) for k, v in batch.items() if k != "index"}
            generator = torch.Generator().manual_seed(_micro_seed(o.seed, self.step, self.world.rank, micro))
            last = micro == len(micro_batches) - 1
            # self.net is the DistributedDataParallel wrapper exactly when the world is distributed.
            sync = (self.net.no_sync() if not last and isinstance(self.net, DistributedDataParallel)
                    else contextlib.nullcontext())
            autocast = torch.autocast(self.world.device.type, dtype=self.amp_dtype or torch.float32,
                                      enabled=self.amp_dtype is not None)
            with sync, autocast:
                loss = self.net(batch, generator)
            with sync:
                self.scaler.scale(loss / len(micro_batches)).backward()
            total += float(loss.detach()) / len(micro_batches)
        if not math.isfinite(total):
            raise InputError(f"loss became {total} at step {self.step}", fix="lower --lr or use --amp none")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return mean_across(total, self.world)

    def run(self) -> TrainResult:
        o = self.options
        started = time.time()
        if self.world.main:
            o.out.mkdir(parents=True, exist_ok=True)
        self.resumed_at = self.step if o.resume else None
        train_log = CsvLog(o.out / "train.csv", ["step", "epoch", "loss", "lr", "images_per_s", "elapsed_s"],
                           self.resumed_at) if self.world.main else None
        self.val_log: CsvLog | None = None
        board = _tensorboard(o.out / "tensorboard", self.echo) if self.world.main else None
        losses: list[float] = []
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (o.progress and self.world.main),
                   desc=o.stage, unit="step", dynamic_ncols=True)
        items_per_step = o.batch_size * o.accum * self.world.size
        window_start, window_steps = time.time(), 0
        stopped_early = False
        while self.step < self.total_steps and not stopped_early:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            micro: list[dict[str, torch.Tensor]] = []
            for batch in self._epoch_batches(epoch, first):
                micro.append(batch)
                if len(micro) < o.accum:
                    continue
                self.net.train()
                loss = self._train_step(micro)
                micro = []
                losses.append(loss)
                window_steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", epoch=epoch)
                if train_log is not None and (self.step % o.log_every == 0 or self.step == self.total_steps):
                    rate = window_steps * items_per_step / max(time.time() - window_start, 1e-9)
                    lr = self.optimizer.param_groups[0]["lr"]
                    train_log.write({"step": self.step, "epoch": epoch, "loss": f"{loss:.6g}", "lr": f"{lr:.4g}",
                                     "images_per_s": f"{rate:.2f}", "elapsed_s": f"{time.time() - started:.1f}"})
                    if board is not None:
                        board.add_scalar(f"{o.stage}/loss", loss, self.step)
                        board.add_scalar(f"{o.stage}/lr", lr, self.step)
                    window_start, window_steps = time.time(), 0
                out_of_time = False
                if o.max_minutes is not None:
                    # Every rank must stop at the same step: stop as soon as any rank has run out.
                    late = float(time.time() - started > 60 * o.max_minutes)
                    out_of_time = mean_across(late, self.world) > 0
                if self.step % o.checkpoint_every == 0 or out_of_time:
                    self._save()
                    barrier(self.world)
                if out_of_time:
                    self.echo(f"--max-minutes {o.max_minutes} reached at step {self.step}: stopping")
                    stopped_early = True
                    break
                if self.step >= self.total_steps:
                    break
            else:
                if o.val_every and (epoch + 1) % o.val_every == 0 and self.step < self.total_steps:
                    self._validate(epoch, board)
        bar.close()
        self._save()
        # The epoch of the last step run: a run ending on an epoch boundary has not started the next one.
        self._validate(max(self.step - 1, 0) // self.steps_per_epoch, board)
        model_path = None
        if self.world.main:
            model_path = o.out / "model.safetensors"
            save_checkpoint(self.module.model, model_path, {
                "maefuse.train.stage": o.stage, "maefuse.train.step": str(self.step),
                "maefuse.train.options": str({k: str(v) for k, v in asdict(o).items()}),
            })
            self.echo(f"wrote {model_path} after {self.step} steps, {time.time() - started:.0f} s")
        barrier(self.world)
        if board is not None:
            board.close()
        close_world(self.world)
        return TrainResult(self.step, losses[-1] if losses else float("nan"), time.time() - started, model_path,
                           self.module.model, losses)

    # -- validation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, epoch: int, board: SummaryWriter | None) -> None:
        if not self.world.main or self.val is None:
            return
        self.module.eval()
        model = self.module.model
        row: dict[str, float | int | str] = {"step": self.step, "epoch": epoch}
        previews: list[np.ndarray] = []
        losses, metric_rows = [], []
        # Native-size validation images differ in size: one per batch.
        chunk = 1 if self.val.preprocess == "native" else 8
        for start in range(0, len(self.val), chunk):
            indices = range(start, min(start + chunk, len(self.val)))
            items = [self.val[k] for k in indices]
            # Native images are padded to whole patches for the network: score and preview what the runtime
            # returns, each image cropped back to its own size (HxW uint8 greys in, the same out).
            sizes = [self.val.images[k][0].shape if self.val.preprocess == "native" else None for k in indices]
            ir = torch.stack([item["ir"] for item in items]).to(self.world.device)
            vis = torch.stack([item["vis"] for item in items]).to(self.world.device)
            ir8, vis8 = _crop_to(tensor_to_grey8(ir), sizes), _crop_to(tensor_to_grey8(vis), sizes)
            if self.spec.pairs:
                losses.append(float(self.module({"ir": ir, "vis": vis})))
                fused8 = _crop_to(tensor_to_grey8(model(ir, vis)), sizes)
                rows = [score(f, i, v) for f, i, v in zip(fused8, ir8, vis8, strict=True)]
                if self.teacher is not None:
                    # How far the student's output (as the runtime returns it) still is from the teacher's.
                    teacher8 = _crop_to(tensor_to_grey8(self.teacher.fuse(ir, vis)), sizes)
                    for item_row, f, t in zip(rows, fused8, teacher8, strict=True):
                        item_row["teacher_L1"] = float(np.mean(np.abs(f.astype(np.float64) - t)))
                metric_rows += rows
                if not previews:
                    previews = [ir8[0], vis8[0], fused8[0]]
            else:
                images = torch.cat([ir, vis])
                recon = self.module.reconstruct(images)
                losses.append(float(torch.mean((recon - images) ** 2)))
                recon8, source8 = _crop_to(tensor_to_grey8(recon), sizes + sizes), ir8 + vis8
                mse = [np.mean((r.astype(np.float64) - s) ** 2) for r, s in zip(recon8, source8, strict=True)]
                metric_rows += [{"PSNR": float(10 * np.log10(255**2 / max(m, 1e-10)))} for m in mse]
                if not previews:
                    previews = [ir8[0], recon8[0], vis8[0], recon8[len(items)]]
        row["loss"] = f"{float(np.mean(losses)):.6g}"
        for key, value in mean_scores(metric_rows).items():
            row[key] = f"{value:.4f}"
        if self.val_log is None:
            self.val_log = CsvLog(self.options.out / "val.csv", list(row), self.resumed_at)
        self.val_log.write(row)
        if board is not None:
            for key, logged in row.items():
                if key not in ("step", "epoch"):
                    board.add_scalar(f"{self.options.stage}/val_{key}", float(logged), self.step)
        write_image(self.options.out / "preview.png", strip(previews))
        self.echo("val " + ", ".join(f"{k} {v}" for k, v in row.items()))
        self.module.train()


def train(options: TrainOptions, echo: Callable[[str], None] = tqdm.write) -> TrainResult:
    """Run one stage (see :class:`TrainOptions`); returns the trained model and its losses."""
    return Trainer(options, echo).run()
