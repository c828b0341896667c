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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


def normalise(grey: np.ndarray) -> np.ndarray:
    """HxW uint8 grey -> (3, H, W) float32: the grey in each channel, /255, ImageNet mean/std per channel."""
    scaled = grey.astype(np.float32) / np.float32(255.0)
    return (scaled[None] - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def denormalise(decoded: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 network output -> HxWx3 uint8 (RGB order): x*std + mean, *255, clip, truncate."""
    rgb = decoded.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * np.float32(255.0), 0, 255).astype(np.uint8)


@dataclass
class PairContext:
    """What post-processing needs to turn a network output back into an image of the input's size."""

    original_size: tuple[int, int]  # (H, W) of the input pair
    vis_ycrcb: np.ndarray  # HxWx3 uint8 YCrCb of the VIS at network size (official) or input size (native)
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
