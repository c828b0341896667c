"""Verify an exported graph: run it and the PyTorch reference on the same real pairs (and random inputs), compare
each output with one function that carries the tolerances, and return what was found.

Both sides see the same frames, at the size the graph is for (:func:`graph_frames`: the real pairs resized once to
the graph's input size), and the reference runs the graph's processing (the official policy at the graph's grid).
Comparing a fixed-size graph with a native-policy model on frames of another size would measure the resize, not the
graph.

The comparator shape (as Polygraphy's): a data loader of inputs (export/../sample_pairs.py), runners (the graph
through onnxruntime, the model through torch), one ``compare`` with explicit tolerances. Nothing here writes a
file or touches the caller's report; a result over tolerance raises VerificationError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..backends import BackendBase, open_backend
from ..checks import check_finite
from ..compare import psnr
from ..errors import InputError, VerificationError
from ..model.maefuse import MaeFuse
from ..runtime.fuser import Fuser
from ..sample_pairs import as_arrays, batches, load_pairs, network_inputs
from .spec import ExportSpec

FP32_MAX_ABS = 1e-4  # on the decoder output (normalised space)
FP32_MIN_PSNR_DB = 45.0  # fused images of an FP32 float-io graph against the FP32 torch model
MIN_PSNR_DB = 40.0  # fused images of FP16 / uint8 graphs against the FP32 torch model


# What a result over tolerance means, by what could have caused it: FP16 rounding, or a graph that is not the model.
FP16_FIX = "export fp32 (FP16 rounding in this model exceeds the tolerance), or report the model's peak activation " \
    "with the checkpoint"
EXPORTER_FIX = "an FP32 graph must match the model on the same frames: report this as an exporter bug with the " \
    "checkpoint and the export command"


@dataclass(frozen=True)
class Tolerances:
    """How close a graph's outputs must be to the reference's, and the fix a result over them names."""

    decoder_max_abs: float | None  # float32 decoder outputs (normalised space); None: reported, not enforced
    min_psnr_db: float  # fused uint8 images
    fix: str = EXPORTER_FIX

    @classmethod
    def for_spec(cls, spec: ExportSpec) -> Tolerances:
        low_precision = spec.precision == "fp16" or spec.io == "uint8"
        return cls(decoder_max_abs=FP32_MAX_ABS if spec.precision == "fp32" else None,
                   min_psnr_db=MIN_PSNR_DB if low_precision else FP32_MIN_PSNR_DB,
                   fix=FP16_FIX if spec.precision == "fp16" else EXPORTER_FIX)


@dataclass
class Verification:
    """What the verification compared (one line of error statistics each) and what it could not run here."""

    compared: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)


def compare(label: str, got: Sequence[np.ndarray], expected: Sequence[np.ndarray], tolerances: Tolerances) -> str:
    """One line of error statistics for ``got`` against ``expected``; VerificationError when over tolerance.

    Float arrays are decoder outputs ((B, 3, H, W) float32, normalised space): max and mean abs error against
    ``decoder_max_abs``. uint8 arrays are fused images (OpenCV layout): worst PSNR against ``min_psnr_db``, with
    the max and mean grey-level difference.
    """
    if all(np.issubdtype(np.asarray(e).dtype, np.floating) for e in expected):
        error = np.abs(np.asarray(got) - np.asarray(expected))
        line = f"{label}: decoder output max abs {error.max():.2e}, mean abs {error.mean():.2e}"
        if tolerances.decoder_max_abs is not None and error.max() > tolerances.decoder_max_abs:
            raise VerificationError(f"{line} exceeds {tolerances.decoder_max_abs:g}", fix=tolerances.fix)
        return line
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(got, expected, strict=True)]
    worst_psnr = min(psnr(a, b) for a, b in zip(got, expected, strict=True))
    line = (f"{label}: PSNR >= {worst_psnr:.2f} dB, max |diff| {max(int(d.max()) for d in diffs)} grey levels, "
            f"mean {float(np.mean([d.mean() for d in diffs])):.3f}")
    if worst_psnr < tolerances.min_psnr_db:
        raise VerificationError(f"{line} is under {tolerances.min_psnr_db:g} dB", fix=tolerances.fix)
    return line


def graph_frames(pairs: Sequence[tuple[np.ndarray, np.ndarray]], spec: ExportSpec
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` at the size the graph takes (``spec.frame_size``: the camera size of a uint8 graph, the grid of a
    float one), resized once (INTER_AREA): the frames both the graph and the reference are given."""
    height, width = spec.frame_size
    frames = []
    for ir, vis in pairs:
        if ir.shape[:2] != (height, width) or vis.shape[:2] != (height, width):
            ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_AREA)
            vis = cv2.resize(vis, (width, height), interpolation=cv2.INTER_AREA)
        frames.append((ir, vis))
    return frames


def verify_graph(path: Path, model: MaeFuse, spec: ExportSpec,
                 pairs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Verification:
    """Run the graph at ``path`` and ``model`` on real pairs (default: the shipped samples) and random inputs,
    at the graph's smallest and largest batch; every comparison within :class:`Tolerances` or VerificationError."""
    pairs = pairs or as_arrays(load_pairs())
    result = Verification()
    try:
        graph = open_backend("onnxruntime", path, device="cpu")
    except InputError as exc:
        result.not_verified.append(f"onnxruntime cannot create a CPU session here ({exc}); graph checks only")
        return result
    # The graph's processing whatever the weights were trained for: the official policy at the graph's grid (on
    # frames already at that grid, a native-policy model computes the same).
    reference = Fuser(open_backend("torch", model, device="cpu"), policy="official", model_size=spec.model_size,
                      batch_size=8)
    sizes = sorted({spec.batch[0], spec.batch[2]})
    tolerances = Tolerances.for_spec(spec)
    frames = graph_frames(pairs, spec)
    try:
        if spec.io == "uint8":
            result.compared += _verify_uint8(graph, reference, spec, frames, sizes, tolerances)
        else:
            result.compared += _verify_float(graph, reference, model, spec, frames, sizes, tolerances)
    except VerificationError:
        raise
    except Exception as exc:  # onnxruntime kernels missing for a type (FP16 on some CPUs) surface at run time
        if spec.precision == "fp16":
            first = str(exc).strip().splitlines()[0][:200]
            result.not_verified.append(f"onnxruntime could not run the FP16 graph on this CPU: {first}")
            return result
        raise
    finally:
        graph.close()
    return result


def _verify_float(graph: BackendBase, reference: Fuser, model: MaeFuse, spec: ExportSpec,
                  frames: list[tuple[np.ndarray, np.ndarray]], sizes: list[int], tolerances: Tolerances) -> list[str]:
    ir, vis = network_inputs(frames, spec.model_size, model.config.patch_size)
    generator = torch.Generator().manual_seed(7)
    cases = [("real pairs", ir, vis),
             ("random inputs", torch.randn(ir.shape, generator=generator), torch.randn(ir.shape, generator=generator))]
    lines = []
    for label, ir_all, vis_all in cases:
        for batch, index in batches(list(range(ir_all.shape[0])), sizes):
            with torch.no_grad():
                expected = model(ir_all[index], vis_all[index]).numpy()
            got = graph.run(ir_all[index].numpy(), vis_all[index].numpy())
            check_finite(got, f"the graph's output ({label}, batch {batch})")
            lines.append(compare(f"{label}, batch {batch}", got, expected, tolerances))
    fused_graph = Fuser(graph, batch_size=graph.max_batch or 8).fuse_batch(frames)
    lines.append(compare(f"fused real pairs at {_size(spec)}", fused_graph, reference.fuse_batch(frames), tolerances))
    return lines


def _size(spec: ExportSpec) -> str:
    """The graph's input frame size as W x H, the way the CLI spells sizes."""
    return f"{spec.frame_size[1]}x{spec.frame_size[0]}"


def _verify_uint8(graph: BackendBase, reference: Fuser, spec: ExportSpec,
                  frames: list[tuple[np.ndarray, np.ndarray]], sizes: list[int], tolerances: Tolerances) -> list[str]:
    expected = reference.fuse_batch(frames)
    lines = []
    for batch in sizes:  # every frame, in batches of that size (the last one padded by the backend)
        got = Fuser(graph, batch_size=batch).fuse_batch(frames)
        lines.append(compare(f"in-graph processing vs the OpenCV path at {_size(spec)}, batch {batch}", got,
                             expected, tolerances))
    return lines
