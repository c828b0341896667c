"""One reader per file kind (issue 23): a graph file is loaded and its GraphInfo derived by contract.load_graph, an
engine's GraphInfo by tensorrt.sidecar.graph_info_of; every command that reads them says the same one line.

Real files throughout: graphs written with onnx, sidecars written by write_sidecar, TensorRT blocked where the
backend would otherwise need it.
"""

from __future__ import annotations

import pytest
from engine_support import block_tensorrt, graph_info, make_sidecar, write_graph

from maefuse_deploy.backends.tensorrt import TensorRTBackend
from maefuse_deploy.bench.backends import inspect_model
from maefuse_deploy.bench.settings import BenchSettings
from maefuse_deploy.contract import load_graph, read_graph_info
from maefuse_deploy.errors import InputError
from maefuse_deploy.serve.repository import describe
from maefuse_deploy.tensorrt.onnx_info import read_graph
from maefuse_deploy.tensorrt.sidecar import graph_info_of, sidecar_path, write_sidecar

GRAPH_READERS = {
    "contract.read_graph_info": read_graph_info,
    "tensorrt.onnx_info.read_graph": read_graph,
    "serve.repository.describe": describe,
    "bench.inspect_model": lambda path: inspect_model(BenchSettings(model=str(path))),
}


def refusal(read, path) -> str:
    with pytest.raises(InputError) as info:
        read(path)
    return str(info.value)


def junk(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\x00 not a protobuf" * 10)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "nothing.onnx", "ONNX graph not found: {path} (fix: export one with maefuse-export --onnx)"),
        (junk, "{path} is not a readable ONNX graph (DecodeError) (fix: re-export it with maefuse-export --onnx)"),
        (lambda tmp: write_graph(tmp / "bare.onnx", metadata=False), "{path} has no maefuse metadata"),
    ],
    ids=["missing", "corrupt", "no-metadata"],
)
def test_every_graph_reader_refuses_a_bad_graph_with_the_same_line(tmp_path, make, expected):
    path = make(tmp_path)
    messages = {name: refusal(read, path) for name, read in GRAPH_READERS.items()}
    assert messages["contract.read_graph_info"].startswith(expected.format(path=path))
    assert len(set(messages.values())) == 1, messages  # one reader: one message, whoever asks
    assert "\n" not in messages["contract.read_graph_info"]


def test_load_graph_returns_the_proto_and_its_info(tmp_path):
    path = write_graph(tmp_path / "g.onnx", external=True)
    proto, info = load_graph(path)
    assert info == read_graph(path).info and [v.name for v in proto.graph.input] == ["ir", "vis"]
    # Weights stay on disk: the external tensor is read as a reference, not loaded.
    assert not proto.graph.initializer[0].raw_data


def test_every_engine_reader_derives_graph_info_from_the_sidecar_the_same_way(tmp_path, monkeypatch):
    block_tensorrt(monkeypatch)  # the sidecar is checked before TensorRT is needed
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, make_sidecar())
    assert graph_info_of(make_sidecar(), engine) == graph_info()
    assert inspect_model(BenchSettings(model=str(engine)))[0].graph == graph_info()
    assert describe(engine).info == graph_info()

    write_sidecar(engine, make_sidecar(graph_metadata={"maefuse.io": "float"}))
    readers = {
        "sidecar.graph_info_of": lambda: graph_info_of(make_sidecar(graph_metadata={"maefuse.io": "float"}), engine),
        "bench.inspect_model": lambda: inspect_model(BenchSettings(model=str(engine))),
        "serve.repository.describe": lambda: describe(engine),
        "backends.TensorRTBackend": lambda: TensorRTBackend(engine),
    }
    messages = {}
    for name, read in readers.items():
        with pytest.raises(InputError) as info:
            read()
        messages[name] = str(info.value)
    assert messages["sidecar.graph_info_of"].startswith(f"{sidecar_path(engine)} has no maefuse metadata")
    assert len(set(messages.values())) == 1, messages
