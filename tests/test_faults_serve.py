"""maefuse-serve under the faults a deployment meets: a process-group SIGTERM (``timeout``, a shell's Ctrl-C, an
init system signalling the group) with requests in flight, a drain that runs out of time, ports that clash or are
taken, a Triton server that dies at start, a readiness probe answered before the model can fuse.

Real servers (the serving venv's ``maefuse-serve``, PyTriton's ``tritonserver``) on free loopback ports, real
clients (tritonclient). Every server start costs seconds, so the cases share starts where they can.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from maefuse_deploy import Fuser
from maefuse_deploy.io import read_image
from maefuse_deploy.serve.process import ServerProcess, free_ports, serve_executable

SERVE_BIN = serve_executable()
if not SERVE_BIN.is_file():
    if os.environ.get("CI"):
        pytest.fail("no serving venv (CI must run the serving tests: see .ci/run)")
    pytest.skip(f"no serving venv at {SERVE_BIN.parent.parent} (fix: bash scripts/serve-venv.sh)",
                allow_module_level=True)
try:
    import tritonclient.grpc as grpcclient
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip('tritonclient is not installed (fix: pip install -e ".[client]")', allow_module_level=True)

MODEL = "maefuse"


@pytest.fixture(scope="module")
def pair(msrs):
    return read_image(msrs / "ir" / "00537D.png", "IR"), read_image(msrs / "vi" / "00537D.png", "VIS")


@pytest.fixture(scope="module")
def direct(pair):
    with Fuser.from_checkpoint(None) as fuser:  # the built-in model, as the server loads it
        return fuser.fuse(*pair)


def _inputs(ir: np.ndarray, vis: np.ndarray, *, batched: bool = False) -> list:
    if not batched:
        ir, vis = ir[None], vis[None]
    inputs = [grpcclient.InferInput("ir", list(ir.shape), "UINT8"), grpcclient.InferInput("vis", list(vis.shape),
                                                                                            "UINT8")]
    inputs[0].set_data_from_numpy(ir)
    inputs[1].set_data_from_numpy(vis)
    return inputs


def _in_flight(server: ServerProcess, pair, count: int, *, batched: bool = False
               ) -> tuple[dict[int, object], threading.Event]:
    """``count`` requests of ``pair`` sent at once (``batched``: the pair's arrays are already [N, ...]);
    results (array or error) arrive in the dict."""
    results: dict[int, object] = {}
    done = threading.Event()

    def collect(index: int, result, error) -> None:
        results[index] = error if error is not None else result.as_numpy("fused")[0 if not batched else slice(None)]
        if len(results) == count:
            done.set()

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for index in range(count):
        client.async_infer(MODEL, _inputs(*pair, batched=batched), client_timeout=120,
                           callback=lambda result, error, index=index: collect(index, result, error))
    return results, done


def _wait_ready_fast(server: ServerProcess, timeout_s: float = 180) -> None:
    """Poll the server-wide readiness a load balancer probes, as fast as one would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log_tail()
        with contextlib.suppress(OSError):
            if server.get("/v2/health/ready")[0] == 200:
                return
        time.sleep(0.02)
    pytest.fail(f"not ready after {timeout_s} s\n{server.log_tail()}")


def test_ready_means_an_inference_answers_and_a_group_sigterm_drains(tmp_path, pair, direct):
    """Readiness (defect 3), then a SIGTERM to the whole process group with 8 requests in flight (defect 1)."""
    server = ServerProcess(tmp_path / "serve.log", ["--exit-timeout", "150"], executable=SERVE_BIN)
    with server:
        _wait_ready_fast(server)
        ir, vis = pair
        small = (ir[:64, :80].copy(), vis[:64, :80].copy())
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:  # at once: no retry
            fused = client.infer(MODEL, _inputs(*small), client_timeout=60).as_numpy("fused")
        assert fused.shape == (1, 64, 80, 3)

        count = 8
        results, done = _in_flight(server, pair, count)
        time.sleep(0.3)
        assert len(results) < count, "all requests finished before SIGTERM: nothing was in flight"
        os.killpg(server.process.pid, signal.SIGTERM)  # what `timeout` and a shell's job control do
        assert done.wait(timeout=200), f"only {len(results)} of {count} in-flight requests answered"
        failed = {i: r for i, r in results.items() if not isinstance(r, np.ndarray)}
        assert not failed, f"in-flight requests failed: {list(failed.values())[:2]}"
        for got in results.values():
            assert np.array_equal(got, direct)
        assert server.process.wait(timeout=120) == 0, server.log_tail()
        log = server.log.read_text(errors="replace")
        assert "stopped: in-flight requests drained" in log
        assert "BrokenPipe" not in log and "Traceback" not in log


def test_a_drain_that_runs_out_of_time_says_how_many_requests_failed_and_exits_non_zero(tmp_path, pair):
    # torch float32: a known, slow workload (backend auto would pick OpenVINO int8 where the serving venv has it).
    server = ServerProcess(tmp_path / "serve.log", ["--exit-timeout", "0", "--threads", "1", "--max-batch", "3",
                                                    "--backend", "torch"], executable=SERVE_BIN)
    ir, vis = pair
    heavy = (np.stack([ir] * 3), np.stack([vis] * 3))  # 3 pairs per request, one request at a time, one thread
    with server:
        server.wait_ready()
        count = 16  # seconds of work each on this machine: far more than the 0 s drain + 5 s unload allow
        results, done = _in_flight(server, heavy, count, batched=True)
        time.sleep(0.5)
        os.killpg(server.process.pid, signal.SIGTERM)
        code = server.process.wait(timeout=120)
        done.wait(timeout=60)
        log = server.log.read_text(errors="replace")
    failed = sum(not isinstance(r, np.ndarray) for r in results.values()) + count - len(results)
    assert failed > 0, "every request finished within the drain: the test sent too little work"
    assert code == 1, log
    assert "stopped: in-flight requests drained" not in log
    reported = re.search(r"error: stopped, not drained: (\d+) in-flight request\(s\) failed", log)
    assert reported, log[-2000:]
    print(f"client saw {failed} of {count} fail; the server reported {reported.group(1)}")
    # Triton's count at the signal: requests it had accepted; the client's failures also include requests that
    # were still arriving then and were refused as the server stopped
    assert 1 <= int(reported.group(1)) <= failed


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SERVE_BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_equal_ports_are_a_usage_error_before_the_model_loads():
    port, metrics = free_ports(2)
    start = time.monotonic()
    result = _run(["--model", "random:maefuse-micro", "--http-port", str(port), "--grpc-port", str(port),
                   "--metrics-port", str(metrics)], timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"--http-port and --grpc-port are both {port}" in result.stderr
    assert "model:" not in result.stderr and "Usage: tritonserver" not in result.stdout + result.stderr
    assert time.monotonic() - start < 60


def test_a_port_in_use_is_refused_before_the_model_loads():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        http, grpc = free_ports(2)
        result = _run(["--model", "random:maefuse-micro", "--http-port", str(http), "--grpc-port", str(grpc),
                       "--metrics-port", str(port)])
    assert result.returncode == 1
    assert f"error: cannot listen for metrics on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "model:" not in result.stderr  # refused before the model loaded


def test_a_triton_that_dies_at_start_is_one_line_without_a_hang_or_usage_dump():
    """Triton refuses its own command line (a bad PYTRITON_TRITON_CONFIG_* in the environment)."""
    http, grpc, metrics = free_ports(3)
    start = time.monotonic()
    result = _run(["--model", "random:maefuse-micro", "--http-port", str(http), "--grpc-port", str(grpc),
                   "--metrics-port", str(metrics)],
                  env={"PYTRITON_TRITON_CONFIG_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL": "bogus"}, timeout=100)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s to notice the dead server"
    assert "Usage: tritonserver" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Triton exited at start" in errors[0], result.stderr
    assert "compression" in errors[0].lower(), errors[0]  # names the cause: Triton's own complaint
    assert len(result.stdout.splitlines()) + len(result.stderr.splitlines()) < 10, result.stdout + result.stderr
