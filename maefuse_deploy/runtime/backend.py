"""The interface every inference backend (torch, onnxruntime, tensorrt) implements.

A backend runs the network only; :class:`maefuse_deploy.Fuser` owns the one pre/post-processing path. Two io modes:

``float``  ``run(ir, vis)`` takes two float32 arrays (B, 3, H, W), NCHW, ImageNet-normalised (processing.py), with
           (H, W) = ``input_size`` or, where ``input_size`` is None, any multiple of ``patch_size``; it returns the
           unpatchified decoder output (B, 3, H, W) float32 in the same normalised space.
``uint8``  pre/post-processing are inside the graph: ``run(ir, vis)`` takes ir (B, H, W) uint8 grey and vis
           (B, H, W, 3) uint8 BGR at the camera size ``input_size`` and returns the fused (B, H, W, 3) uint8 BGR.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np

IoMode = Literal["float", "uint8"]


@runtime_checkable
class Backend(Protocol):
    name: str
    io: IoMode
    patch_size: int
    input_size: tuple[int, int] | None  # (H, W) the graph was built for; None: any multiple of patch_size
    max_batch: int | None  # largest batch one run() accepts; None: unbounded

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...
