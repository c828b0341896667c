"""maefuse-export --triton: model repositories a full Triton server loads, checked with Triton's own protobuf.

No production Triton (with its TensorRT/ONNX Runtime backends) runs here: config.pbtxt is parsed with
tritonclient's ``model_config_pb2`` + protobuf text format, its tensors are compared with the graph's, and the
copied graph is run by onnxruntime with tensors built from the config's dims and types.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from engine_support import write_graph

from maefuse_deploy.cli.export import main as export_main
from maefuse_deploy.contract import BatchProfile, GraphInfo
from maefuse_deploy.errors import InputError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.serve.repository import export_repository
from maefuse_deploy.tensorrt.sidecar import Sidecar, file_sha256, write_sidecar

try:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip('tritonclient is not installed (fix: pip install -e ".[client]")', allow_module_level=True)

NUMPY_OF = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32, "TYPE_UINT16": np.uint16, "TYPE_FP16": np.float16}
ONNX_OF = {"TYPE_UINT8": onnx.TensorProto.UINT8, "TYPE_FP32": onnx.TensorProto.FLOAT}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A uint8-io graph with a dynamic batch 1:2:4 (camera frames in, fused frame out)."""
    path = tmp_path_factory.mktemp("graph") / "micro.onnx"
    export_onnx(build_model(get_config("maefuse-micro"), seed=5), path,
                ExportSpec(64, 64, batch=(1, 2, 4), io="uint8", camera_size=(48, 80)), verify=False)
    return path


def parse(folder) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def graph_tensors(path) -> dict[str, tuple[int, list[int]]]:
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: (v.type.tensor_type.elem_type, [d.dim_value if d.HasField("dim_value") else -1
                                                    for d in v.type.tensor_type.shape.dim])
            for v in [*model.graph.input, *model.graph.output]}


def config_tensors(config) -> dict[str, tuple[int, list[int]]]:
    named = {}
    for tensor in [*config.input, *config.output]:
        kind = model_config_pb2.DataType.Name(tensor.data_type)
        dims = list(tensor.dims)
        named[tensor.name] = (ONNX_OF[kind], [-1, *dims] if config.max_batch_size else dims)
    return named


def test_onnx_repository_parses_and_names_exactly_the_graph_tensors(graph, tmp_path):
    folder = export_repository(graph, tmp_path / "repo")
    config = parse(folder)
    assert config.name == "maefuse" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4  # the profile's MAX
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config_tensors(config) == graph_tensors(graph)
    assert [t.name for t in config.input] == ["ir", "vis"] and [t.name for t in config.output] == ["fused"]
    assert list(config.input[0].dims) == [48, 80] and list(config.input[1].dims) == [48, 80, 3]
    assert config.parameters["maefuse_io"].string_value == "uint8"
    copied = folder / "1" / "model.onnx"
    assert file_sha256(copied) == file_sha256(graph)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["maefuse"]  # no staging folder left
    # The config's dims and types feed the copied graph: a batch of 3 (within max_batch_size) runs.
    session = ort.InferenceSession(str(copied), providers=["CPUExecutionProvider"])
    feeds = {t.name: np.zeros([3, *t.dims], NUMPY_OF[model_config_pb2.DataType.Name(t.data_type)])
             for t in config.input}
    (fused,) = session.run(["fused"], feeds)
    assert list(fused.shape) == [3, *config.output[0].dims]


def test_static_batch_graph_has_no_batching_and_the_batch_in_its_dims(graph, tmp_path):
    model = onnx.load(str(graph))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 2  # the graph a --batch 2 export declares
    for prop in model.metadata_props:
        if prop.key == "maefuse.batch":
            prop.value = "2"
    static = tmp_path / "static.onnx"
    onnx.save(model, str(static))
    config = parse(export_repository(static, tmp_path / "repo", name="static"))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert config_tensors(config) == graph_tensors(static)
    assert list(config.input[1].dims) == [2, 48, 80, 3]


def test_a_graph_with_external_data_is_copied_with_it_and_refused_without_it(tmp_path):
    graph = write_graph(tmp_path / "g.onnx", external=True)
    folder = export_repository(graph, tmp_path / "repo")
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["g.onnx.data", "model.onnx"]  # the name it reads
    assert (folder / "1" / "g.onnx.data").read_bytes() == (tmp_path / "g.onnx.data").read_bytes()
    (tmp_path / "g.onnx.data").unlink()
    with pytest.raises(InputError, match=r"external data .*g\.onnx\.data of .* is missing"):
        export_repository(graph, tmp_path / "repo", name="again")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["maefuse"]  # nothing half-written


def test_engine_repository_comes_from_its_sidecar(graph, tmp_path):
    engine = tmp_path / "micro.engine"
    engine.write_bytes(b"plan bytes: TensorRT is not on this machine, the repository only copies them")
    meta = {p.key: p.value for p in onnx.load(str(graph), load_external_data=False).metadata_props}
    with pytest.raises(InputError, match="has no sidecar"):  # the sidecar is read first; without it, refused
        export_repository(engine, tmp_path / "repo")
    write_sidecar(engine, Sidecar(
        tensorrt_version="10.16.0", gpu_name="NVIDIA H100", compute_capability=(9, 0), onnx_path=str(graph),
        onnx_sha256=file_sha256(graph), profiles=(BatchProfile(1, 4, 8),),
        input_shapes={"ir": [[1, 48, 80], [4, 48, 80], [8, 48, 80]],
                      "vis": [[1, 48, 80, 3], [4, 48, 80, 3], [8, 48, 80, 3]]},
        precision="fp16", io="uint8", graph_metadata=meta, build_time="2026-11-28T07:00:00Z", build_seconds=1.0,
        hardware_compat=False, version_compat=False))
    folder = export_repository(engine, tmp_path / "repo")
    config = parse(folder)
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    # The engine computes the graph it was built from: same tensors as that graph, batch axis from the profile.
    assert config_tensors(config) == graph_tensors(graph)
    assert (folder / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert GraphInfo.from_metadata(meta).io == config.parameters["maefuse_io"].string_value


def test_cli_export_triton_and_its_errors(graph, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_main, ["--triton", str(tmp_path / "repo"), "--triton-from", str(graph),
                                         "--triton-name", "cam0"])
    assert result.exit_code == 0, result.output
    assert parse(tmp_path / "repo" / "cam0").name == "cam0"
    again = runner.invoke(export_main, ["--triton", str(tmp_path / "repo"), "--triton-from", str(graph),
                                        "--triton-name", "cam0"])
    assert again.exit_code == 1 and "already exists" in again.output
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])), str(foreign))
    bad = runner.invoke(export_main, ["--triton", str(tmp_path / "repo"), "--triton-from", str(foreign)])
    assert bad.exit_code == 1 and "no maefuse metadata" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "repo" / "maefuse").exists()
    missing = runner.invoke(export_main, ["--triton", str(tmp_path / "repo")])
    assert missing.exit_code == 2 and "--triton-from" in missing.output
