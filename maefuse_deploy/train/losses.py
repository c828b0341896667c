"""Training losses (docs/model.md §5).

Image tensors are (B, 3, H, W) float, ImageNet-normalised (the network's space) unless a function says otherwise;
token tensors are (B, N, D).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..processing import IMAGENET_MEAN, IMAGENET_STD

FusionLoss = Literal["sobel-laplacian", "intensity-gradient"]
FUSION_LOSSES: tuple[str, ...] = ("sobel-laplacian", "intensity-gradient")
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # the release's RGB -> grey in the fusion loss

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LAPLACIAN = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]])


def to_grey255(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised -> (B, 1, H, W) float32 grey on 0-255: x*std + mean, *255, weighted channel sum.

    No clipping, so the loss keeps a gradient where the decoder overshoots."""
    images = images.float()
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (images * std + mean) * 255.0
    weights = images.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def _filter(grey: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) 3x3 correlation. Replicate padding: a zero border would add an edge of the
    image's own brightness along every side, which the max-target would then ask the output to copy."""
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel.to(grey).view(1, 1, 3, 3))


def sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """|Sobel_x| + |Sobel_y| of (B, 1, H, W)."""
    return _filter(grey, _SOBEL_X).abs() + _filter(grey, _SOBEL_X.t()).abs()


def laplacian(grey: torch.Tensor) -> torch.Tensor:
    """Signed 3x3 Laplacian [[1,1,1],[1,-8,1],[1,1,1]] of (B, 1, H, W)."""
    return _filter(grey, _LAPLACIAN)


def sobel_laplacian_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, grad_weight: float = 1.0, lap_weight: float = 2.0
) -> torch.Tensor:
    """The release's fusion loss on de-normalised grey images:
    grad_weight * L1(|grad F|, max(|grad vis|, |grad ir|)) + lap_weight * L1(Lap F, max(Lap vis, Lap ir))."""
    f, i, v = to_grey255(fused), to_grey255(ir), to_grey255(vis)
    grad_target = torch.maximum(sobel_magnitude(v), sobel_magnitude(i))
    lap_target = torch.maximum(laplacian(v), laplacian(i))  # elementwise max of the signed responses, as released
    return grad_weight * F.l1_loss(sobel_magnitude(f), grad_target) + lap_weight * F.l1_loss(laplacian(f), lap_target)


def intensity_gradient_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, grad_weight: float = 10.0
) -> torch.Tensor:
    """The older release loss: L1(max(vis, ir), F) + grad_weight * L1(|grad F|, max(|grad vis|, |grad ir|)),
    on the same 0-255 grey images."""
    f, i, v = to_grey255(fused), to_grey255(ir), to_grey255(vis)
    grad_target = torch.maximum(sobel_magnitude(v), sobel_magnitude(i))
    return F.l1_loss(f, torch.maximum(v, i)) + grad_weight * F.l1_loss(sobel_magnitude(f), grad_target)


def fusion_loss(name: FusionLoss, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    if name == "sobel-laplacian":
        return sobel_laplacian_loss(fused, ir, vis)
    if name == "intensity-gradient":
        return intensity_gradient_loss(fused, ir, vis)
    raise ValueError(f"unknown fusion loss {name!r}; use one of {FUSION_LOSSES}")


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image of (B, 1, H, W) ``a`` with the same image of ``b`` -> (B,)."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-6)


def scd_deficit(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """2 - SCD of each (B, 3, H, W) normalised crop on 0-255 grey, averaged over the batch: SCD lies in [-2, 2], so
    this is 0 where a fusion reaches SCD's maximum and 4 at its minimum.

    SCD = corr(F - VIS, IR) + corr(F - IR, VIS) (metrics.statistics.scd_fusion): how much of each source the fused
    image carries beyond the other. The fusion losses ask for edges and a teacher for its image, neither for this;
    a correlation is scale-free, so a dark crop counts as much as a day one (benchmarks/training.md)."""
    f, i, v = to_grey255(fused), to_grey255(ir), to_grey255(vis)
    return (2.0 - (_correlation(f - v, i) + _correlation(f - i, v))).mean()


def alignment_loss(fused_tokens: torch.Tensor, ir_tokens: torch.Tensor, vis_tokens: torch.Tensor) -> torch.Tensor:
    """Latent MSE between the fusion output and the mean of the two encoder outputs (targets without P)."""
    target = (ir_tokens.float() + vis_tokens.float()) / 2
    return F.mse_loss(fused_tokens.float(), target)


def edge_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared Sobel response (x and y) of the channel-mean reconstruction error of (B, 3, H, W) images.

    Pixel MSE spends a small model's capacity on the low frequencies, where most of the energy is, and leaves
    edges soft; this term charges an edge error separately. Smooth errors cost almost nothing here."""
    error = (predicted.float() - target.float()).mean(dim=1, keepdim=True)
    return (_filter(error, _SOBEL_X).pow(2) + _filter(error, _SOBEL_X.t()).pow(2)).mean()


def reconstruction_loss(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE between (B, N, P) predicted and target patches; with a (B, N) 0/1 ``mask``, over masked patches only
    (MAE)."""
    per_patch = (predicted.float() - target.float()).pow(2).mean(dim=-1)
    if mask is None:
        return per_patch.mean()
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
