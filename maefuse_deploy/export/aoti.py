"""AOTInductor packages (.pt2) for the C++ runtime in engines/: the uint8-io graph compiled ahead of time.

The package holds the network with the processing inside it (graph.InGraphProcessing) at one camera size, so the
C++ side only lays out memory. Layout at the package boundary (batch 1, static shapes):
* inputs: ir (1, H, W) uint8 grey; vis (1, H, W, 3) uint8 BGR;
* output: fused (1, H, W, 3) uint8 BGR, the VIS colour restored.

The camera size must be a multiple of the patch size: the graph then runs on the frame's own token grid (no resize),
which is the ``native`` policy the built-in model was trained for, and matches the Python Fuser within a grey level.
Metadata strings in the package (read by the C++ loader to refuse foreign packages) are listed in ``METADATA_KEYS``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import InputError
from ..model.maefuse import MaeFuse
from .graph import FloatGraph, InGraphProcessing, exportable

PACKAGE_FORMAT = "maefuse-aoti-uint8-v1"
METADATA_KEYS = ("maefuse.format", "maefuse.model", "maefuse.width", "maefuse.height", "maefuse.checkpoint_sha256")


@dataclass
class AotiReport:
    path: Path
    size_bytes: int
    seconds: float
    camera_size: tuple[int, int]  # (H, W)


def build_aoti_module(model: MaeFuse, camera_size: tuple[int, int]) -> torch.nn.Module:
    """The exported module: uint8 frames at ``camera_size`` (H, W) in, uint8 BGR out (layouts in the module doc)."""
    height, width = camera_size
    patch = model.config.patch_size
    if height % patch or width % patch or height <= 0 or width <= 0:
        raise InputError(
            f"camera size {width}x{height} is not a multiple of the patch size {patch}",
            fix=f"use e.g. {max(width // patch, 1) * patch}x{max(height // patch, 1) * patch} (crop or pad the "
            "frames to it)",
        )
    network = FloatGraph(exportable(model, "fp32"), "fp32")
    return InGraphProcessing(network, camera_size, camera_size).eval()


def check_package_name(out: str | os.PathLike[str]) -> None:
    """The C++ loader takes ``.pt2`` packages only: refuse another name before anything is compiled."""
    if Path(out).suffix != ".pt2":
        raise InputError(f"AOTInductor package name {out} must end in .pt2", fix="e.g. --aoti model.pt2")


def export_aoti(
    model: MaeFuse,
    out: str | os.PathLike[str],
    camera_size: tuple[int, int] | None = None,
    checkpoint_sha256: str = "",
) -> AotiReport:
    """Trace with torch.export and compile with AOTInductor for this CPU; write ``out`` (.pt2) atomically.
    ``camera_size`` (H, W): the frames the package takes (default: the model's own size)."""
    out = Path(out)
    check_package_name(out)
    camera_size = camera_size or model.config.img_size
    module = build_aoti_module(model, camera_size)
    height, width = camera_size
    example = (torch.zeros(1, height, width, dtype=torch.uint8), torch.zeros(1, height, width, 3, dtype=torch.uint8))
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(module, example, strict=False)
    metadata = {
        "maefuse.format": PACKAGE_FORMAT,
        "maefuse.model": model.config.name,
        "maefuse.width": str(width),
        "maefuse.height": str(height),
        "maefuse.checkpoint_sha256": checkpoint_sha256,
    }
    with atomic_path(out) as tmp:
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(tmp), inductor_configs={"aot_inductor.metadata": metadata}
        )
    return AotiReport(out, out.stat().st_size, time.perf_counter() - start, camera_size)
