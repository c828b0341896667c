"""maefuse-serve: a real Triton server (PyTriton's tritonserver) on 127.0.0.1 with the built-in model.

The server runs from the serving venv (``scripts/serve-venv.sh``: PyTriton needs numpy < 2) as a subprocess in its
own process group on random free loopback ports; every request loop here is bounded in count and time, and the
group is killed in teardown whatever happened. The client side is tritonclient in this venv. The tests share one
server and run in file order; the SIGTERM test is last because it stops it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy import Fuser
from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.errors import InputError, UnavailableError
from maefuse_deploy.io import read_image
from maefuse_deploy.serve.process import ServerProcess, free_ports, serve_executable

START_TIMEOUT_S = 180
MODEL = "maefuse"
# Real pairs of three sizes: a whole MSRS 640x480 pair and two crops of odd sizes (the native policy pads them).
PAIRS = [("00537D.png", None), ("00556D.png", (slice(0, 329), slice(0, 500))),
         ("00858N.png", (slice(7, 329), slice(11, 489)))]
LOAD_CLIENTS, LOAD_REQUESTS = 8, 25


def _needed(reason: str) -> None:
    # CI installs both (.ci/run); a developer's venv may not have them yet, so skip there with the fix.
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the serving tests: see .ci/run)")
    pytest.skip(reason, allow_module_level=True)


SERVE_BIN = serve_executable()
if not SERVE_BIN.is_file():
    _needed(f"no serving venv at {SERVE_BIN.parent.parent} (fix: bash scripts/serve-venv.sh)")
try:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
except ImportError:
    _needed('tritonclient is not installed (fix: pip install -e ".[client]")')

from maefuse_deploy.serve.client import RemoteFuser, server_message  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    handle = ServerProcess(tmp_path_factory.mktemp("serve") / "serve.log",
                           ["--max-batch", "8", "--queue-delay-us", "50000", "--exit-timeout", "150"],
                           executable=SERVE_BIN)
    try:
        try:
            handle.wait_ready(START_TIMEOUT_S)
        except UnavailableError as exc:
            pytest.fail(f"{exc}\n{handle.log_tail()}")
        yield handle
    finally:
        handle.stop()  # SIGTERM, then SIGKILL to whatever is left of the server's process group


def log_text(server: ServerProcess) -> str:
    return server.log.read_text(errors="replace")


def wait_for_log(server: ServerProcess, text: str, timeout_s: float = 30.0) -> str:
    """The server's log once it holds ``text`` (or after ``timeout_s``): the "ready" line is written after Triton
    answers its health checks, so a client can see the server ready a moment before the line is there."""
    deadline = time.monotonic() + timeout_s
    while text not in (log := log_text(server)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return log


@pytest.fixture(scope="module")
def fuser():
    with Fuser.from_checkpoint(None) as direct:  # the built-in model, as the server loads it
        yield direct


@pytest.fixture(scope="module")
def real_pairs(msrs):
    pairs = []
    for name, crop in PAIRS:
        ir, vis = read_image(msrs / "ir" / name, "IR"), read_image(msrs / "vi" / name, "VIS")
        pairs.append((ir[crop].copy(), vis[crop].copy()) if crop else (ir, vis))
    return pairs


@pytest.fixture(scope="module")
def direct(fuser, real_pairs):
    return [fuser.fuse(ir, vis) for ir, vis in real_pairs]


@pytest.fixture(scope="module")
def small_pairs(real_pairs):
    """Four 80x64 crops of real pairs: enough pixels to tell results apart, cheap enough for 200 requests."""
    crops = []
    for ir, vis in real_pairs[:2]:
        for top, left in ((0, 0), (96, 160)):
            crops.append((ir[top : top + 64, left : left + 80].copy(), vis[top : top + 64, left : left + 80].copy()))
    return crops


def raw_inputs(module, ir: np.ndarray, vis: np.ndarray, ir_type: str = "UINT8", ir_name: str = "ir"):
    inputs = [module.InferInput(ir_name, list(ir.shape), ir_type), module.InferInput("vis", list(vis.shape), "UINT8")]
    inputs[0].set_data_from_numpy(ir)
    inputs[1].set_data_from_numpy(vis)
    return inputs


def test_server_is_live_ready_and_reports_its_model(server):
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    assert server.get(f"/v2/models/{MODEL}/ready")[0] == 200
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 8
    assert config["dynamic_batching"]["preferred_batch_size"] == [8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50000
    assert {t["name"]: t["data_type"] for t in config["input"]} == {
        "ir": "TYPE_UINT8", "ir16": "TYPE_UINT16", "vis": "TYPE_UINT8"}
    assert [t["name"] for t in config["output"]] == ["fused"]
    status, metrics = server.get("/metrics", server.metrics_port)
    assert status == 200 and f'model="{MODEL}"' in metrics  # PyTriton restricts the index API: metrics list it
    assert "ready: serving 'maefuse'" in wait_for_log(server, "ready: serving")


def test_a_port_in_use_is_refused_in_one_line():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([str(SERVE_BIN), "--model", "random:maefuse-micro", "--http-port", str(port),
                                 "--grpc-port", str(free_ports(1)[0])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"error: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_pairs_through_the_server_equal_direct_fuser_calls(server, real_pairs, direct, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    with RemoteFuser(url, batch_size=4) as remote:
        fused = remote.fuse_batch(real_pairs)
    for (_, vis), got, want in zip(real_pairs, fused, direct, strict=True):
        assert got.shape == want.shape == vis.shape and got.dtype == np.uint8
        assert np.array_equal(got, want), f"max difference {np.abs(got.astype(int) - want).max()}"


def test_16_bit_ir_and_grey_vis_fuse_as_the_fuser_does(server, fuser, small_pairs):
    ir, vis = small_pairs[0]
    rng = np.random.default_rng(3)
    ir16 = (ir.astype(np.uint16) * 64 + rng.integers(0, 64, ir.shape)).astype(np.uint16)  # a radiometric frame
    grey = vis[:, :, 1].copy()
    with RemoteFuser(server.grpc_url) as remote:
        got = remote.fuse_batch([(ir16, vis), (ir, grey)])
    want = [fuser.fuse(ir16, vis), fuser.fuse(ir, grey)]
    assert got[1].ndim == 2
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_fuse_cli_with_server_writes_what_a_local_run_writes(server, tmp_path, fuser, msrs):
    for role in ("ir", "vi"):
        (tmp_path / role).mkdir()
        for name in ("00633D", "01023N"):  # 2 of the shipped pairs, cropped to an odd size to keep it quick
            image = read_image(msrs / role / f"{name}.png", role)
            cv2.imwrite(str(tmp_path / role / f"{name}.png"), image[:200, :296])
    result = CliRunner().invoke(fuse_main, ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "--out",
                                            str(tmp_path / "out"), "--server", server.grpc_url])
    assert result.exit_code == 0, result.output
    for name in ("00633D", "01023N"):
        want = fuser.fuse(read_image(tmp_path / "ir" / f"{name}.png", "IR"),
                          read_image(tmp_path / "vi" / f"{name}.png", "VIS"))
        assert np.array_equal(read_image(tmp_path / "out" / f"{name}.png", "fused"), want)
    bad = CliRunner().invoke(fuse_main, ["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "--out",
                                         str(tmp_path / "out2"), "--server", server.grpc_url, "--model", "x.onnx"])
    assert bad.exit_code != 0 and "--model" in bad.output


def test_load_8_clients_x_25_requests_all_correct_batched_and_memory_stable(server, fuser, small_pairs):
    references = [fuser.fuse(ir, vis) for ir, vis in small_pairs]
    with RemoteFuser(server.http_url) as warm:  # first batch of this size allocates; measure memory after it
        warm.fuse_batch(small_pairs * 2)
    count_before = server.metric("nv_inference_count")
    executions_before = server.metric("nv_inference_exec_count")
    success_before = server.metric("nv_inference_request_success")
    rss = [server.rss_mib()]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            rss.append(server.rss_mib())

    failures: list[str] = []
    answered = [0] * LOAD_CLIENTS

    def client(number: int) -> None:
        url = server.http_url if number % 2 == 0 else server.grpc_url  # both front ends under load at once
        try:
            with RemoteFuser(url, batch_size=1, timeout_s=120) as remote:
                for request in range(LOAD_REQUESTS):  # bounded: 25 requests, each with a 120 s timeout
                    which = (number + request) % len(small_pairs)
                    got = remote.fuse(*small_pairs[which])
                    if not np.array_equal(got, references[which]):
                        failures.append(f"client {number} request {request}: wrong image")
                    answered[number] += 1
        except Exception as exc:
            failures.append(f"client {number}: {exc}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(LOAD_CLIENTS)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, 300 - (time.monotonic() - start)))
    stop_sampling.set()
    sampler.join(timeout=5)
    rss.append(server.rss_mib())
    assert not any(t.is_alive() for t in threads), "clients still waiting after 300 s"
    assert not failures, failures[:5]
    assert answered == [LOAD_REQUESTS] * LOAD_CLIENTS
    inferences = server.metric("nv_inference_count") - count_before
    executions = server.metric("nv_inference_exec_count") - executions_before
    assert server.metric("nv_inference_request_success") - success_before == LOAD_CLIENTS * LOAD_REQUESTS
    assert inferences == LOAD_CLIENTS * LOAD_REQUESTS  # none lost, none run twice
    assert inferences / executions > 1.5, f"{inferences:.0f} inferences in {executions:.0f} executions: no batching"
    growth = rss[-1] - rss[0]
    print(f"load: {inferences:.0f} pairs in {executions:.0f} batches (mean {inferences / executions:.2f}), "
          f"{time.monotonic() - start:.1f} s; server RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB (peak {max(rss):.0f})")
    # After the warm-up, 200 more requests of known shapes must not grow the server: a leak of even 100 KiB per
    # request would show as 20 MiB.
    assert growth < 16 and max(rss) - rss[0] < 32, f"server memory grew under steady load: {rss}"


def _good_request_still_served(server, small_pairs, fuser) -> None:
    ir, vis = small_pairs[1]
    with RemoteFuser(server.http_url, timeout_s=60) as remote:
        assert np.array_equal(remote.fuse(ir, vis), fuser.fuse(ir, vis))


@pytest.mark.parametrize("case", ["dtype", "rank", "sizes", "channels", "no-ir"])
def test_malformed_request_gets_a_clear_error_and_the_server_keeps_serving(server, small_pairs, fuser, case):
    ir, vis = small_pairs[0]
    ir, vis = ir[None], vis[None]
    if case == "dtype":
        inputs, expect = raw_inputs(httpclient, ir.astype(np.float32), vis, "FP32"), r"ir.*(UINT8|FP32)"
    elif case == "rank":
        inputs, expect = raw_inputs(httpclient, ir[..., None], vis), r"shape.*ir|ir.*shape"
    elif case == "sizes":
        inputs, expect = raw_inputs(httpclient, ir[:, :, :48].copy(), vis), r"IR is 48x64 but VIS is 80x64"
    elif case == "channels":
        inputs, expect = raw_inputs(httpclient, ir, vis[..., :2].copy()), r"send IR as \[batch, H, W\]"
    else:
        inputs = [httpclient.InferInput("vis", list(vis.shape), "UINT8")]
        inputs[0].set_data_from_numpy(vis)
        expect = r"exactly one of the inputs 'ir' \(UINT8\) or 'ir16'"
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=60)
    with client, pytest.raises(Exception) as caught:
        client.infer(MODEL, inputs)
    reply = caught.value.message() if hasattr(caught.value, "message") else str(caught.value)
    assert re.search(expect, reply) and "\n" not in reply and "Traceback" not in reply, reply  # any client: one line
    if case in ("sizes", "channels", "no-ir"):  # our refusals (Triton's own are one line too) name the fix
        assert "(fix: " in reply, reply
    line = server_message(caught.value)  # what RemoteFuser and maefuse-fuse --server print: one line
    assert re.search(expect, line) and "\n" not in line, line
    _good_request_still_served(server, small_pairs, fuser)


def test_remote_fuser_reports_a_refused_pair_in_one_line(server):
    remote = RemoteFuser(server.http_url)
    with remote, pytest.raises(InputError, match=r"frame 3: IR is 48x32 but VIS is 40x32"):
        remote.fuse_batch([(np.zeros((32, 48), np.uint8), np.zeros((32, 40, 3), np.uint8))], names=["frame 3"])
    with pytest.raises(Exception, match="no Triton server answers"):
        RemoteFuser(f"http://127.0.0.1:{free_ports(1)[0]}", timeout_s=5)


def test_client_disconnect_mid_request_does_not_wedge_the_server(server, small_pairs, fuser):
    ir, vis = small_pairs[2]
    body = ir[None].tobytes() + vis[None].tobytes()
    header = (f'{{"inputs":[{{"name":"ir","shape":[1,64,80],"datatype":"UINT8","parameters":{{"binary_data_size":'
              f'{ir.size}}}}},{{"name":"vis","shape":[1,64,80,3],"datatype":"UINT8","parameters":'
              f'{{"binary_data_size":{vis.size}}}}}]}}').encode()
    request = (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream"
               f"\r\nInference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + len(body)}"
               "\r\n\r\n").encode() + header
    for sent in (request + body[: len(body) // 2], request + body):  # half a body; a whole one, answer unread
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            sock.sendall(sent)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with client, pytest.raises(Exception, match=r"(?i)deadline|timeout|cancel"):  # the client gives up mid-request
        client.infer(MODEL, raw_inputs(grpcclient, ir[None], vis[None]), client_timeout=0.001)
    _good_request_still_served(server, small_pairs, fuser)
    assert server.process.poll() is None


def test_sigterm_drains_in_flight_requests_and_exits(server, real_pairs, direct):
    """Last test: it stops the shared server."""
    results: dict[int, object] = {}
    done = threading.Event()
    count = 12  # of the 640x480 pair: seconds of work on any machine, within the exit timeout on a busy one

    def collect(index: int, result, error) -> None:
        results[index] = error if error is not None else result.as_numpy("fused")[0]
        if len(results) == count:
            done.set()

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        ir, vis = real_pairs[0]
        for index in range(count):
            client.async_infer(MODEL, raw_inputs(grpcclient, ir[None], vis[None]), client_timeout=120,
                               callback=lambda result, error, index=index: collect(index, result, error))
        time.sleep(0.2)
        assert len(results) < count, "all requests finished before SIGTERM: nothing was in flight"
        server.process.send_signal(signal.SIGTERM)
        assert done.wait(timeout=200), f"only {len(results)} of {count} in-flight requests answered"
    for index in range(count):
        got = results[index]
        assert isinstance(got, np.ndarray), f"request {index} was dropped: {got}"
        assert np.array_equal(got, direct[0])
    assert server.process.wait(timeout=120) == 0
    assert "stopped: in-flight requests drained" in log_text(server)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()
