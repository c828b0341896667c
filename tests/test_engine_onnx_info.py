"""Reading an exported graph's contract on the CPU (tensorrt/onnx_info.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import onnx
import pytest
from engine_support import (
    graph_info,
    write_graph,
)
from onnx import helper

from maefuse_deploy.errors import InputError
from maefuse_deploy.tensorrt.onnx_info import read_graph


def test_read_graph_float_dynamic(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx"))
    assert graph.info.io == "float" and graph.info.precision == "fp32"
    assert graph.static_batch is None
    assert graph.inputs["ir"].shape == (None, 3, 8, 8) and graph.inputs["ir"].dtype == "float32"
    assert graph.input_size == (8, 8)
    assert graph.patch_size == 4
    assert graph.external_files == ()


def test_read_graph_uint8_static(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx", io_mode="uint8", batch=2))
    assert graph.static_batch == 2
    assert graph.inputs["vis"].shape == (2, 8, 8, 3)
    assert graph.input_size == (8, 8)


def test_read_graph_external_data(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx", external=True))
    assert graph.external_files == ("g.onnx.data",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metadata": False}, "no maefuse metadata"),
        ({"names": ("a", "vis", "fused")}, "inputs ['a', 'vis']"),
        ({"names": ("ir", "vis", "out")}, "output 'fused'"),
        ({"size": "h"}, "dynamic image size"),
    ],
)
def test_read_graph_rejects(tmp_path, kwargs, message):
    with pytest.raises(InputError) as info:
        read_graph(write_graph(tmp_path / "g.onnx", **kwargs))
    assert message in str(info.value)


def test_read_graph_rejects_wrong_layout_for_io(tmp_path):
    path = write_graph(tmp_path / "g.onnx", io_mode="uint8")
    model = onnx.load(str(path))
    helper.set_model_props(model, graph_info("float").to_metadata())  # claims float io, has uint8 HWC inputs
    onnx.save_model(model, str(path))
    with pytest.raises(InputError, match="declares io float"):
        read_graph(path)


def test_read_graph_rejects_non_onnx_and_missing(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf" * 10)
    # contract.load_graph's lines (tests/test_graph_readers.py pins that every graph reader says the same)
    with pytest.raises(InputError, match="is not a readable ONNX graph"):
        read_graph(junk)
    with pytest.raises(InputError, match="ONNX graph not found"):
        read_graph(tmp_path / "nothing.onnx")
