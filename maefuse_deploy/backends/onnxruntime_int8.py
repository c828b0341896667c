"""onnxruntime INT8: dynamic quantization of an exported fp32 graph (weights int8 per output channel, activations
quantized per call from their own range), run by the ordinary onnxruntime backend
(the ``onnxruntime-int8`` registry entry).

Dynamic rather than static quantization: the activation scales come from each call's own tensors, so there is no
calibration set to choose and no activation outlier clipped by a scale fitted to other images; only the MatMul and
Gemm weights (all of a ViT's arithmetic but attention's two batched matmuls) are stored as int8, and onnxruntime
runs them with VNNI integer dot products where the CPU has them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..contract import read_graph_info, require_graph_file
from ..errors import InputError
from .onnxruntime import OnnxRuntimeBackend


def quantize_dynamic_int8(graph: str | os.PathLike[str], out: str | os.PathLike[str]) -> float:
    """Write the int8 form of the fp32 ``graph`` to ``out`` (its maefuse metadata kept); returns the seconds taken."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..atomic import atomic_path

    graph, out = require_graph_file(graph), Path(out)
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        quantize_dynamic(graph, tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    return time.perf_counter() - start


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """The onnxruntime backend on the int8 form of an fp32 graph, quantized into a temporary folder when opened
    (removed on :meth:`close`)."""

    name = "onnxruntime-int8"

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cpu", dtype: str | None = None,
             config: str | None = None, **options: Any) -> OnnxRuntimeInt8Backend:
        if source is None:
            raise InputError("the onnxruntime-int8 backend needs an fp32 graph", fix="pass the .onnx path")
        info, _ = read_graph_info(Path(source))
        if info.precision != "fp32":
            raise InputError(f"{source} is a {info.precision} graph; int8 quantization starts from the fp32 export",
                             fix="export with --precision fp32")
        workdir = Path(tempfile.mkdtemp(prefix="maefuse-int8-"))
        try:
            quantized = workdir / "model-int8.onnx"
            seconds = quantize_dynamic_int8(source, quantized)
            backend = cls(quantized, device, **options)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        backend.workdir = workdir
        backend.build_notes = (f"dynamic int8 quantization (weights per channel) in {seconds:.1f} s",)
        return backend

    workdir: Path | None = None

    def close(self) -> None:
        super().close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
