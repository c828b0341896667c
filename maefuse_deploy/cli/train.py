"""maefuse-train: run one training stage (mae, decoder, align, fuse); see maefuse_deploy.train."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import click

from ..model.config import CONFIGS
from ..model.sources import TRAINED_NAMES
from ..train.dataset import PHOTOMETRIC_GAIN, PHOTOMETRIC_GAMMA
from ..train.losses import FUSION_LOSSES, FusionLoss
from ..train.stages import STAGES
from ..train.trainer import AMP_MODES, SCHEDULES, TrainOptions, train
from .common import note, report_errors
from .options import batch_size_option, device_option, processing_option

# Each option's default is the TrainOptions field's: written once, in the dataclass.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrainOptions) if f.default is not MISSING}


def _default(name: str) -> dict[str, Any]:
    """click keyword arguments showing the TrainOptions field ``name``'s default."""
    return {"default": DEFAULTS[name], "show_default": True}


def _span(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}-{bounds[1]:g}"


def _betas(text: str) -> tuple[float, float]:
    try:
        first, second = (float(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers like 0.9,0.95, got {text!r}") from None
    return first, second


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stage", type=click.Choice(list(STAGES)), required=True,
              help="mae: MAE pretraining; decoder: reconstruction with a frozen encoder; align: latent alignment of "
              "the fusion layer; fuse: fusion loss on the decoded image")
@click.option("--data", type=click.Path(path_type=Path), multiple=True, required=True,
              help="folder with ir/ and vi/ (pairs matched by file stem); repeat for several")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run folder (model, checkpoints, logs)")
@click.option("--config", "config", type=click.Choice(sorted(CONFIGS)), **_default("config"))
@click.option("--init", type=click.Path(path_type=Path),
              help="start from these weights (e.g. the previous stage's model.safetensors, an MAE checkpoint, "
              f"a trained model's name ({TRAINED_NAMES}), or timm:vit_large_patch16_224.mae for timm's "
              "upstream MAE-Large encoder); a checkpoint of the same widths and depths with other head counts, block "
              "attention or a whole-factor patch size starts the config too (warm start)")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoints/last.*")
@click.option("--overwrite", is_flag=True, help="start afresh in an OUT that holds a previous run, replacing it")
@click.option("--split", type=click.Path(path_type=Path), help="file of pair names to train on")
@click.option("--exclude", type=click.Path(path_type=Path), multiple=True, help="file of pair names never to use")
@click.option("--use-test50", is_flag=True, help="do NOT hold out a data folder's test50.txt (held out by default)")
@click.option("--val-split", type=click.Path(path_type=Path), help="file of pair names to validate on")
@click.option("--val-count", type=click.IntRange(min=0), **_default("val_count"),
              help="without --val-split: hold out the last N training names for validation")
@processing_option("official: resize to the model size; native: pad to the patch size (ignored with --crop or "
                   "--native-crops) [default: the policy the --init weights were trained for; official without "
                   "--init]", old="--preprocess")
@click.option("--crop/--no-crop", **_default("crop"),
              help="random model-size crops at a random scale between fit-to-size and native")
@click.option("--native-crops", "native_tokens", type=click.IntRange(min=0), **_default("native_tokens"),
              metavar="TOKENS", help="native-resolution crops, one random grid of at most TOKENS patches per batch "
              "(trains for the native policy; validation then runs on whole images at their own size)")
@click.option("--native-positions", type=click.IntRange(min=0), **_default("native_positions"), metavar="N",
              help="with --native-crops: each batch's tokens start at a random row and column so every position of "
              "an N x N grid is trained (cover the largest frame the model will fuse: 64 = 1024x1024 pixels)")
@click.option("--flip/--no-flip", **_default("flip"), help="random left-right flips")
@click.option("--photometric", type=click.FloatRange(0, 1), **_default("photometric"), metavar="P",
              help=f"each of IR and VIS, with probability P, gets a random gamma ({_span(PHOTOMETRIC_GAMMA)}) and gain "
              f"({_span(PHOTOMETRIC_GAIN)}), log-uniform: the tones of another camera or a night scene")
@click.option("--train", "train_parts", help="comma-separated parts to train: encoder, decoder, fusion "
              "[default: per stage: mae encoder,decoder; decoder decoder; align and fuse fusion]")
@click.option("--mask-ratio", type=float, **_default("mask_ratio"), help="mae stage; 0 = plain reconstruction")
@click.option("--edge-weight", type=click.FloatRange(min=0), **_default("edge_weight"),
              help="full-image reconstruction (decoder stage, mae with --mask-ratio 0): add this times the Sobel "
              "energy of the error to the pixel MSE, for sharper edges (0: the release's plain MSE)")
@click.option("--loss", type=click.Choice(FUSION_LOSSES), **_default("loss"),
              help="fuse stage: the release's Sobel+Laplacian loss, or the older intensity+gradient loss")
@click.option("--teacher", metavar="CHECKPOINT",
              help="fuse stage: distil this model into the one trained (a checkpoint file in any layout, e.g. "
              "weights converted from the release, or a trained model's name: maefuse-tiny); it may have another "
              "config; frozen, it fuses every batch, and the loss adds --distill-weight x the mean grey-level "
              "distance to its fused image")
@click.option("--distill-weight", type=click.FloatRange(min=0, min_open=True), **_default("distill_weight"),
              help="with --teacher: weight of the distance to the teacher's fused image (grey levels, 0-255)")
@click.option("--distill-only", is_flag=True,
              help="with --teacher: minimise the distance to the teacher alone, without the fusion loss")
@click.option("--scd-weight", type=click.FloatRange(min=0), **_default("scd_weight"),
              help="fuse stage: add this times 2 - SCD (per crop, corr(F - VIS, IR) + corr(F - IR, VIS)) to the fusion "
              "loss: asks the fused image to carry what each source adds beyond the other; at 15, maefuse-rt-linear's "
              "MSRS SCD rose 0.006 for Nabf 0.0001 worse on night-toned pairs (benchmarks/training.md); 0: off")
@click.option("--steps", type=click.IntRange(min=1), help="optimiser steps (overrides --epochs)")
@click.option("--epochs", type=click.IntRange(min=1), help="passes over the training data")
@batch_size_option(DEFAULTS["batch_size"], "pairs per optimiser step, per process")
@click.option("--accum", type=click.IntRange(min=1), **_default("accum"), help="gradient accumulation steps")
@click.option("--lr", type=float, **_default("lr"))
@click.option("--betas", default=",".join(map(str, DEFAULTS["betas"])), show_default=True, help="AdamW betas")
@click.option("--weight-decay", type=float, **_default("weight_decay"),
              help="on weight matrices; biases and 1-D parameters get none")
@click.option("--warmup-steps", type=click.IntRange(min=0), **_default("warmup_steps"))
@click.option("--schedule", type=click.Choice(SCHEDULES), **_default("schedule"))
@click.option("--amp", type=click.Choice(AMP_MODES), **_default("amp"),
              help="auto: bf16 (or fp16) on CUDA, float32 on CPU; bf16 also works on CPUs")
@click.option("--seed", type=int, **_default("seed"))
@click.option("--checkpoint-every", type=click.IntRange(min=1), **_default("checkpoint_every"), help="steps")
@click.option("--val-every", type=click.IntRange(min=0), **_default("val_every"),
              help="validate every N epochs (0: only at the end)")
@click.option("--log-every", type=click.IntRange(min=1), **_default("log_every"), help="steps per CSV row")
@device_option(DEFAULTS["device"], "torchrun: one per rank")
@click.option("--workers", type=click.IntRange(min=0), **_default("workers"), help="data loader processes")
@click.option("--max-minutes", type=float, help="stop (with a checkpoint and model) after this much wall time")
@click.option("--progress/--no-progress", **_default("progress"), help="progress bar")
@report_errors
def main(stage: str, data: tuple[Path, ...], out: Path, config: str, init: Path | None, resume: bool, overwrite: bool,
         split: Path | None, exclude: tuple[Path, ...], use_test50: bool, val_split: Path | None, val_count: int,
         processing: str | None, crop: bool, native_tokens: int, native_positions: int,
         flip: bool, photometric: float, train_parts: str | None, mask_ratio: float,
         edge_weight: float, loss: FusionLoss, teacher: str | None, distill_weight: float, distill_only: bool,
         scd_weight: float,
         steps: int | None, epochs: int | None, batch_size: int, accum: int, lr: float, betas: str,
         weight_decay: float, warmup_steps: int, schedule: str, amp: str, seed: int, checkpoint_every: int,
         val_every: int, log_every: int, device: str, workers: int, max_minutes: float | None,
         progress: bool) -> None:
    """Train one stage of MaeFuse (docs/model.md §5). Run the stages in order mae -> decoder -> align -> fuse, each
    with --init pointing at the previous stage's OUT/model.safetensors. Several GPUs: torchrun --nproc_per_node N
    $(which maefuse-train) ..."""
    options = TrainOptions(
        stage=stage, data=list(data), out=out, config=config, init=init, resume=resume,
        overwrite=overwrite, split=split,
        exclude=list(exclude), holdout_default=not use_test50, val_split=val_split, val_count=val_count,
        preprocess=processing, crop=crop, native_tokens=native_tokens,
        native_positions=native_positions, flip=flip, photometric=photometric,
        train=tuple(train_parts.split(",")) if train_parts else None,
        mask_ratio=mask_ratio, edge_weight=edge_weight, loss=loss, teacher=teacher, distill_weight=distill_weight,
        distill_only=distill_only, scd_weight=scd_weight, steps=steps, epochs=epochs, batch_size=batch_size,
        accum=accum, lr=lr,
        betas=_betas(betas), weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule, amp=amp,
        seed=seed, checkpoint_every=checkpoint_every, val_every=val_every, log_every=log_every, device=device,
        workers=workers, max_minutes=max_minutes, progress=progress,
    )
    result = train(options, echo=note)
    if result.model_path is not None:
        last = f", last loss {result.final_loss:.4g}" if result.losses else " (nothing left to train)"
        note(f"done: {result.steps} steps in {result.seconds:.0f} s{last}; model {result.model_path}")
