"""ONNX export, FP16 graphs, in-graph processing, TensorRT compatibility checks and verification."""

from .onnx_export import ExportReport, ExportSpec, export_onnx, parse_batch
from .trt_check import check_trt

__all__ = ["ExportReport", "ExportSpec", "check_trt", "export_onnx", "parse_batch"]
