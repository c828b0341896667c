"""Trace a model to an ONNX graph per an ExportSpec, and the checks that need only the model or the graph.

Layouts of the traced modules: export/graph.py. Nothing here writes a file: the orchestrator (onnx_export.py)
saves, verifies and commits.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import onnx
import torch

from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, BatchProfile, GraphInfo
from ..errors import VerificationError
from ..model.maefuse import MaeFuse
from ..version import __version__
from .graph import FloatGraph, InGraphProcessing, exportable
from .spec import ExportSpec

FOLD_TOLERANCE = 1e-4


def graph_info(model: MaeFuse, spec: ExportSpec, checkpoint_sha256: str = "") -> GraphInfo:
    """The metadata every runtime reads from the graph (docs/architecture.md §3)."""
    camera = spec.frame_size
    return GraphInfo(
        config=model.config.to_dict(), attention=model.config.attention, io=spec.io, precision=spec.precision,
        height=spec.height, width=spec.width, camera_height=camera[0], camera_width=camera[1], policy="official",
        checkpoint_sha256=checkpoint_sha256, toolkit_version=__version__, batch=BatchProfile(*spec.batch),
    )


def build_graph_module(model: MaeFuse, spec: ExportSpec) -> torch.nn.Module:
    network = FloatGraph(exportable(model, spec.precision), spec.precision)
    if spec.io == "uint8":
        return InGraphProcessing(network, spec.frame_size, spec.model_size)
    return network


def example_inputs(spec: ExportSpec, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracing inputs in the graph's input layout (export/graph.py); values do not matter to the trace."""
    generator = torch.Generator().manual_seed(seed)
    if spec.io == "uint8":
        height, width = spec.frame_size
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


def trace(model: MaeFuse, spec: ExportSpec, info: GraphInfo) -> onnx.ModelProto:
    """The ONNX graph of ``model`` per ``spec`` (dynamo exporter), with ``info`` in its metadata."""
    module = build_graph_module(model, spec)
    trace_batch = spec.batch[1] if not spec.dynamic else max(spec.batch[1], 2)
    args = example_inputs(spec, trace_batch)
    dynamic_shapes = None
    if spec.dynamic:
        batch = torch.export.Dim("batch", min=spec.batch[0], max=spec.batch[2])
        dynamic_shapes = ({0: batch}, {0: batch})
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        # The exporter logs every torchvision op it skips; none are used here.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(module, args, input_names=[INPUT_IR, INPUT_VIS], output_names=[OUTPUT_FUSED],
                                    opset_version=spec.opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                    optimize=True, verbose=False)
    if program is None:  # typed Optional for the legacy exporter; the dynamo one always returns a program
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    proto = fold_weight_expressions(program.model_proto)
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "maefuse-deploy"
    proto.producer_version = __version__
    return proto


# Larger than any weight of any config (maefuse-l640's largest is 4096 x 1024 elements, 16 MB in float32).
WEIGHT_FOLD_LIMIT = 1 << 31


def fold_weight_expressions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with what it computes from weights alone folded into initializers.

    Linear block attention slices the fused qkv weight into Q, K and V rows and transposes the output projection
    (model/vit.py: LinearAttention). The exporter's own optimizer folds only tensors of at most 8192 elements, so
    these stayed Slice/Transpose nodes over an initializer, and every consumer that recognises a weight by its being
    an initializer (NNCF, onnxruntime's int8 quantizer) would take those MatMuls for products of two activations and
    leave them float. The fold is exact: it runs the same ops on the same constants once, at export (1.3 s of
    maefuse-l640's 55 s export, where it finds nothing to fold: softmax graphs come out node for node the same).
    """
    from onnxscript import optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimizer.optimize(proto, input_size_limit=WEIGHT_FOLD_LIMIT, output_size_limit=WEIGHT_FOLD_LIMIT)


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    """Operator type -> node count, sorted by type."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


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


def activation_peak(model: MaeFuse, ir: torch.Tensor, vis: torch.Tensor) -> tuple[float, str]:
    """Largest |activation| of any layer on these inputs ((B, 3, H, W) float32 normalised), and where: the FP16
    overflow margin (65504)."""
    peak_value, peak_name = 0.0, ""

    def hook(name: str) -> Callable[[torch.nn.Module, Any, Any], None]:
        def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal peak_value, peak_name
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                value = output.detach().abs().max().item()
                if value > peak_value:
                    peak_value, peak_name = value, name
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and not list(m.children())]
    try:
        with torch.no_grad():
            model.float().eval()(ir, vis)
    finally:
        for handle in handles:
            handle.remove()
    return peak_value, peak_name
