"""The modules that get traced to ONNX: the network in float or FP16 form, with or without in-graph processing.

Layouts:
* float io: ir, vis (B, 3, H, W) float32 ImageNet-normalised -> fused (B, 3, H, W) float32 normalised.
* uint8 io: ir (B, Hc, Wc) uint8 grey, vis (B, Hc, Wc, 3) uint8 BGR at the camera size -> fused (B, Hc, Wc, 3)
  uint8 BGR with the VIS colour restored.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.maefuse import MaeFuse, set_fused_attention
from ..processing import IMAGENET_MEAN, IMAGENET_STD


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 inside an FP16 graph (explicit casts, so strongly typed builds keep it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def exportable(model: MaeFuse, precision: str = "fp32") -> MaeFuse:
    """A copy of ``model`` in the form that exports: explicit attention, the official fusion folded to one linear
    map, and for ``fp16`` half-precision weights and matrix products with LayerNorm and Softmax kept in float32."""
    model = copy.deepcopy(model).float().eval().requires_grad_(False)
    set_fused_attention(model, False)
    if model.config.attention == "official":
        model.fusion.folded = model.fusion.fold()
    if precision == "fp16":
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.__class__ = Fp32LayerNorm
                continue
            for name, tensor in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)
            ):
                setattr(module, name, nn.Parameter(tensor.half(), requires_grad=False)
                        if isinstance(tensor, nn.Parameter) else tensor.half())
        if model.fusion.folded is not None:
            weight, bias = model.fusion.folded
            model.fusion.folded = (weight.half(), bias.half())
    return model


class FloatGraph(nn.Module):
    def __init__(self, model: MaeFuse, precision: str) -> None:
        super().__init__()
        self.model = model
        # Not ``self.half``: that would shadow nn.Module.half().
        self.fp16 = precision == "fp16"

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if self.fp16:
            ir, vis = ir.half(), vis.half()
        return self.model(ir, vis).float()


# OpenCV's 8-bit colour conversions in 14-bit fixed point (its RGB2YCrCb_i / YCrCb2RGB_i / RGB2GRAY tables), so
# that the graph lands within a grey level of the host path: the constants as OpenCV stores them, and Cr/Cb taken
# from the rounded Y as OpenCV does (the decimal constants and an unrounded Y cost up to 2 grey levels in B).
_Q = 16384.0
_R2Y, _G2Y, _B2Y = 4899 / _Q, 9617 / _Q, 1868 / _Q
_CR, _CB = 11682 / _Q, 9241 / _Q
_CR2R, _CR2G, _CB2G, _CB2B = 22987 / _Q, 11698 / _Q, 5636 / _Q, 29049 / _Q


# RGB2GRAY is not the Y of YCrCb: OpenCV computes it in 15-bit fixed point (processing._GREY_*), and the host path
# (processing.finish_pair) uses that conversion. 9798/32768 equals 4899/16384, but 19235 and 3735 are not twice
# 9617 and 1868, so the YCrCb weights put about one pixel in a thousand a grey level off the host's.
_GREY_Q = 32768.0
_GREY_R, _GREY_G, _GREY_B = 9798 / _GREY_Q, 19235 / _GREY_Q, 3735 / _GREY_Q


def grey_of(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float RGB, whole numbers 0-255 -> (B, 1, H, W) float grey, rounded: OpenCV's RGB2GRAY exactly.

    Each weight is k / 2^15 and each product and sum stays below 2^24, so float32 holds them exactly; OpenCV's
    CV_DESCALE rounds half up, hence floor(x + 0.5) and not round() (half to even).
    """
    return torch.floor(_GREY_R * rgb[:, 0:1] + _GREY_G * rgb[:, 1:2] + _GREY_B * rgb[:, 2:3] + 0.5)


def _bgr_to_ycrcb(bgr: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float BGR 0-255 -> (B, 3, H, W) float Y (rounded), Cr, Cb with OpenCV's 8-bit constants."""
    b, g, r = bgr[:, 0:1], bgr[:, 1:2], bgr[:, 2:3]
    y = (_R2Y * r + _G2Y * g + _B2Y * b).round()
    return torch.cat([y, (r - y) * _CR + 128.0, (b - y) * _CB + 128.0], dim=1)


def _ycrcb_to_bgr(ycrcb: torch.Tensor) -> torch.Tensor:
    y, cr, cb = ycrcb[:, 0:1], ycrcb[:, 1:2] - 128.0, ycrcb[:, 2:3] - 128.0
    return torch.cat([y + _CB2B * cb, y - _CR2G * cr - _CB2G * cb, y + _CR2R * cr], dim=1)


def _cubic(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def resize_matrix(source: int, target: int, mode: str) -> torch.Tensor:
    """(target, source) float32 matrix M with ``resized = M @ signal``: OpenCV's INTER_LINEAR / INTER_CUBIC
    (half-pixel centres, a = -0.75, no antialiasing, edge pixels replicated) along one axis.

    Resizing as two small matrix products exports to plain MatMul nodes, which every runtime runs in either
    direction; onnxruntime's CPU Resize kernel refuses cubic downscaling.
    """
    position = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target) - 0.5
    left = position.floor()
    frac = position - left
    offsets = [0, 1] if mode == "bilinear" else [-1, 0, 1, 2]
    matrix = torch.zeros(target, source, dtype=torch.float64)
    rows = torch.arange(target)
    for offset in offsets:
        weight = (1 - frac if offset == 0 else frac) if mode == "bilinear" else _cubic(frac - offset)
        index = (left + offset).clamp(0, source - 1).long()
        matrix.index_put_((rows, index), weight, accumulate=True)
    return matrix.float()


class InGraphProcessing(nn.Module):
    """The official pre/post-processing (processing.py) as tensor ops around the network, for uint8 io graphs.

    The release rounds to 8 bits between its OpenCV steps; the graph rounds at the same places (after each resize
    and colour conversion, truncation after de-normalisation) so that it lands within a grey level or two.
    """

    # Registered as buffers in __init__ (they follow .to() and the state dict); declared here because
    # nn.Module.__getattr__ is typed Tensor | Module.
    mean: torch.Tensor
    std: torch.Tensor
    down_rows: torch.Tensor
    down_cols: torch.Tensor
    up_rows: torch.Tensor
    up_cols: torch.Tensor

    def __init__(self, network: FloatGraph, camera_size: tuple[int, int], model_size: tuple[int, int]) -> None:
        super().__init__()
        self.network = network
        self.camera_size = camera_size
        self.model_size = model_size
        self.register_buffer("mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1))
        (cam_h, cam_w), (net_h, net_w) = camera_size, model_size
        self.register_buffer("down_rows", resize_matrix(cam_h, net_h, "bilinear"))
        self.register_buffer("down_cols", resize_matrix(cam_w, net_w, "bilinear").t().contiguous())
        self.register_buffer("up_rows", resize_matrix(net_h, cam_h, "bicubic"))
        self.register_buffer("up_cols", resize_matrix(net_w, cam_w, "bicubic").t().contiguous())
        self.resizes = tuple(camera_size) != tuple(model_size)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        ir = ir.float().unsqueeze(1)
        ycrcb = _bgr_to_ycrcb(vis.float().permute(0, 3, 1, 2)).round().clamp(0, 255)
        if self.resizes:
            ir = (self.down_rows @ ir @ self.down_cols).round()
            ycrcb = (self.down_rows @ ycrcb @ self.down_cols).round()
        ir_net = (ir / 255.0 - self.mean) / self.std
        vis_net = (ycrcb[:, 0:1] / 255.0 - self.mean) / self.std
        rgb = ((self.network(ir_net, vis_net) * self.std + self.mean) * 255.0).clamp(0, 255).floor()
        grey = grey_of(rgb)
        bgr = _ycrcb_to_bgr(torch.cat([grey, ycrcb[:, 1:]], dim=1)).round().clamp(0, 255)
        if self.resizes:
            bgr = self.up_rows @ bgr @ self.up_cols
        return bgr.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
