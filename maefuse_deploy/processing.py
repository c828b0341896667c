"""Pre- and post-processing: the one path every backend shares (docs/model.md §4).

Policies:
* ``official`` (default): the released inference script, step by step. Both images are resized to the model size
  (bilinear, the interpolation the release actually runs), the VIS luma and the IR go through the network, the
  fused grey replaces the VIS Y plane at model size, and the colour result is resized back with bicubic.
* ``native``: no resize. Both images are padded (edge replicate) to a multiple of the patch size, the network runs
  on that token grid (position embeddings come from the formula) and the result is cropped back. The VIS
  chroma is used at its own resolution.

Array layouts at this module's boundary: images are OpenCV HxW (grey) or HxWx3 (BGR) / HxWx4 (BGRA), uint8 or
uint16; network tensors are float32 (3, H, W), ImageNet-normalised.

Input conversions: IR is taken as grey (a colour IR file is converted with BGR2GRAY; the release reads IR as
3-channel BGR, which is the same for grey files). 16-bit IR (radiometric thermal frames) is mapped to 8 bits by a
linear stretch of the frame between its 0.5th and 99.5th percentiles: a per-frame automatic gain, robust to a few
hot or dead pixels, which keeps the contrast of the scene instead of the sensor's full 16-bit range. 16-bit VIS is
scaled by 255/65535. An alpha channel is dropped (the fused image has no transparency).

The same steps on torch tensors (``*_tensor`` below) keep CUDA frames on their GPU (Fuser's device path): the
colour conversions are OpenCV's 14-bit fixed-point arithmetic in integers (bit-exact), the 16-bit stretch takes
the percentiles as numpy does, and only the resizes (OpenCV's fixed-point bilinear and bicubic, here in floating
point with the same geometry) may differ from the host path by a grey level. torch is imported only there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from .errors import InputError

Policy = Literal["official", "native"]
POLICIES: tuple[str, ...] = ("official", "native")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IR16_PERCENTILES = (0.5, 99.5)


def ir_to_grey8(image: np.ndarray) -> np.ndarray:
    """IR image (HxW / HxWx1 / HxWx3 / HxWx4, uint8 or uint16) -> HxW uint8 grey."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint16:
        low, high = ir16_range(image)
        image = stretch_to_grey8(image, low, high)
    return np.ascontiguousarray(image)


def ir16_range(image: np.ndarray) -> tuple[float, float]:
    """The (low, high) a 16-bit IR frame is stretched between: its 0.5th and 99.5th percentiles."""
    low, high = np.percentile(image, IR16_PERCENTILES)
    return float(low), float(high)


def stretch_to_grey8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """HxW uint16 -> HxW uint8: linear from [low, high] to [0, 255], clipped (the 16-to-8-bit IR mapping)."""
    scale = 255.0 / max(float(high - low), 1.0)
    return np.clip((image.astype(np.float32) - low) * scale + 0.5, 0, 255).astype(np.uint8)


def vis_to_bgr8(image: np.ndarray) -> np.ndarray:
    """VIS image -> HxW uint8 (grey stays grey) or HxWx3 uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


# normalise's arithmetic done once per grey level: (v / 255 - mean_c) / std_c in float32 for v = 0..255, (3, 256).
_NORMALISED_LEVELS = ((np.arange(256, dtype=np.float32) / np.float32(255.0))[None] - IMAGENET_MEAN[:, None]) / (
    IMAGENET_STD[:, None])


def normalise(grey: np.ndarray) -> np.ndarray:
    """HxW uint8 grey -> (3, H, W) float32: the grey in each channel, /255, ImageNet mean/std per channel.

    A uint8 grey has 256 levels, so each channel is a table lookup of the same float32 arithmetic (bit-identical to
    computing it per pixel, and at 640x480 0.3 ms instead of 2 ms: it runs twice per fused pair)."""
    out = np.empty((3, *grey.shape), np.float32)
    for channel in range(3):
        cv2.LUT(grey, _NORMALISED_LEVELS[channel], dst=out[channel])
    return out


def denormalise(decoded: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 network output -> HxWx3 uint8 (RGB order): x*std + mean, *255, clip, truncate.

    Plane by plane in one buffer: the same float32 operations per pixel as on the HxWx3 view, without its strided
    temporaries (0.7 ms instead of 1.2 at 640x480, once per fused pair)."""
    buffer = np.empty(decoded.shape[1:], np.float32)
    planes = []
    for channel in range(3):
        np.multiply(decoded[channel], IMAGENET_STD[channel], out=buffer)
        np.add(buffer, IMAGENET_MEAN[channel], out=buffer)
        np.multiply(buffer, np.float32(255.0), out=buffer)
        np.clip(buffer, 0, 255, out=buffer)
        planes.append(buffer.astype(np.uint8))
    return cv2.merge(planes)


@dataclass
class PairContext:
    """What post-processing needs to turn a network output back into an image of the input's size."""

    original_size: tuple[int, int]  # (H, W) of the input pair
    # HxWx3 uint8 YCrCb of the VIS at network size (official) or input size (native): a numpy array, or a torch
    # tensor on the frames' device (prepare_pair_tensor)
    vis_ycrcb: Any
    colour: bool  # the VIS was colour: return BGR, else grey
    network_size: tuple[int, int]  # (H, W) of the tensors given to the network


def check_pair(ir: np.ndarray, vis: np.ndarray, name: str = "pair", resize: bool = False) -> None:
    if ir.ndim not in (2, 3) or vis.ndim not in (2, 3):
        raise InputError(f"{name}: images must be HxW or HxWxC arrays, got {ir.shape} and {vis.shape}")
    if ir.dtype not in (np.uint8, np.uint16) or vis.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: images must be uint8 or uint16, got {ir.dtype} and {vis.dtype}")
    for image, role in ((ir, "IR"), (vis, "VIS")):
        if image.size == 0:
            raise InputError(f"{name}: {role} is empty ({image.shape})", fix="check the source of the frame")
        if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
            raise InputError(f"{name}: {role} has {image.shape[2]} channels", fix="use grey, BGR or BGRA")
    if ir.shape[:2] != vis.shape[:2] and not resize:
        raise InputError(
            f"{name}: IR is {ir.shape[1]}x{ir.shape[0]} but VIS is {vis.shape[1]}x{vis.shape[0]} (WxH)",
            fix="register the pair to one size, or pass --resize-ir to resize IR to the VIS size",
        )


def prepare_pair(
    ir: np.ndarray,
    vis: np.ndarray,
    policy: Policy,
    model_size: tuple[int, int],
    patch_size: int,
    name: str = "pair",
    resize: bool = False,
) -> tuple[np.ndarray, np.ndarray, PairContext]:
    """One pair of OpenCV images -> (ir (3,H,W), vis (3,H,W)) float32 network inputs and their context.

    ``model_size`` (H, W) is the official policy's resize target; ``resize`` allows an IR of another size than the
    VIS (it is resized to the VIS size, bilinear).
    """
    if ir.ndim == 3 and ir.shape[2] == 1:
        ir = ir[:, :, 0]
    if vis.ndim == 3 and vis.shape[2] == 1:
        vis = vis[:, :, 0]
    check_pair(ir, vis, name, resize)
    ir8 = ir_to_grey8(ir)
    vis8 = vis_to_bgr8(vis)
    height, width = vis8.shape[:2]
    if ir8.shape != (height, width):
        ir8 = cv2.resize(ir8, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = vis8.ndim == 3
    vis_bgr = vis8 if colour else cv2.cvtColor(vis8, cv2.COLOR_GRAY2BGR)
    ycrcb = cv2.cvtColor(vis_bgr, cv2.COLOR_BGR2YCrCb)
    if policy == "official":
        target_h, target_w = model_size
        ir_net = cv2.resize(ir8, (target_w, target_h), interpolation=cv2.INTER_LINEAR)
        ycrcb = cv2.resize(ycrcb, (target_w, target_h), interpolation=cv2.INTER_LINEAR)
        vis_net = ycrcb[:, :, 0]
    elif policy == "native":
        pad_h = -height % patch_size
        pad_w = -width % patch_size
        ir_net = cv2.copyMakeBorder(ir8, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        vis_net = cv2.copyMakeBorder(ycrcb[:, :, 0], 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    else:
        raise InputError(f"unknown preprocessing policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
    context = PairContext((height, width), ycrcb, colour, ir_net.shape[:2])
    return normalise(ir_net), normalise(np.ascontiguousarray(vis_net)), context


def finish_pair(decoded: np.ndarray, context: PairContext, policy: Policy) -> np.ndarray:
    """(3, H, W) float32 network output -> fused OpenCV image at the input size (HxWx3 BGR, or HxW grey)."""
    height, width = context.original_size
    fused_grey = cv2.cvtColor(denormalise(decoded), cv2.COLOR_RGB2GRAY)
    if policy == "native":
        fused_grey = fused_grey[:height, :width]
    ycrcb = context.vis_ycrcb.copy()
    ycrcb[:, :, 0] = fused_grey
    bgr = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
    if policy == "official" and bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_CUBIC)
    return bgr if context.colour else np.ascontiguousarray(bgr[:, :, 0])


# -- the same processing on torch tensors (Fuser's device path) ----------------------------------------------------

# OpenCV's integer colour conversions: RGB2YCrCb_i / YCrCb2RGB_i in 14-bit fixed point, RGB2Gray (8 and 16 bits)
# in 15-bit, each with rounded shifts; int32 holds every intermediate (16-bit grey: at most 65535 * 2**15 + 2**14).
_SHIFT, _GREY_SHIFT = 14, 15
_R2Y, _G2Y, _B2Y = 4899, 9617, 1868
_GREY_R, _GREY_G, _GREY_B = 9798, 19235, 3735
_Y2CR, _Y2CB = 11682, 9241
_CR2R, _CR2G, _CB2G, _CB2B = 22987, -11698, -5636, 29049


def _descale(value: Any, shift: int = _SHIFT) -> Any:
    """OpenCV's CV_DESCALE on an int32 tensor: round, then shift (arithmetic for negative values, as in C)."""
    return (value + (1 << (shift - 1))) >> shift


def _grey(b: Any, g: Any, r: Any) -> Any:
    """OpenCV's BGR2GRAY of int32 channel planes."""
    return _descale(b * _GREY_B + g * _GREY_G + r * _GREY_R, _GREY_SHIFT)


def _to_uint8(value: Any) -> Any:
    return value.clamp(0, 255).to(dtype=_torch().uint8)


def _torch() -> Any:
    import torch

    return torch


def _stand_in(tensor: Any) -> np.ndarray:
    """A numpy array of the tensor's shape and (uint8/uint16) dtype that owns no pixels, for the shared checks."""
    dtype = np.uint16 if tensor.dtype == _torch().uint16 else np.uint8
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=tuple(tensor.shape), strides=(0,) * tensor.ndim)


def check_pair_tensor(ir: Any, vis: Any, name: str = "pair") -> None:
    """:func:`check_pair` for torch tensors (HxW or HxWxC, uint8 or uint16)."""
    torch = _torch()
    if ir.dtype not in (torch.uint8, torch.uint16) or vis.dtype not in (torch.uint8, torch.uint16):
        raise InputError(f"{name}: images must be uint8 or uint16, got {ir.dtype} and {vis.dtype}")
    check_pair(_stand_in(ir), _stand_in(vis), name)


def _grey_of_bgr(image: Any) -> Any:
    """HxWx3 (or 4) BGR(A) integer tensor -> HxW int32 grey, OpenCV's BGR2GRAY (8 and 16 bits alike)."""
    wide = image.to(dtype=_torch().int32)
    return _grey(wide[..., 0], wide[..., 1], wide[..., 2])


def ir_to_grey8_tensor(image: Any) -> Any:
    """:func:`ir_to_grey8` on a tensor: HxW uint8 on the tensor's device."""
    torch = _torch()
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    sixteen = image.dtype == torch.uint16
    grey = _grey_of_bgr(image) if image.ndim == 3 else image.to(dtype=torch.int32)
    if not sixteen:
        return _to_uint8(grey).contiguous()
    low, high = _percentiles(grey, IR16_PERCENTILES)
    scale = 255.0 / max(float(high - low), 1.0)
    return _to_uint8((grey.to(dtype=torch.float32) - low) * scale + 0.5).contiguous()


def _percentiles(values: Any, percents: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) method on a tensor: the order statistics on the device, the interpolation
    in float64 on the host exactly as numpy does it (a few scalars cross, not the frame)."""
    ordered = values.flatten().sort().values
    count = int(ordered.numel())
    found = []
    for percent in percents:
        q = percent / 100
        index = count * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's virtual index for alpha = beta = 1
        below = min(max(int(np.floor(index)), 0), count - 1)
        a, b = float(ordered[below]), float(ordered[min(below + 1, count - 1)])
        t = index - np.floor(index)
        found.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return found


def vis_to_bgr8_tensor(image: Any) -> Any:
    """:func:`vis_to_bgr8` on a tensor: HxW or HxWx3 uint8."""
    torch = _torch()
    if image.dtype == torch.uint16:
        image = (image.to(dtype=torch.float32) * (255.0 / 65535.0) + 0.5).to(dtype=torch.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return image.contiguous()


def bgr_to_ycrcb_tensor(bgr: Any) -> Any:
    """HxWx3 uint8 BGR -> HxWx3 uint8 YCrCb, OpenCV's COLOR_BGR2YCrCb bit for bit."""
    wide = bgr.to(dtype=_torch().int32)
    b, g, r = wide[..., 0], wide[..., 1], wide[..., 2]
    y = _descale(b * _B2Y + g * _G2Y + r * _R2Y)
    delta = 128 << _SHIFT
    cr = _descale((r - y) * _Y2CR + delta)
    cb = _descale((b - y) * _Y2CB + delta)
    return _to_uint8(_torch().stack([y, cr, cb], dim=-1))


def ycrcb_to_bgr_tensor(ycrcb: Any) -> Any:
    """HxWx3 uint8 YCrCb -> HxWx3 uint8 BGR, OpenCV's COLOR_YCrCb2BGR bit for bit."""
    wide = ycrcb.to(dtype=_torch().int32)
    y, cr, cb = wide[..., 0], wide[..., 1] - 128, wide[..., 2] - 128
    b = y + _descale(cb * _CB2B)
    g = y + _descale(cb * _CB2G + cr * _CR2G)
    r = y + _descale(cr * _CR2R)
    return _to_uint8(_torch().stack([b, g, r], dim=-1))


def _resize(image: Any, size: tuple[int, int], mode: str) -> Any:
    """HxW or HxWxC uint8 -> (H, W) = ``size`` uint8: half-pixel centres, edges replicated, no antialiasing (as
    OpenCV's INTER_LINEAR / INTER_CUBIC), rounded to the nearest integer."""
    import torch.nn.functional as functional

    planes = image[None, None] if image.ndim == 2 else image.permute(2, 0, 1)[None]
    resized = functional.interpolate(planes.float(), size=size, mode=mode, align_corners=False)
    out = _to_uint8(resized.round())[0]
    return out[0] if image.ndim == 2 else out.permute(1, 2, 0)


def normalise_tensor(grey: Any) -> Any:
    """:func:`normalise` on a tensor: HxW uint8 -> (3, H, W) float32 on its device."""
    torch = _torch()
    mean = torch.from_numpy(IMAGENET_MEAN).to(grey.device)[:, None, None]
    std = torch.from_numpy(IMAGENET_STD).to(grey.device)[:, None, None]
    return (grey.to(dtype=torch.float32) / 255.0 - mean) / std


def prepare_pair_tensor(
    ir: Any, vis: Any, policy: Policy, model_size: tuple[int, int], patch_size: int, name: str = "pair"
) -> tuple[Any, Any, PairContext]:
    """:func:`prepare_pair` on tensors of one device: the network inputs and context stay on it."""
    import torch.nn.functional as functional

    if ir.ndim == 3 and ir.shape[2] == 1:
        ir = ir[:, :, 0]
    if vis.ndim == 3 and vis.shape[2] == 1:
        vis = vis[:, :, 0]
    check_pair_tensor(ir, vis, name)
    ir8 = ir_to_grey8_tensor(ir)
    vis8 = vis_to_bgr8_tensor(vis)
    height, width = int(vis8.shape[0]), int(vis8.shape[1])
    colour = vis8.ndim == 3
    vis_bgr = vis8 if colour else vis8[:, :, None].expand(height, width, 3)
    ycrcb = bgr_to_ycrcb_tensor(vis_bgr)
    if policy == "official":
        if (height, width) != tuple(model_size):
            ir8 = _resize(ir8, model_size, "bilinear")
            ycrcb = _resize(ycrcb, model_size, "bilinear")
        ir_net, vis_net = ir8, ycrcb[:, :, 0]
    elif policy == "native":
        pads = (0, -width % patch_size, 0, -height % patch_size)
        ir_net, vis_net = (
            functional.pad(plane[None, None].float(), pads, mode="replicate")[0, 0] for plane in (ir8, ycrcb[:, :, 0])
        )
    else:
        raise InputError(f"unknown preprocessing policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
    context = PairContext((height, width), ycrcb, colour, (int(ir_net.shape[0]), int(ir_net.shape[1])))
    return normalise_tensor(ir_net), normalise_tensor(vis_net), context


def finish_pair_tensor(decoded: Any, context: PairContext, policy: Policy) -> Any:
    """:func:`finish_pair` on a tensor: (3, H, W) float32 -> HxWx3 BGR (or HxW grey) uint8 on its device."""
    torch = _torch()
    mean = torch.from_numpy(IMAGENET_MEAN).to(decoded.device)
    std = torch.from_numpy(IMAGENET_STD).to(decoded.device)
    rgb = ((decoded.permute(1, 2, 0) * std + mean) * 255.0).clamp(0, 255).to(dtype=torch.uint8)
    wide = rgb.to(dtype=torch.int32)
    fused_grey = _to_uint8(_grey(wide[..., 2], wide[..., 1], wide[..., 0]))  # RGB2GRAY
    height, width = context.original_size
    if policy == "native":
        fused_grey = fused_grey[:height, :width]
    ycrcb = torch.cat([fused_grey[:, :, None], context.vis_ycrcb[:, :, 1:]], dim=2)
    bgr = ycrcb_to_bgr_tensor(ycrcb)
    if policy == "official" and tuple(bgr.shape[:2]) != (height, width):
        bgr = _resize(bgr, (height, width), "bicubic")
    return bgr if context.colour else bgr[:, :, 0].contiguous()
