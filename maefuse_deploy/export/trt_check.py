"""Static check of an ONNX graph against what TensorRT's ONNX parser accepts (10.x and 11.x).

The support list follows the ONNX-TensorRT operator matrix of TensorRT 10.0 (opsets 9-20; UINT8, FLOAT16 and
BFLOAT16 tensors supported, DOUBLE only by down-casting). It covers the operators a ViT/MaeFuse graph can contain
and common neighbours; an operator outside it is reported as a blocker, not silently passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..contract import load_onnx

SUPPORTED_OPS = frozenset(
    (
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
        "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape",
        "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout",
        "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
        "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
        "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "If", "InstanceNormalization", "IsInf",
        "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN",
        "LSTM", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "NonZero", "Not", "OneHot", "Or",
        "Pad", "Pow", "PRelu", "QuantizeLinear", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
        "Relu", "Reshape", "Resize", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
        "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
        "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Where", "Xor",
    )
)
OPSET_RANGE = {"10": (9, 20), "11": (9, 20)}
UNSUPPORTED_TYPES = {onnx.TensorProto.DOUBLE: "DOUBLE", onnx.TensorProto.STRING: "STRING",
                     onnx.TensorProto.COMPLEX64: "COMPLEX64", onnx.TensorProto.UINT16: "UINT16",
                     onnx.TensorProto.UINT32: "UINT32", onnx.TensorProto.UINT64: "UINT64"}


@dataclass
class TrtCheck:
    path: str
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.blockers


def check_trt(path: str | Path, trt_major: str = "10") -> TrtCheck:
    """Report every node, attribute, type and dynamic shape that would stop a TensorRT build of ``path``."""
    model = load_onnx(path)
    report = TrtCheck(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    low, high = OPSET_RANGE[trt_major]
    if not low <= opset <= high:
        report.blockers.append(f"opset {opset} is outside TensorRT {trt_major}'s {low}-{high}")
    for node in model.graph.node:
        report.op_counts[node.op_type] = report.op_counts.get(node.op_type, 0) + 1
        where = f"{node.op_type} node {node.name or '?'}"
        if node.domain not in ("", "ai.onnx"):
            report.blockers.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
        elif node.op_type not in SUPPORTED_OPS:
            report.blockers.append(f"{where}: operator not supported by the TensorRT ONNX parser")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize":
            if attrs.get("antialias", 0):
                report.blockers.append(f"{where}: antialias=1 is not supported")
            if attrs.get("coordinate_transformation_mode", b"half_pixel") == b"tf_crop_and_resize":
                report.blockers.append(f"{where}: tf_crop_and_resize is not supported")
            if attrs.get("keep_aspect_ratio_policy", b"stretch") != b"stretch":
                report.blockers.append(f"{where}: keep_aspect_ratio_policy other than stretch is not supported")
        if node.op_type == "Cast" and attrs.get("to") in UNSUPPORTED_TYPES:
            report.blockers.append(f"{where}: cast to {UNSUPPORTED_TYPES[attrs['to']]}")
        if node.op_type in ("Softmax", "LogSoftmax") and attrs.get("axis", -1) not in (-1, 3):
            report.warnings.append(f"{where}: softmax over axis {attrs['axis']} (not the last) may not fuse")
    tensors = list(model.graph.input) + list(model.graph.output)
    for tensor in tensors:
        elem = tensor.type.tensor_type.elem_type
        if elem in UNSUPPORTED_TYPES:
            report.blockers.append(f"graph io {tensor.name}: {UNSUPPORTED_TYPES[elem]} tensors")
        dims = tensor.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if any(i != 0 for i in dynamic):
            report.blockers.append(f"graph io {tensor.name}: dynamic axes {dynamic}; only the batch may be dynamic")
    for init in model.graph.initializer:
        if init.data_type in UNSUPPORTED_TYPES:
            report.warnings.append(f"initialiser {init.name}: {UNSUPPORTED_TYPES[init.data_type]} (down-cast)")
    return report
