"""Shared helpers of the engine tests: tiny contract-keeping graphs, sidecars, blocking TensorRT."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maefuse_deploy.contract import BatchProfile, GraphInfo
from maefuse_deploy.contract import parse_batch_profile as parse_batch
from maefuse_deploy.tensorrt.sidecar import (
    RuntimeFacts,
    Sidecar,
)

REPO = Path(__file__).resolve().parents[1]
TRT_MODULES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime")




def graph_info(io_mode: str = "float", precision: str = "fp32", size: int = 8, batch: str = "1") -> GraphInfo:
    return GraphInfo(
        config={"name": "test", "patch_size": 4, "img_size": [size, size]},
        attention="official",
        io=io_mode,
        precision=precision,
        height=size,
        width=size,
        camera_height=size,
        camera_width=size,
        policy="official",
        checkpoint_sha256="ab" * 32,
        toolkit_version="0.1.0",
        batch=parse_batch(batch),
    )


def write_graph(
    path: Path,
    io_mode: str = "float",
    precision: str = "fp32",
    batch: int | str = "batch",
    size: int | str = 8,
    names: tuple[str, str, str] = ("ir", "vis", "fused"),
    metadata: bool = True,
    external: bool = False,
    declared_batch: str = "1",
) -> Path:
    """A tiny graph that keeps the maefuse contract (names, layouts, metadata); its arithmetic is irrelevant."""
    ir_name, vis_name, out_name = names
    if io_mode == "float":
        shape = [batch, 3, size, size]
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in (ir_name, vis_name)]
        output = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape)
        weight = numpy_helper.from_array(np.full([1], 0.5, np.float32), "w")  # raw data: can go external
        nodes = [helper.make_node("Add", [ir_name, vis_name], ["s"]), helper.make_node("Mul", ["s", "w"], [out_name])]
        initializers = [weight]
    else:
        inputs = [
            helper.make_tensor_value_info(ir_name, TensorProto.UINT8, [batch, size, size]),
            helper.make_tensor_value_info(vis_name, TensorProto.UINT8, [batch, size, size, 3]),
        ]
        output = helper.make_tensor_value_info(out_name, TensorProto.UINT8, [batch, size, size, 3])
        nodes = [helper.make_node("Identity", [vis_name], [out_name])]
        initializers = []
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [output], initializers))
    if metadata:
        # The batch goes in as text, as a file may hold it (even garbled), not through BatchProfile.
        helper.set_model_props(model, {**graph_info(io_mode, precision).to_metadata(), "maefuse.batch": declared_batch})
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def make_sidecar(**changes) -> Sidecar:
    base = Sidecar(
        tensorrt_version="10.3.0.26",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        onnx_path="model.onnx",
        onnx_sha256="0" * 64,
        profiles=(BatchProfile(1, 1, 8),),
        input_shapes={
            "ir": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]],
            "vis": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]],
        },
        precision="fp16",
        io="float",
        graph_metadata=graph_info().to_metadata(),
        build_time="2026-01-01T00:00:00+00:00",
        build_seconds=12.5,
        hardware_compat=False,
        version_compat=False,
        typing="fp16-flag",
    )
    return replace(base, **changes)


H100 = RuntimeFacts("10.3.0.26", "NVIDIA H100 80GB HBM3", (9, 0))


def block_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like a machine without TensorRT and cuda-python."""
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
