"""ONNX export in steps (spec, trace, verify, commit), FP16 graphs, in-graph processing, TensorRT checks."""

from .onnx_export import ExportReport, export_onnx
from .spec import ExportSpec
from .trt_check import check_trt
from .verify import Tolerances, Verification, compare, verify_graph

__all__ = [
    "ExportReport",
    "ExportSpec",
    "Tolerances",
    "Verification",
    "check_trt",
    "compare",
    "export_onnx",
    "verify_graph",
]
