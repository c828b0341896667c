"""Distillation (``maefuse-train --teacher``): a trained model's fused image as a second target for the student.

The teacher is any model the runtime can load (a checkpoint file in any layout, weights converted from the
release, a trained model's name, ``random:CONFIG``), frozen in eval mode and run without gradients. It may have
another config than the student (size, depth, width, patch, preprocessing policy).

Only the ``fuse`` stage has a fused image to compare: ``mae`` and ``decoder`` reconstruct single images, whose
true pixels are a better target than any teacher's reconstruction, and ``align`` compares latent tokens, which
live in each network's own space (another width, another grid), so a teacher means nothing there.

The distance is the mean absolute difference of the two fused images' grey planes on 0-255 (the RGB -> grey of
the fusion losses, :func:`~.losses.to_grey255`): the grey plane is what the runtime keeps of the network's
output, and a distance in grey levels reads directly. The default weight is 10: the Sobel+Laplacian loss sums
gradient errors on the same scale (about 100 for maefuse-tiny on RoadScene, 350-500 for an untrained student)
while a student's distance is 5-50 grey levels; at weight 1 the fusion loss drowned the teacher (README.md,
"Distillation": a micro student's distance fell from 49 to 19 grey levels in 200 steps at weight 10).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..errors import MaeFuseError
from ..model.maefuse import MaeFuse
from ..model.sources import resolve_torch_model
from ..model.vit import Origin, unpatchify
from .losses import to_grey255

# Stages with a fused image to distil (see the module docstring for why the others have none).
DISTILL_STAGES: tuple[str, ...] = ("fuse",)
DEFAULT_DISTILL_WEIGHT = 10.0


def fuse_at(model: MaeFuse, ir: torch.Tensor, vis: torch.Tensor, origin: Origin = (0, 0)) -> torch.Tensor:
    """(B, 3, H, W) normalised IR and VIS, H and W multiples of the patch, first token at grid position ``origin``
    -> (B, 3, H, W) fused, normalised (``MaeFuse.forward`` with an origin, for native crops)."""
    grid = model.mae.token_grid(ir)
    tokens = model.mae.encode(torch.cat([ir, vis], dim=0), origin)
    fused = model.fusion(tokens[: ir.shape[0]], tokens[ir.shape[0] :], grid, origin)
    return unpatchify(model.mae.decode(fused, grid, origin), grid, model.config.patch_size)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, no antialiasing: the runtime's cv2 INTER_LINEAR), a no-op at the size.
    Linear, so resizing normalised images equals resizing their pixels."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


class Teacher:
    """A frozen fusion model whose output, on the student's grid, is the student's distillation target.

    Not an ``nn.Module`` on purpose: held by the stage module as a plain attribute it stays out of the optimiser,
    the saved model, DDP's gradient reduction and ``train()``/``eval()`` switches.
    """

    def __init__(self, model: MaeFuse, description: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.description = description

    @classmethod
    def load(cls, source: str | os.PathLike[str]) -> Teacher:
        """A checkpoint path, a trained model's name or ``random:CONFIG``; refused in one line naming --teacher."""
        try:
            resolved = resolve_torch_model(source)
        except MaeFuseError as exc:
            raise type(exc)(f"--teacher {source}: {exc}") from exc
        return cls(resolved.model, resolved.description)

    def to(self, device: torch.device) -> Teacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor, pixel_origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The teacher's fusion of the student's (B, 3, H, W) normalised inputs, on the student's H x W grid.

        The teacher sees the same pixels as the student (the same crop, flip and scale), brought to its own
        input the way its runtime policy would: resized to its ``img_size`` (official), or padded to whole
        patches with its first token at the same image position (native; ``pixel_origin`` is where the student's
        first token sits, in pixels, for native crops). Its output is brought back onto the student's grid
        (cropped, resized). Re-preprocessing the raw pair instead would give a larger teacher sharper input, but
        the target lands on the student's grid anyway, and this way every augmentation (crops, native crops,
        flips) applies to both models without a second data pipeline.
        """
        config = self.model.config
        patch = config.patch_size
        height, width = ir.shape[-2:]
        if config.policy == "official":
            size = config.img_size
            fused = fuse_at(self.model, _resize(ir, size), _resize(vis, size))
            return _resize(fused, (height, width))
        pad = (0, -width % patch, 0, -height % patch)
        ir, vis = F.pad(ir, pad, mode="replicate"), F.pad(vis, pad, mode="replicate")
        origin = (round(pixel_origin[0] / patch), round(pixel_origin[1] / patch))
        return fuse_at(self.model, ir, vis, origin)[..., :height, :width]


def distill_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean |grey(student) - grey(teacher)| of (B, 3, H, W) normalised fused images, in grey levels (0-255)."""
    return F.l1_loss(to_grey255(student), to_grey255(teacher))
