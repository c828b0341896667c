"""onnxruntime INT8: dynamic quantization of an exported fp32 graph (weights int8 per output channel, activations
quantized per call from their own range), run by the ordinary onnxruntime backend.

Dynamic rather than static quantization: the activation scales come from each call's own tensors, so there is no
calibration set to choose and no activation outlier clipped by a scale fitted to other images; only the MatMul and
Gemm weights (all of a ViT's arithmetic but attention's two batched matmuls) are stored as int8, and onnxruntime
runs them with VNNI integer dot products where the CPU has them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import InputError


def quantize_dynamic_int8(graph: str | os.PathLike[str], out: str | os.PathLike[str]) -> float:
    """Write the int8 form of the fp32 ``graph`` to ``out`` (its maefuse metadata kept); returns the seconds taken."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..atomic import atomic_path

    graph, out = Path(graph), Path(out)
    if not graph.is_file():
        raise InputError(f"ONNX graph not found: {graph}", fix="export one with maefuse-export --onnx")
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        quantize_dynamic(graph, tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    return time.perf_counter() - start
