"""Availability, the TensorRT backend and maefuse-build-engine where TensorRT is missing.

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from engine_support import (
    TRT_MODULES,
    block_tensorrt,
    make_sidecar,
    subprocess_env,
    write_graph,
)

from maefuse_deploy.cli.build_engine import main as build_engine_cli
from maefuse_deploy.errors import InputError, MaeFuseError, UnavailableError
from maefuse_deploy.tensorrt import availability
from maefuse_deploy.tensorrt.errors import EngineCompatibilityError, EngineError
from maefuse_deploy.tensorrt.sidecar import (
    write_sidecar,
)


def test_require_names_what_is_missing(monkeypatch):
    block_tensorrt(monkeypatch)
    with pytest.raises(UnavailableError) as info:
        availability.require()
    text = str(info.value)
    assert info.value.exit_code == 3
    assert "TensorRT is not available" in text and "cuda-python is not available" in text
    assert 'pip install "maefuse-deploy[trt-cu12]"' in text and "[trt-cu13]" in text
    assert "\n" not in text


def test_backend_without_tensorrt(monkeypatch, tmp_path):
    from maefuse_deploy.backends.tensorrt import TensorRTBackend

    block_tensorrt(monkeypatch)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(InputError, match="has no sidecar"):
        TensorRTBackend(engine)
    write_sidecar(engine, make_sidecar())
    with pytest.raises(UnavailableError) as info:
        TensorRTBackend(engine)
    assert info.value.exit_code == 3
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._pool = None
    backend.close()  # close on a half-built backend is harmless


def run_cli(args: list[str]):
    return CliRunner().invoke(build_engine_cli, args)


def test_cli_missing_onnx(tmp_path):
    result = run_cli([str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ONNX graph not found:")  # contract.require_graph_file's one line


def test_cli_input_errors_come_before_availability(monkeypatch, tmp_path):
    block_tensorrt(monkeypatch)
    onnx_path = write_graph(tmp_path / "g.onnx")
    bad_batch = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine"), "--batch", "0:1:2"])
    assert bad_batch.exit_code == 1 and "error: batch sizes must be at least 1" in bad_batch.output
    no_meta = run_cli([str(write_graph(tmp_path / "n.onnx", metadata=False)), "-o", str(tmp_path / "m.engine")])
    assert no_meta.exit_code == 1 and "no maefuse metadata" in no_meta.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = run_cli([str(onnx_path), "-o", str(blocker / "m.engine")])
    assert unwritable.exit_code == 1 and "is not a folder" in unwritable.output
    opt = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine"), "--opt-level", "9"])
    assert opt.exit_code == 1 and "outside 0..5" in opt.output


def test_cli_without_tensorrt_exits_3(monkeypatch, tmp_path):
    block_tensorrt(monkeypatch)
    onnx_path = write_graph(tmp_path / "g.onnx")
    result = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not available")
    assert 'pip install "maefuse-deploy[trt-cu12]"' in lines[0]
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


def test_cli_exit_code_3_in_a_real_process(tmp_path):
    onnx_path = write_graph(tmp_path / "g.onnx")
    code = (
        "import sys\n"
        f"for name in {TRT_MODULES!r}:\n"
        "    sys.modules[name] = None\n"
        "from maefuse_deploy.cli.build_engine import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(onnx_path), "-o", str(tmp_path / "m.engine")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: TensorRT is not available") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_imports_never_touch_tensorrt():
    code = (
        "import importlib.abc, sys\n"
        "tried = []\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorrt', 'cuda'):\n"
        "            tried.append(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import maefuse_deploy, maefuse_deploy.tensorrt, maefuse_deploy.backends.tensorrt\n"
        "import maefuse_deploy.tensorrt.build, maefuse_deploy.cli.build_engine\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported'\n"
        "assert not tried, tried\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_errors_are_maefuse_errors():
    assert issubclass(EngineCompatibilityError, EngineError)
    assert issubclass(EngineError, MaeFuseError)
