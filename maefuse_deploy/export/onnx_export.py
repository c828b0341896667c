"""Export a MaeFuse model to a verified ONNX graph (docs/architecture.md §6; graph contract: contract.py)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import __version__
from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, GraphInfo
from ..errors import InputError, VerificationError
from ..model.maefuse import MaeFuse
from .graph import FloatGraph, InGraphProcessing, exportable

OPSETS = (18, 19, 20)  # torch's dynamo exporter emits 18 and up; TensorRT 10.0 parses up to 20
PROTOBUF_LIMIT = 2**31 - 2**24  # below 2 GiB with room for the graph itself
FOLD_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportSpec:
    height: int = 640
    width: int = 640
    batch: tuple[int, int, int] = (1, 1, 1)  # (min, opt, max); min == max is a static batch
    precision: str = "fp32"  # fp32 | fp16
    io: str = "float"  # float | uint8
    camera_size: tuple[int, int] | None = None  # (H, W) frames of a uint8 graph; default: (height, width)
    opset: int = 18

    @property
    def dynamic(self) -> bool:
        return self.batch[0] != self.batch[2]


@dataclass
class ExportReport:
    path: Path
    seconds: float = 0.0
    size_bytes: int = 0
    external_data: bool = False
    op_counts: dict[str, int] = field(default_factory=dict)
    fold_max_error: float | None = None
    max_activation: tuple[float, str] | None = None
    checks: list[str] = field(default_factory=list)
    verification: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"4"`` -> (4, 4, 4); ``"1:4:8"`` -> (1, 4, 8)."""
    try:
        values = [int(part) for part in text.split(":")]
    except ValueError:
        raise InputError(
            f"batch {text!r} is not N or MIN:OPT:MAX", fix="e.g. --batch 1 or --dynamic-batch 1:4:8"
        ) from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise InputError(f"batch {text!r} must be N or MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
    return values[0], values[1], values[2]


def validate(model: MaeFuse, spec: ExportSpec) -> None:
    patch = model.config.patch_size
    if spec.height % patch or spec.width % patch or spec.height <= 0 or spec.width <= 0:
        raise InputError(f"resolution {spec.width}x{spec.height} is not a multiple of the patch size {patch}",
                         fix=f"pick a size divisible by {patch}, e.g. {spec.width // patch * patch or patch}x"
                             f"{spec.height // patch * patch or patch}")
    if spec.opset not in OPSETS:
        raise InputError(f"opset {spec.opset} is not supported", fix=f"use one of {', '.join(map(str, OPSETS))}")
    if spec.precision not in ("fp32", "fp16") or spec.io not in ("float", "uint8"):
        raise InputError(f"unknown precision/io {spec.precision}/{spec.io}", fix="fp32|fp16 and float|uint8")


def build_graph_module(model: MaeFuse, spec: ExportSpec) -> torch.nn.Module:
    network = FloatGraph(exportable(model, spec.precision), spec.precision)
    if spec.io == "uint8":
        return InGraphProcessing(network, spec.camera_size or (spec.height, spec.width), (spec.height, spec.width))
    return network


def example_inputs(spec: ExportSpec, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if spec.io == "uint8":
        height, width = spec.camera_size or (spec.height, spec.width)
        ir = torch.randint(0, 256, (batch, height, width), generator=generator, dtype=torch.uint8)
        vis = torch.randint(0, 256, (batch, height, width, 3), generator=generator, dtype=torch.uint8)
        return ir, vis
    shape = (batch, 3, spec.height, spec.width)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def prove_folding(model: MaeFuse, spec: ExportSpec) -> float:
    """The folded official fusion (one linear map) must equal the two single-key attention calls.

    Compared on the fusion layer alone, at the graph's token grid: the rest of the network is unchanged by the
    folding, and the verification step compares the whole graph with the model anyway. This avoids copying and
    running the whole encoder twice more (seconds per pass for ViT-L on a CPU).
    """
    fusion = copy.deepcopy(model.fusion).float().eval()
    patch = model.config.patch_size
    grid = (spec.height // patch, spec.width // patch)
    generator = torch.Generator().manual_seed(1)
    shape = (2, grid[0] * grid[1], model.config.embed_dim)
    ir_tokens, vis_tokens = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    with torch.no_grad():
        fusion.folded = None
        unfolded = fusion(ir_tokens, vis_tokens, grid)
        fusion.folded = fusion.fold()
        error = (fusion(ir_tokens, vis_tokens, grid) - unfolded).abs().max().item()
    if error > FOLD_TOLERANCE:
        raise VerificationError(f"the folded official fusion differs from the model by {error:.2e} (> "
                                f"{FOLD_TOLERANCE:g})", fix="report this as a bug with the checkpoint")
    return error


def activation_peak(model: MaeFuse, ir: torch.Tensor, vis: torch.Tensor) -> tuple[float, str]:
    """Largest |activation| of any layer on these inputs, and where: the FP16 overflow margin (65504)."""
    peak = [0.0, ""]

    def hook(name: str):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                value = output.detach().abs().max().item()
                if value > peak[0]:
                    peak[0], peak[1] = value, name
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and not list(m.children())]
    try:
        with torch.no_grad():
            model.float().eval()(ir, vis)
    finally:
        for handle in handles:
            handle.remove()
    return peak[0], peak[1]


def graph_checks(proto: onnx.ModelProto, spec: ExportSpec) -> list[str]:
    """Hygiene the exporter guarantees: opset, one LayerNormalization per LayerNorm, FP32 norms in FP16 graphs."""
    ops = [n.op_type for n in proto.graph.node]
    problems = []
    if "LayerNormalization" not in ops:
        problems.append("no LayerNormalization node (LayerNorm was decomposed)")
    if "ReduceMean" in ops and "Pow" in ops:
        problems.append("a decomposed LayerNorm pattern (ReduceMean + Pow) is present")
    if spec.precision == "fp16":
        inferred = onnx.shape_inference.infer_shapes(proto)
        types = {v.name: v.type.tensor_type.elem_type for v in
                 list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({i.name: i.data_type for i in proto.graph.initializer})
        for node in proto.graph.node:
            if node.op_type in ("LayerNormalization", "Softmax"):
                elem = types.get(node.input[0])
                if elem != onnx.TensorProto.FLOAT:
                    dtype = onnx.TensorProto.DataType.Name(elem or 0)
                    problems.append(f"{node.op_type} {node.name} computes in {dtype}")
    if problems:
        raise VerificationError(f"exported graph breaks its contract: {'; '.join(problems)}",
                                fix="report this as a bug with the torch version")
    count = ops.count("LayerNormalization")
    return [f"opset {spec.opset}", f"{count} LayerNormalization nodes",
            "LayerNormalization and Softmax in FP32" if spec.precision == "fp16" else "FP32 throughout"]


def export_onnx(
    model: MaeFuse,
    out_path: str | os.PathLike[str],
    spec: ExportSpec,
    *,
    checkpoint_sha256: str = "",
    verify: bool = True,
    verify_pairs: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> ExportReport:
    """Trace ``model`` per ``spec``, check it, verify it with onnxruntime and write it atomically.

    Nothing is left at ``out_path`` (or its external-data file) unless every check and verification passed.
    """
    validate(model, spec)
    out_path = Path(out_path)
    report = ExportReport(out_path)
    start = time.perf_counter()
    if model.config.attention == "official":
        report.fold_max_error = prove_folding(model, spec)
    module = build_graph_module(model, spec)
    trace_batch = spec.batch[1] if not spec.dynamic else max(spec.batch[1], 2)
    args = example_inputs(spec, trace_batch)
    dynamic_shapes = None
    if spec.dynamic:
        batch = torch.export.Dim("batch", min=spec.batch[0], max=spec.batch[2])
        dynamic_shapes = ({0: batch}, {0: batch})
    camera = spec.camera_size or (spec.height, spec.width)
    info = GraphInfo(
        config=model.config.to_dict(), attention=model.config.attention, io=spec.io, precision=spec.precision,
        height=spec.height, width=spec.width, camera_height=camera[0], camera_width=camera[1], policy="official",
        checkpoint_sha256=checkpoint_sha256, toolkit_version=__version__, batch=":".join(map(str, spec.batch)),
    )
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    except OSError as exc:
        raise InputError(f"cannot write {out_path}: {exc.strerror or exc}", fix="choose a writable folder") from exc
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
            warnings.simplefilter("ignore")
            # The exporter logs every torchvision op it skips; none are used here.
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(module, args, input_names=[INPUT_IR, INPUT_VIS], output_names=[OUTPUT_FUSED],
                                        opset_version=spec.opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                        optimize=True, verbose=False)
        proto = program.model_proto
        for key, value in info.to_metadata().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "maefuse-deploy"
        proto.producer_version = __version__
        report.checks = graph_checks(proto, spec)
        report.op_counts = dict(sorted({op: sum(n.op_type == op for n in proto.graph.node)
                                        for op in {n.op_type for n in proto.graph.node}}.items()))
        staged = workdir / out_path.name
        report.external_data = proto.ByteSize() > PROTOBUF_LIMIT
        if report.external_data:
            onnx.save(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=out_path.name + ".data")
        else:
            onnx.save(proto, str(staged))
        onnx.checker.check_model(str(staged), full_check=True)
        report.checks.append("onnx.checker full check passed")
        if spec.precision == "fp16":
            from .verify import network_inputs, sample_pairs

            real = network_inputs(verify_pairs or sample_pairs(), (spec.height, spec.width), model.config.patch_size)
            report.max_activation = activation_peak(model, *real)
        if verify:
            from .verify import verify_graph

            verify_graph(staged, model, spec, report, verify_pairs)
        else:
            report.not_verified.append("verification skipped (--no-verify)")
        for produced in workdir.iterdir():
            os.replace(produced, out_path.parent / produced.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    report.size_bytes = out_path.stat().st_size + sum(
        p.stat().st_size for p in [out_path.parent / (out_path.name + ".data")] if p.exists())
    return report
