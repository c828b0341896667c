"""Verify an exported graph with onnxruntime against the PyTorch model (Polygraphy-style: every run compared
with the reference, error statistics reported, tolerances enforced)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..checks import check_finite
from ..compare import psnr
from ..errors import InputError, VerificationError
from ..io import find_pairs, read_image
from ..model.maefuse import MaeFuse
from ..processing import prepare_pair
from ..runtime.files import SAMPLES_DIR
from ..runtime.fuser import Fuser
from ..runtime.onnxruntime_backend import OnnxRuntimeBackend
from ..runtime.torch_backend import TorchBackend

if TYPE_CHECKING:
    from .onnx_export import ExportReport, ExportSpec

FP32_MAX_ABS = 1e-4  # on the decoder output (normalised space)
MIN_PSNR_DB = 40.0  # fused images of FP16 / uint8 graphs against the FP32 torch model


def sample_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """The shipped real IR/VIS pairs (OpenCV layout, uint8)."""
    return [(read_image(p.ir, "IR"), read_image(p.vis, "VIS")) for p in find_pairs(SAMPLES_DIR / "ir",
                                                                                   SAMPLES_DIR / "vi")]


def network_inputs(pairs: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int], patch: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Real pairs through the official preprocessing: (B, 3, H, W) float32 normalised IR and VIS."""
    prepared = [prepare_pair(ir, vis, "official", size, patch) for ir, vis in pairs]
    return torch.from_numpy(np.stack([p[0] for p in prepared])), torch.from_numpy(np.stack([p[1] for p in prepared]))


def _fill(items: list, count: int) -> list:
    return [items[i % len(items)] for i in range(count)]


def verify_graph(path: Path, model: MaeFuse, spec: ExportSpec, report: ExportReport,
                 pairs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Run ``path`` on real pairs and random inputs; append findings to ``report``; raise when over tolerance."""
    pairs = pairs or sample_pairs()
    try:
        graph = OnnxRuntimeBackend(path)
    except InputError as exc:
        report.not_verified.append(f"onnxruntime cannot create a CPU session here ({exc}); graph checks only")
        return
    reference = Fuser(TorchBackend(model.float()), model_size=(spec.height, spec.width), batch_size=8)
    batches = sorted({spec.batch[0], spec.batch[2]})
    try:
        if spec.io == "uint8":
            _verify_uint8(graph, reference, spec, report, pairs, batches)
        else:
            _verify_float(graph, reference, model, spec, report, pairs, batches)
    except VerificationError:
        raise
    except Exception as exc:  # onnxruntime kernels missing for a type (FP16 on some CPUs) surface at run time
        if spec.precision == "fp16":
            first = str(exc).strip().splitlines()[0][:200]
            report.not_verified.append(f"onnxruntime could not run the FP16 graph on this CPU: {first}")
            return
        raise
    finally:
        graph.close()


def _verify_float(graph, reference, model, spec, report, pairs, batches) -> None:
    ir, vis = network_inputs(pairs, (spec.height, spec.width), model.config.patch_size)
    generator = torch.Generator().manual_seed(7)
    cases = [("real pairs", ir, vis),
             ("random inputs", torch.randn(ir.shape, generator=generator), torch.randn(ir.shape, generator=generator))]
    for label, ir_all, vis_all in cases:
        for batch in batches:
            index = _fill(list(range(ir_all.shape[0])), batch)
            with torch.no_grad():
                expected = model(ir_all[index], vis_all[index]).numpy()
            got = graph.run(ir_all[index].numpy(), vis_all[index].numpy())
            check_finite(got, f"the graph's output ({label}, batch {batch})")
            error = np.abs(got - expected)
            line = f"{label}, batch {batch}: decoder output max abs {error.max():.2e}, mean abs {error.mean():.2e}"
            if spec.precision == "fp32" and error.max() > FP32_MAX_ABS:
                raise VerificationError(f"{line} exceeds {FP32_MAX_ABS:g}", fix="report this as an exporter bug")
            report.verification.append(line)
    fused_graph = Fuser(graph, batch_size=graph.max_batch or 8).fuse_batch(pairs)
    fused_torch = reference.fuse_batch(pairs)
    _compare_images(fused_graph, fused_torch, spec, report, "fused real pairs")


def _verify_uint8(graph, reference, spec, report, pairs, batches) -> None:
    height, width = spec.camera_size or (spec.height, spec.width)
    frames = [(cv2.resize(ir, (width, height), interpolation=cv2.INTER_AREA),
               cv2.resize(vis, (width, height), interpolation=cv2.INTER_AREA)) for ir, vis in pairs]
    expected = reference.fuse_batch(frames)
    for batch in batches:
        chosen = _fill(list(range(len(frames))), batch)
        got = graph.run(np.stack([frames[i][0] for i in chosen]), np.stack([frames[i][1] for i in chosen]))
        _compare_images(list(got), [expected[i] for i in chosen], spec, report,
                        f"in-graph processing vs the OpenCV path, batch {batch}")


def _compare_images(got: list[np.ndarray], expected: list[np.ndarray], spec, report, label: str) -> None:
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(got, expected, strict=True)]
    worst_psnr = min(psnr(a, b) for a, b in zip(got, expected, strict=True))
    line = (f"{label}: PSNR >= {worst_psnr:.2f} dB, max |diff| {max(int(d.max()) for d in diffs)} grey levels, "
            f"mean {float(np.mean([d.mean() for d in diffs])):.3f}")
    bound = MIN_PSNR_DB if (spec.precision == "fp16" or spec.io == "uint8") else 45.0
    if worst_psnr < bound:
        raise VerificationError(f"{line} is under {bound:g} dB", fix="export fp32, or report the model's peak "
                                "activation with the checkpoint")
    report.verification.append(line)
