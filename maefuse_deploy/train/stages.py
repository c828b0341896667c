"""The training stages (docs/model.md §5): what each one feeds the network, what it trains and what it minimises.

* ``mae``: masked-autoencoder pretraining of encoder + decoder (single images; ``mask_ratio`` 0 is plain
  full-image reconstruction).
* ``decoder``: full-image reconstruction with the encoder frozen.
* ``align``: fusion layer output -> mean of the two encoder outputs (latent MSE).
* ``fuse``: a fusion loss on the decoded image, plus ``scd_weight`` times its SCD deficit (:func:`~.losses.scd_deficit`;
  0, off, by default); with a teacher (:mod:`.distill`) plus ``distill_weight`` times the student's distance to the
  teacher's fused image (or that distance alone, ``distill_only``).

Full-image reconstruction (``decoder``, ``mae`` without masking) minimises pixel MSE plus ``edge_weight`` times
the Sobel energy of the error (:func:`~.losses.edge_error`; 0, the release's plain MSE, by default).

Batches are dicts of (B, 3, H, W) float32 normalised tensors: ``image`` for single-image stages, ``ir``/``vis``
for pair stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..model.maefuse import MaeFuse
from ..model.vit import Origin, grid_positions, patchify, unpatchify
from .distill import DEFAULT_DISTILL_WEIGHT, DISTILL_STAGES, Teacher, distill_distance
from .losses import FusionLoss, alignment_loss, edge_error, fusion_loss, reconstruction_loss, scd_deficit

PARTS: tuple[str, ...] = ("encoder", "decoder", "fusion")


@dataclass(frozen=True)
class StageSpec:
    name: str
    pairs: bool  # feeds IR/VIS pairs (else single images)
    default_train: tuple[str, ...]
    summary: str


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("mae", False, ("encoder", "decoder"), "masked-autoencoder pretraining (reconstruct masked patches)"),
        StageSpec("decoder", False, ("decoder",), "full-image reconstruction, MSE"),
        StageSpec("align", True, ("fusion",), "fusion output -> mean of the encoder outputs, latent MSE"),
        StageSpec("fuse", True, ("fusion",), "fusion loss on the decoded, de-normalised grey image"),
    )
}


def part_of(name: str) -> str:
    """Which part a MaeFuse parameter name belongs to: encoder, decoder or fusion."""
    if name.startswith("fusion."):
        return "fusion"
    if name.startswith("mae.decoder"):
        return "decoder"
    return "encoder"


def parse_parts(text: str | Sequence[str]) -> tuple[str, ...]:
    """'encoder,decoder' -> ('encoder', 'decoder'), checked against :data:`PARTS`."""
    parts = tuple(p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise InputError(f"unknown trainable part(s) {unknown or text!r}", fix=f"name some of {', '.join(PARTS)}")
    return parts


def check_distillation(stage: str, teacher: bool, weight: float, only: bool) -> None:
    """A teacher only where the stage fuses an image; the distillation options only with a teacher."""
    if teacher and stage not in DISTILL_STAGES:
        raise InputError(
            f"--teacher has no meaning in stage {stage}: only {', '.join(DISTILL_STAGES)} produces a fused image to "
            "compare with the teacher's",
            fix=f"run this stage without --teacher and distil in --stage {DISTILL_STAGES[0]}",
        )
    if not teacher and (only or weight != DEFAULT_DISTILL_WEIGHT):
        raise InputError("--distill-weight and --distill-only need a --teacher", fix="pass --teacher CHECKPOINT")
    if weight <= 0:
        raise InputError(f"distillation weight must be above 0, got {weight}", fix="drop --teacher to train without")


def check_scd(stage: str, weight: float, distill_only: bool) -> None:
    """The SCD term only where the stage fuses an image, and only beside the fusion loss it adds to."""
    if weight < 0:
        raise InputError(f"SCD weight must be at least 0, got {weight}")
    if weight and stage not in DISTILL_STAGES:
        raise InputError(f"--scd-weight has no meaning in stage {stage}: only {', '.join(DISTILL_STAGES)} fuses an "
                         "image", fix="drop --scd-weight in this stage")
    if weight and distill_only:
        raise InputError("--scd-weight adds to the fusion loss, which --distill-only drops",
                         fix="drop one of --scd-weight and --distill-only")


class StageModule(nn.Module):
    """Wraps a MaeFuse for one stage; ``forward(batch, generator)`` returns the scalar loss.

    The MAE stage owns a learned mask token (the released model has none: it is a training-only parameter and is
    kept in the training state, not in the model file). ``generator`` draws the MAE masks so a run is a pure
    function of its seed and step.
    """

    def __init__(
        self,
        model: MaeFuse,
        stage: str,
        trainable: Sequence[str],
        mask_ratio: float = 0.75,
        loss: FusionLoss = "sobel-laplacian",
        seed: int = 0,
        edge_weight: float = 0.0,
        teacher: Teacher | None = None,
        distill_weight: float = DEFAULT_DISTILL_WEIGHT,
        distill_only: bool = False,
        scd_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise InputError(f"unknown stage {stage!r}", fix=f"use one of {', '.join(STAGES)}")
        check_distillation(stage, teacher is not None, distill_weight, distill_only)
        check_scd(stage, scd_weight, distill_only)
        self.scd_weight = scd_weight
        self.teacher = teacher
        self.distill_weight = distill_weight
        self.distill_only = distill_only
        if not 0.0 <= mask_ratio < 1.0:
            raise InputError(f"mask ratio must be in [0, 1), got {mask_ratio}")
        if edge_weight < 0:
            raise InputError(f"edge weight must be at least 0, got {edge_weight}")
        self.edge_weight = edge_weight
        self.model = model
        self.stage = stage
        self.mask_ratio = mask_ratio
        self.loss_name = loss
        self.trainable = tuple(trainable)
        for name, param in model.named_parameters():
            param.requires_grad_(part_of(name) in self.trainable and not self._unused(name))
        if stage == "mae" and mask_ratio > 0:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, model.config.decoder_embed_dim))
            nn.init.normal_(self.mask_token, std=0.02, generator=torch.Generator().manual_seed(seed))
        else:
            self.register_parameter("mask_token", None)

    def _unused(self, name: str) -> bool:
        """Parameters the stage's loss never reaches stay frozen (DDP refuses parameters without a gradient):
        the CFM under the official attention (docs/model.md §2) and the decoder in the align stage."""
        if self.model.config.attention == "official" and name.startswith("fusion.cross_model."):
            return True
        return self.stage == "align" and part_of(name) == "decoder"

    def _encode(self, images: torch.Tensor, origin: Origin = (0, 0)) -> torch.Tensor:
        if "encoder" in self.trainable:
            return self.model.mae.encode(images, origin)
        with torch.no_grad():  # a frozen encoder needs no activation memory
            return self.model.mae.encode(images, origin)

    def _masked_reconstruction(
        self, images: torch.Tensor, generator: torch.Generator | None, origin: Origin
    ) -> torch.Tensor:
        """MAE: encode a random (1 - mask_ratio) subset of patches, decode all, MSE on the masked ones."""
        mae = self.model.mae
        grid = mae.token_grid(images)
        tokens = mae.patch_embed(images) + grid_positions(mae.pos_embed, mae.grid, grid, origin)
        batch, count, dim = tokens.shape
        keep = max(1, round(count * (1 - self.mask_ratio)))
        noise = torch.rand(batch, count, generator=generator, device="cpu").to(images.device)
        order = noise.argsort(dim=1)
        kept = order[:, :keep]
        x = tokens.gather(1, kept[..., None].expand(-1, -1, dim))
        for block in mae.blocks:
            x = block(x)
        x = mae.decoder_embed(mae.norm(x))
        full = self.mask_token.to(x.dtype).expand(batch, count, -1).clone()
        full = full.scatter(1, kept[..., None].expand(-1, -1, x.shape[-1]), x)
        x = full + grid_positions(mae.decoder_pos_embed, mae.grid, grid, origin)
        for block in mae.decoder_blocks:
            x = block(x)
        predicted = mae.decoder_pred(mae.decoder_norm(x))
        mask = torch.ones(batch, count, device=images.device).scatter(1, kept, 0.0)
        return reconstruction_loss(predicted, patchify(images, mae.patch_size), mask)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, H, W) full-image reconstruction (no masking), normalised space."""
        grid = self.model.mae.token_grid(images)
        patches = self.model.mae.decode(self._encode(images), grid)
        return unpatchify(patches, grid, self.model.config.patch_size)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch["origin"]`` (B, 2), one value for the whole batch: the position of the crops' first token."""
        origin: Origin = (0, 0)
        if "origin" in batch:
            first_row, first_col = (int(value) for value in batch["origin"][0])
            origin = (first_row, first_col)
        if self.stage == "mae" and self.mask_ratio > 0:
            return self._masked_reconstruction(batch["image"], generator, origin)
        if self.stage in ("mae", "decoder"):
            images = batch["image"]
            grid = self.model.mae.token_grid(images)
            predicted = self.model.mae.decode(self._encode(images, origin), grid, origin)
            loss = reconstruction_loss(predicted, patchify(images, self.model.config.patch_size))
            if self.edge_weight:
                decoded = unpatchify(predicted, grid, self.model.config.patch_size)
                loss = loss + self.edge_weight * edge_error(decoded, images)
            return loss
        ir, vis = batch["ir"], batch["vis"]
        grid = self.model.mae.token_grid(ir)
        tokens = self._encode(torch.cat([ir, vis], dim=0), origin)
        ir_tokens, vis_tokens = tokens[: ir.shape[0]], tokens[ir.shape[0] :]
        fused_tokens = self.model.fusion(ir_tokens, vis_tokens, grid, origin)
        if self.stage == "align":
            return alignment_loss(fused_tokens, ir_tokens, vis_tokens)
        patch = self.model.config.patch_size
        fused = unpatchify(self.model.mae.decode(fused_tokens, grid, origin), grid, patch)
        distance = None
        if self.teacher is not None:
            distance = distill_distance(fused, self.teacher.fuse(ir, vis, (origin[0] * patch, origin[1] * patch)))
            if self.distill_only:
                return self.distill_weight * distance
        loss = fusion_loss(self.loss_name, fused, ir, vis)
        if self.scd_weight:
            loss = loss + self.scd_weight * scd_deficit(fused, ir, vis)
        return loss if distance is None else loss + self.distill_weight * distance


def describe_trainable(module: StageModule) -> list[str]:
    """One line per part: trained or frozen, with parameter counts (printed at the start of a run)."""
    counts: dict[str, int] = dict.fromkeys(PARTS, 0)
    trained: dict[str, int] = dict.fromkeys(PARTS, 0)
    for name, param in module.model.named_parameters():
        counts[part_of(name)] += param.numel()
        trained[part_of(name)] += param.numel() if param.requires_grad else 0
    lines = [
        f"  {part:<8} {'TRAIN ' if trained[part] else 'frozen'} {counts[part] / 1e6:8.3f}M parameters"
        + (f" ({trained[part] / 1e6:.3f}M trained)" if 0 < trained[part] < counts[part] else "")
        for part in PARTS
    ]
    if "fusion" in module.trainable and module.model.config.attention == "official":
        lines.append("  (official attention: the CFM (fusion.cross_model) has no effect and stays frozen)")
    if module.mask_token is not None:
        lines.append(f"  mask token TRAIN  {module.mask_token.numel()} parameters (training only, not shipped)")
    fusion_term = f"{module.loss_name} loss" + (f" + {module.scd_weight:g} x (2 - SCD)" if module.scd_weight else "")
    if module.scd_weight and module.teacher is None:
        lines.append(f"  loss = {fusion_term}")
    if module.teacher is not None:
        size = sum(p.numel() for p in module.teacher.model.parameters()) / 1e6
        fusion_part = "" if module.distill_only else f"{fusion_term} + "
        lines.append(f"  teacher  frozen {size:8.3f}M parameters: {module.teacher.description}; loss = {fusion_part}"
                     f"{module.distill_weight:g} x mean |grey student - grey teacher| (0-255)")
    return lines
