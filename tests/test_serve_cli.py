"""maefuse-serve and maefuse-fuse --server outside the serving venv: one-line errors naming the fix."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.cli.serve import main as serve_main
from maefuse_deploy.serve.process import free_ports


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="PyTriton is importable here")
def test_serve_without_pytriton_says_to_use_the_serving_venv():
    result = CliRunner().invoke(serve_main, ["--model", "random:maefuse-micro"])
    assert result.exit_code == 3
    assert "error: PyTriton cannot be imported here" in result.output and "scripts/serve-venv.sh" in result.output


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://127.0.0.1:1", "is not http://HOST:PORT or grpc://HOST:PORT"),
    ("http://127.0.0.1", "is not http://HOST:PORT or grpc://HOST:PORT"),
    ("FREE", "no Triton server answers at"),
])
def test_fuse_with_a_bad_or_silent_server_fails_in_one_line(tmp_path, url, message):
    pytest.importorskip("tritonclient.http")
    if url == "FREE":
        url = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    result = CliRunner().invoke(fuse_main, ["--out", str(tmp_path / "out"), "--server", url])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "out").exists()


def test_serve_help_spells_random_weights_as_accepted_and_a_bad_device_is_a_usage_error():
    help_text = " ".join(CliRunner().invoke(serve_main, ["--help"]).output.split())
    assert "random:CONFIG" in help_text and "a config name (random weights)" not in help_text
    result = CliRunner().invoke(serve_main, ["--device", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_equal_ports_are_a_usage_error_in_any_venv():
    result = CliRunner().invoke(serve_main, ["--grpc-port", "8002", "--metrics-port", "8002"])
    assert result.exit_code == 2
    assert "--grpc-port and --metrics-port are both 8002" in result.output
