"""The fault suite for maefuse-export and maefuse-build-engine: every output checked by the one output rule
(atomic.check_output) before the model loads, and uint8 graphs naming what they take. Real CLI, real files;
docs/reliability.md ("Output safety (maefuse-export, maefuse-build-engine)") lists the cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.atomic import TEMP_PREFIX
from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend
from maefuse_deploy.cli.build_engine import main as build_engine_main
from maefuse_deploy.cli.export import main as export_main
from maefuse_deploy.errors import InputError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import save_checkpoint

RANDOM = "random:maefuse-micro"
MISSING = "missing.safetensors"  # a model that cannot load: an error naming it means the checks came too late


def invoke(command, args: list[str]):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name.startswith(".")]


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    """A float-io micro graph (fp32, 64x64, batch 1)."""
    path = tmp_path_factory.mktemp("graph") / "micro.onnx"
    export_onnx(build_model(get_config("maefuse-micro"), seed=3), path, ExportSpec(64, 64), verify=False)
    return path


@pytest.fixture(scope="module")
def uint8_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "u8.onnx"
    spec = ExportSpec(64, 64, io="uint8", camera_size=(48, 64))
    export_onnx(build_model(get_config("maefuse-micro"), seed=3), path, spec, verify=False)
    return path


# -- maefuse-export ----------------------------------------------------------------------------------------------


def test_export_never_writes_over_its_own_checkpoint(tmp_path):
    checkpoint = tmp_path / "ck.safetensors"
    save_checkpoint(build_model(get_config("maefuse-micro"), seed=1), checkpoint)
    before = checkpoint.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = invoke(export_main, ["--onnx", checkpoint, "-m", checkpoint, "--no-verify", *extra])
        assert result.exit_code == 1
        line = one_error(result)
        assert f"--onnx {checkpoint} is also an input" in line and "fix:" in line
        assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]


def test_an_existing_graph_is_refused_before_the_model_loads_and_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "g.onnx"
    out.write_bytes(b"an earlier graph")
    result = invoke(export_main, ["--onnx", out, "-m", tmp_path / MISSING])
    assert result.exit_code == 1
    assert one_error(result) == (f"error: --onnx {out} already exists (fix: pass --overwrite to replace it, or "
                                 "choose another path)")
    # A failing export with --overwrite leaves the earlier file as it was.
    result = invoke(export_main, ["--onnx", out, "-m", RANDOM, "--height", "50", "--overwrite"])
    assert result.exit_code == 1 and "not a multiple of the patch size" in one_error(result)
    assert out.read_bytes() == b"an earlier graph"
    result = invoke(export_main, ["--onnx", out, "-m", RANDOM, "--no-verify", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:16] != b"an earlier graph"[:16] and OnnxRuntimeBackend(out).io == "float"
    assert not leftovers(tmp_path)


def test_an_orphan_external_data_file_is_refused(tmp_path):
    (tmp_path / "g.onnx.data").write_bytes(b"weights of another graph")
    result = invoke(export_main, ["--onnx", tmp_path / "g.onnx", "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and f"{tmp_path / 'g.onnx.data'} already exists" in one_error(result)
    assert not (tmp_path / "g.onnx").exists()


def test_replacing_a_graph_that_had_external_data_removes_the_data_it_no_longer_uses(tmp_path):
    (tmp_path / "g.onnx").write_bytes(b"an earlier graph")
    (tmp_path / "g.onnx.data").write_bytes(b"its weights")
    result = invoke(export_main, ["--onnx", tmp_path / "g.onnx", "-m", RANDOM, "--no-verify", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]


def test_onnx_name_and_folder_are_checked_before_the_model_loads(tmp_path):
    result = invoke(export_main, ["--onnx", tmp_path / "g.safetensors", "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and "must end in .onnx" in one_error(result)
    (tmp_path / "folder.onnx").mkdir()
    result = invoke(export_main, ["--onnx", tmp_path / "folder.onnx", "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and "is a folder" in one_error(result)


def test_aoti_package_is_checked_before_the_model_loads(tmp_path):
    package = tmp_path / "model.pt2"
    package.write_bytes(b"an earlier package")
    result = invoke(export_main, ["--aoti", package, "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and f"--aoti {package} already exists" in one_error(result)
    result = invoke(export_main, ["--aoti", tmp_path / "model.onnx", "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and "must end in .pt2" in one_error(result)
    assert package.read_bytes() == b"an earlier package"


def test_triton_repository_that_holds_files_is_refused_without_overwrite(tmp_path, graph):
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "notes.txt").write_text("mine")
    result = invoke(export_main, ["--onnx", tmp_path / "g.onnx", "--triton", repository, "-m", tmp_path / MISSING])
    assert result.exit_code == 1
    line = one_error(result)
    assert f"--triton {repository} is not empty" in line and "--overwrite" in line
    assert not (tmp_path / "g.onnx").exists()
    result = invoke(export_main, ["--triton", repository, "--triton-from", graph])
    assert result.exit_code == 1 and "is not empty" in one_error(result)
    result = invoke(export_main, ["--triton", repository, "--triton-from", graph, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (repository / "maefuse" / "config.pbtxt").is_file() and (repository / "notes.txt").read_text() == "mine"
    # A model folder of that name is never mixed with, --overwrite or not; nothing else is touched.
    result = invoke(export_main, ["--onnx", tmp_path / "g.onnx", "--triton", repository, "--overwrite",
                                  "-m", tmp_path / MISSING])
    assert result.exit_code == 1 and f"{repository / 'maefuse'} already exists" in one_error(result)
    assert not (tmp_path / "g.onnx").exists()


def test_triton_repository_may_not_be_a_file(tmp_path, graph):
    (tmp_path / "repo").write_text("a file")
    result = invoke(export_main, ["--triton", tmp_path / "repo", "--triton-from", graph, "--overwrite"])
    assert result.exit_code == 1 and "is not a folder" in one_error(result)


# -- maefuse-build-engine ----------------------------------------------------------------------------------------


def test_build_engine_never_writes_over_its_graph(graph):
    before = graph.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = invoke(build_engine_main, [graph, "-o", graph, *extra])
        assert result.exit_code == 1
        assert f"-o {graph} is also an input" in one_error(result)
    assert graph.read_bytes() == before


def test_build_engine_refuses_an_existing_engine_without_overwrite(tmp_path, graph):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine built last week")
    result = invoke(build_engine_main, [graph, "-o", engine])
    assert result.exit_code == 1
    assert one_error(result) == (f"error: -o {engine} already exists (fix: pass --overwrite to replace it, or "
                                 "choose another path)")
    result = invoke(build_engine_main, [graph, "-o", engine, "--overwrite"])
    # Past the checks: the build itself (exit 3 on a machine without TensorRT or a GPU).
    assert "already exists" not in result.output
    assert result.exit_code in (0, 3), result.output


# -- uint8 graphs ------------------------------------------------------------------------------------------------


def test_uint8_graph_refuses_a_16_bit_ir_with_the_fix(uint8_graph):
    backend = OnnxRuntimeBackend(uint8_graph)
    ir16 = np.full((1, 48, 64), 30000, np.uint16)
    vis = np.zeros((1, 48, 64, 3), np.uint8)
    with pytest.raises(InputError) as caught:
        backend.run(ir16, vis)
    message = str(caught.value)
    assert "\n" not in message
    assert "8-bit" in message and "uint16" in message and "--io float" in message and "fix:" in message


def test_uint8_graph_refuses_a_grey_vis_with_the_fix(uint8_graph):
    backend = OnnxRuntimeBackend(uint8_graph)
    ir = np.zeros((1, 48, 64), np.uint8)
    with pytest.raises(InputError) as caught:
        backend.run(ir, np.zeros((1, 48, 64), np.uint8))
    message = str(caught.value)
    assert "\n" not in message
    assert "grey VIS" in message and "BGR" in message and "COLOR_GRAY2BGR" in message
