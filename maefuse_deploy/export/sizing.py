"""The fixed size of an exported graph, and why a native-policy model must be told it.

A graph has one input size; a frame of any other size is resized to it and back by the runtime. A model
trained for the official policy expects exactly that (its own model size). A model trained for the native policy
(each frame at its own size, e.g. the built-in maefuse-rt-linear) loses detail and accuracy when resized, so its graph
must be exported at the camera's frame size: that size is required, given directly or read from a sample frame.
"""

from __future__ import annotations

import os

from ..errors import InputError
from ..io import read_image


def frame_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(H, W) of a sample camera frame."""
    height, width = read_image(path, "sample frame").shape[:2]
    return height, width


def grid_for(size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """A frame size (H, W) rounded to the nearest multiple of ``patch_size`` (at least one patch): the graph size
    that needs no resize, or the smallest one, for frames of that size."""
    height, width = (max(patch_size, round(v / patch_size) * patch_size) for v in size)
    return height, width


def check_graph_size(model_policy: str, model_name: str, size_given: bool) -> None:
    """Refuse to export a native-policy model at a default size: the graph would silently resize every frame."""
    if model_policy == "native" and not size_given:
        raise InputError(
            f"{model_name} was trained for the native policy (each frame at its own size), but a graph has one fixed "
            "size and resizes every other frame to it",
            fix="pass the camera's frame size: --height H --width W (--camera-size WxH with --io uint8), or "
            "--size-from FRAME.png",
        )
