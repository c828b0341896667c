"""``maefuse-serve``: a real Triton Inference Server hosting a :class:`~maefuse_deploy.Fuser` through PyTriton.

PyTriton starts NVIDIA's ``tritonserver`` binary (shipped in the ``nvidia-pytriton`` wheel) with a Python-backend
proxy model; Triton does the HTTP/gRPC endpoints, health, Prometheus metrics and dynamic batching, and hands each
batch of requests to :func:`fuse_requests` in this process, which runs them through the Fuser in one
``fuse_batch`` call. Wire layouts: serve/protocol.py.

Start and stop are this module's, not PyTriton's defaults (docs/serving.md, docs/reliability.md "Serving"):

- the model is in Triton's repository before Triton starts, so its endpoints open (and ``/v2/health/ready``
  answers) only once the model is loaded; the Fuser has fused a warm-up pair before that;
- ``tritonserver`` runs in its own session, so a signal to this process's group (``timeout``, a shell's Ctrl-C)
  reaches only this process, which then stops Triton in order: Triton stops taking requests, answers those it
  accepted (up to ``exit_timeout_s``), unloads the model, exits; only then is the proxy torn down. The drain is
  reported as it happened (:class:`StopReport`);
- Triton's log goes to a file, and a Triton that exits at start is one error line naming its complaint;
- a request the server refuses gets a one-line error reply (:class:`RequestError`; PyTriton's proxy would send
  a batch-wide traceback, so the model Triton loads is the proxy with its ``execute`` wrapped, see
  ``_ONE_LINE_MODEL``).

PyTriton needs numpy < 2, so it runs from its own virtual environment layered over the main one
(``scripts/serve-venv.sh``, docs/serving.md).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import socket
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MaeFuseError, UnavailableError
from ..runtime.fuser import Fuser
from .protocol import INPUT_IR, INPUT_IR16, INPUT_VIS, OUTPUT_FUSED, VIS_CHANNELS

LOGGER = logging.getLogger(__name__)

SERVE_VENV_FIX = (
    "create the serving environment with `bash scripts/serve-venv.sh` (PyTriton needs numpy < 2, so it has its "
    "own venv) and run `.venv-serve/bin/maefuse-serve`"
)
START_TIMEOUT_S = 120.0  # Triton loading the proxy model: seconds; the Fuser itself is loaded before Triton starts
UNLOAD_GRACE_S = 5.0  # after its exit timeout, Triton unloads the model and exits: 2-3 s measured
WARM_UP_SIZE = (64, 64)  # HxW of the warm-up pair: small, since it only has to prove the model answers


class RequestError(InputError):
    """A request the server refuses (or could not fuse): its error reply is this one line."""


@dataclass(frozen=True)
class ServeSettings:
    """Where and how the server listens and batches."""

    host: str = "127.0.0.1"  # loopback unless asked: exposing a server is a decision, not a default
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str = "maefuse"
    max_batch: int | None = None  # None: the Fuser's batch size (the backend's largest batch)
    queue_delay_us: int = 2000  # how long Triton may hold a request to fill a batch
    exit_timeout_s: int = 30  # SIGTERM: how long in-flight requests may take to finish
    log_verbose: int = 0

    def ports(self) -> dict[str, int]:
        return {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}


@dataclass(frozen=True)
class StopReport:
    """How a stop went: requests answered after the stop signal, and those that were not (failed, cut off)."""

    answered: int
    failed: int
    triton_exit_code: int | None
    log: Path

    @property
    def drained(self) -> bool:
        """Every request in flight answered, and Triton exited by itself (None: it had to be killed)."""
        return self.failed == 0 and self.triton_exit_code is not None


def preferred_batch_sizes(fuser: Fuser, max_batch: int) -> list[int]:
    """The batch sizes Triton should aim for: the backend's own batch (a static graph runs exactly that many, a
    dynamic one is fastest at its largest), capped by the server's ``max_batch``."""
    backend_batch = fuser.backend.max_batch or fuser.batch_size
    return [min(backend_batch, max_batch)]


def fuse_requests(fuser: Fuser, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    """One Triton batch of requests -> one response per request (layouts: serve/protocol.py).

    Every pair of every request goes through one ``fuser.fuse_batch`` call, so the backend sees the batch Triton
    formed. ``requests`` are mappings of input name -> array with the batch axis first. A malformed request
    raises :class:`RequestError` naming the request, what is wrong and the fix; it becomes the error reply.
    """
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    names: list[str] = []
    counts: list[int] = []
    grey_vis: list[bool] = []
    for index, request in enumerate(requests):
        data = dict(request.items())
        irs = [data[name] for name in (INPUT_IR, INPUT_IR16) if name in data]
        if len(irs) != 1:
            raise RequestError(
                f"request {index}: send exactly one of the inputs {INPUT_IR!r} (UINT8) or {INPUT_IR16!r} (UINT16)",
                fix="one IR frame per pair, 8-bit as 'ir' or 16-bit as 'ir16'",
            )
        ir, vis = irs[0], data.get(INPUT_VIS)
        if vis is None:
            raise RequestError(f"request {index}: the input {INPUT_VIS!r} is missing",
                               fix="send the VIS frame as 'vis', UINT8 [batch, H, W, 3] (BGR) or [batch, H, W, 1]")
        if ir.ndim != 3 or vis.ndim != 4 or vis.shape[3] not in VIS_CHANNELS:
            raise RequestError(
                f"request {index}: IR is {list(ir.shape)} and VIS {list(vis.shape)}",
                fix="send IR as [batch, H, W] and VIS as [batch, H, W, 3] (BGR) or [batch, H, W, 1] (grey)",
            )
        if ir.shape[0] != vis.shape[0]:
            raise RequestError(f"request {index}: {ir.shape[0]} IR frames but {vis.shape[0]} VIS frames",
                               fix="send one VIS frame per IR frame")
        if ir.shape[1:3] != vis.shape[1:3]:
            raise RequestError(
                f"request {index}: IR is {ir.shape[2]}x{ir.shape[1]} but VIS is {vis.shape[2]}x{vis.shape[1]} (WxH)",
                fix="register the pair to one size before sending it (the server fuses registered pairs)",
            )
        for row in range(ir.shape[0]):
            frame = vis[row, :, :, 0] if vis.shape[3] == 1 else vis[row]
            pairs.append((ir[row], frame))
            names.append(f"request {index} pair {row}")
        counts.append(ir.shape[0])
        grey_vis.append(vis.shape[3] == 1)
    try:
        fused = fuser.fuse_batch(pairs, names=names)
    except InputError as exc:  # a pair the Fuser refuses (too small, over the memory limit, ...)
        raise RequestError(str(exc)) from None
    responses, start = [], 0
    for count, grey in zip(counts, grey_vis, strict=True):
        images = fused[start : start + count]
        start += count
        stacked = np.stack([image[:, :, None] if grey else image for image in images])
        responses.append({OUTPUT_FUSED: np.ascontiguousarray(stacked, dtype=np.uint8)})
    return responses


def warm_up(fuser: Fuser) -> None:
    """Fuse one small pair through :func:`fuse_requests` before Triton starts: readiness then means the model
    answers (first-call allocations, lazy initialisation and a broken backend show here, not at a client)."""
    height, width = WARM_UP_SIZE
    request = {INPUT_IR: np.zeros((1, height, width), np.uint8), INPUT_VIS: np.zeros((1, height, width, 3), np.uint8)}
    fuse_requests(fuser, [request])


def set_torch_threads(count: int) -> None:
    """torch's intra-op threads for this process (the CPU backends' matrix products)."""
    import torch

    torch.set_num_threads(count)


def python_library_environment(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Put this interpreter's libpython directory first on ``LD_LIBRARY_PATH`` for the processes Triton starts.

    Triton's Python-backend stub links ``libpython3.X``; without this it can pick the system's copy (Debian's
    3.11.2) while loading this venv's standard library (pyenv's 3.11.7), and the model fails to load with
    "'_thread.RLock' object has no attribute '_recursion_count'" (DESIGN 4). Returns the directory added.
    """
    env = os.environ if environ is None else environ
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not Path(libdir).is_dir():
        return None
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in current if p != libdir]])
    return libdir


def require_pytriton() -> Any:
    """PyTriton's ``pytriton.triton`` module, or :class:`UnavailableError` naming the serving venv."""
    try:
        import pytriton.triton as triton_module
    except ImportError as exc:  # missing, or installed against numpy 2 (it needs numpy < 2)
        raise UnavailableError(f"PyTriton cannot be imported here ({exc})", fix=SERVE_VENV_FIX) from exc
    return triton_module


def check_settings(settings: ServeSettings) -> None:
    """Refuse, before anything loads: a model name Triton would refuse, ports that clash with each other or that
    something already holds (Triton would fail to bind them, and a client could reach whatever holds them)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", settings.model_name):
        raise InputError(f"model name {settings.model_name!r} is not one Triton accepts",
                         fix="use letters, digits, '.', '_' and '-' (--model-name)")
    seen: dict[int, str] = {}
    for role, port in settings.ports().items():
        if port in seen:
            raise InputError(f"--{seen[port].lower()}-port and --{role.lower()}-port are both {port}",
                             fix="give the HTTP, gRPC and metrics endpoints a port each")
        seen[port] = role
    for role, port in settings.ports().items():
        check_port_free(settings.host, port, role)


def check_port_free(host: str, port: int, role: str) -> None:
    """Refuse a port something already listens on."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen for {role} on {host}:{port}: {exc.strerror or exc}",
                             fix=f"pick a free port (--{role.lower()}-port) or stop what holds it") from exc


def serve(
    fuser: Fuser,
    settings: ServeSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> StopReport:
    """Serve ``fuser`` until SIGTERM or SIGINT, then drain in-flight requests and report how that went.

    ``on_ready`` receives a one-line description of the endpoints once the model answers. Raises
    :class:`MaeFuseError` when Triton exits at start, :class:`UnavailableError` when it stops on its own, and
    KeyboardInterrupt for a signal before the server was ready (nothing was in flight).
    """
    triton_module = require_pytriton()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.utils.workspace import Workspace

    logging.getLogger("pytriton").setLevel(logging.INFO if settings.log_verbose else logging.ERROR)
    max_batch = settings.max_batch or fuser.batch_size
    if max_batch < 1:
        raise InputError(f"max batch must be at least 1, got {max_batch}")
    if settings.queue_delay_us < 0:
        raise InputError(f"queue delay must be >= 0 microseconds, got {settings.queue_delay_us}")
    preferred = preferred_batch_sizes(fuser, max_batch)
    check_settings(settings)
    warm_up(fuser)
    python_library_environment()
    descriptor, name = tempfile.mkstemp(prefix="maefuse-serve-triton-", suffix=".log")
    os.close(descriptor)
    log = Path(name)
    config = triton_module.TritonConfig(
        http_address=settings.host,
        http_port=settings.http_port,
        grpc_address=settings.host,
        grpc_port=settings.grpc_port,
        metrics_address=settings.host,
        metrics_port=settings.metrics_port,
        allow_metrics=True,
        allow_gpu_metrics=str(getattr(fuser.backend, "device", "cpu")).startswith("cuda"),
        exit_timeout_secs=settings.exit_timeout_s,
        log_verbose=settings.log_verbose,
        log_file=log,
    )
    ledger = _Ledger(fuser)
    stop = threading.Event()

    def ask_to_stop(signum: int, frame: Any) -> None:
        stop.set()  # the main loop stops Triton in order; a second signal changes nothing

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workspace = Workspace()
    # The model goes into the repository Triton starts with (not loaded afterwards through its API), so Triton
    # opens its endpoints only once the model is loaded: /v2/health/ready cannot answer before the model does.
    triton = triton_module.Triton(
        config=config, workspace=workspace,
        triton_lifecycle_policy=triton_module.TritonLifecyclePolicy(launch_triton_on_startup=False,
                                                                    local_model_store=True))
    server: _TritonProcess | None = None
    try:
        triton.bind(
            model_name=settings.model_name,
            infer_func=ledger.infer,
            inputs=[
                Tensor(name=INPUT_IR, dtype=np.uint8, shape=(-1, -1), optional=True),
                Tensor(name=INPUT_IR16, dtype=np.uint16, shape=(-1, -1), optional=True),
                Tensor(name=INPUT_VIS, dtype=np.uint8, shape=(-1, -1, -1)),
            ],
            outputs=[Tensor(name=OUTPUT_FUSED, dtype=np.uint8, shape=(-1, -1, -1))],
            config=ModelConfig(
                max_batch_size=max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=settings.queue_delay_us,
                                       preferred_batch_size=preferred),
            ),
            strict=True,
        )
        _use_one_line_replies(workspace.model_store_path / settings.model_name / "1")
        server = _TritonProcess(triton)
        _wait_until_ready(server, settings, log, stop)
        triton.connect()  # the proxy model's link to this process; Triton is up, so this is quick
        if on_ready is not None:
            on_ready(
                f"serving {settings.model_name!r} on http://{settings.host}:{settings.http_port} and grpc "
                f"{settings.host}:{settings.grpc_port}, metrics http://{settings.host}:{settings.metrics_port}"
                f"/metrics; max batch {max_batch}, preferred {preferred}, queue delay {settings.queue_delay_us}"
                f" us; Triton's log: {log}"
            )
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise UnavailableError(
                    f"Triton stopped serving on its own: the server or its Python backend exited "
                    f"({_log_cause(log, server.console())})", fix=f"read Triton's log {log}")
        report = _drain(server, ledger, settings, log)
    finally:
        if server is not None:
            server.release()
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if report.drained:
        log.unlink(missing_ok=True)
    return report


class _Ledger:
    """Counts the requests this process fuses, so that a stop can say how many were answered and how many were
    not; and turns any failure into a one-line :class:`RequestError` reply (the traceback goes to this log)."""

    def __init__(self, fuser: Fuser) -> None:
        self._fuser = fuser
        self._lock = threading.Lock()
        self.running = 0
        self.answered = 0
        self.failed = 0

    def infer(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        count = len(requests)
        with self._lock:
            self.running += count
        try:
            responses = fuse_requests(self._fuser, requests)
        except RequestError:
            with self._lock:
                self.answered += count  # an error reply to a malformed request is its answer
            raise
        except Exception as exc:
            LOGGER.error("fusing a batch of %d request(s) failed", count, exc_info=True)
            with self._lock:
                self.failed += count
            raise RequestError(f"the server could not fuse this request's batch: {type(exc).__name__}: {exc}",
                               fix="retry; if it persists, read the server's log") from None
        finally:
            with self._lock:
                self.running -= count
        with self._lock:
            self.answered += count
        return responses

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.answered, self.failed, self.running


class _TritonProcess:
    """The ``tritonserver`` process PyTriton starts, reached through PyTriton 0.7.0's private attributes in this
    one place (the ``serve`` extra pins nvidia-pytriton==0.7.0): PyTriton exposes neither the process's session
    nor its console nor its exit status, and the ordered stop needs all three."""

    def __init__(self, triton: Any) -> None:
        sh = importlib.import_module("sh")  # PyTriton's process launcher (a dependency of nvidia-pytriton)

        # Its own session (sh's documented ``_new_session``, as the default while PyTriton starts it): a signal to
        # this process's group must not reach Triton or the processes it starts (the proxy's shared-memory store
        # dies of SIGTERM, failing every request in flight); this process stops them in order instead.
        defaults = sh.Command._call_args
        previous = defaults["new_session"]
        defaults["new_session"] = True
        try:
            triton._initialize_server()
            self._server = triton._triton_server
            self._server._verbose = False  # its console (usage text on a bad option) is kept, not printed
            triton._run_server()
        finally:
            defaults["new_session"] = previous
        self._command = self._server._tritonserver_running_cmd
        self.pid: int = self._command.pid
        self._exit_code: int | None = None
        # PyTriton stops itself from Triton's exit callback, in the thread that saw Triton exit: that races this
        # process's ordered stop (and the interpreter's exit). Held back here; release() hands it back.
        self._on_exit = triton._on_tritonserver_exit
        self._server.unregister_on_exit(self._on_exit)

    def release(self) -> None:
        """Give PyTriton its exit callback back, which its stop() expects to find (and unregisters)."""
        self._server.register_on_exit(self._on_exit)

    def exit_code(self) -> int | None:
        """None while it runs."""
        if self._exit_code is not None:
            return self._exit_code
        alive, code = self._command.process.is_alive()
        if alive:
            return None
        with contextlib.suppress(Exception):  # its console reader may still hold the last lines: let it finish
            self._command.wait(timeout=5)
        seen, deadline = "", time.monotonic() + 2
        while time.monotonic() < deadline and (not seen or seen != self.console()):
            seen = self.console()
            time.sleep(0.2)
        self._exit_code = int(code)
        return self._exit_code

    def console(self) -> str:
        return str(self._server.logs())


def _wait_until_ready(server: _TritonProcess, settings: ServeSettings, log: Path, stop: threading.Event) -> None:
    """Wait for Triton's readiness, noticing at once when Triton exits (PyTriton would wait 120 s for it)."""
    url = f"http://{_local_address(settings.host)}:{settings.http_port}/v2/health/ready"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = server.exit_code()
        if code is not None:
            raise MaeFuseError(f"Triton exited at start (exit code {code}): {_log_cause(log, server.console())}",
                               fix=f"read Triton's log {log}")
        if stop.is_set():
            _stop_triton(server, UNLOAD_GRACE_S)
            raise KeyboardInterrupt
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    _stop_triton(server, UNLOAD_GRACE_S)
    raise MaeFuseError(f"Triton did not become ready within {START_TIMEOUT_S:.0f} s", fix=f"read Triton's log {log}")


def _stop_triton(server: _TritonProcess, timeout_s: float) -> int | None:
    """SIGTERM (Triton: stop taking requests, finish those accepted, unload, exit), then wait; SIGKILL at the end.
    Returns Triton's exit code, None when it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = server.exit_code()
        if code is not None:
            return code
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGKILL)
    return None


def _drain(server: _TritonProcess, ledger: _Ledger, settings: ServeSettings, log: Path) -> StopReport:
    """Stop Triton in order and count what happened to the requests in flight.

    Triton answers every request it accepted before it exits by itself (past its exit timeout it stops waiting
    but still finishes them while unloading; measured), so then the failures are those this process could not
    fuse or was still fusing, and batches that broke on their way back (Triton logs each). When the drain's time
    (``exit_timeout_s`` + unload) is up and Triton has to be killed, the requests it counted in flight at the
    signal and that were not answered since are lost too.
    """
    answered_before, failed_before, _ = ledger.snapshot()
    log_offset = log.stat().st_size if log.exists() else 0
    code = _stop_triton(server, settings.exit_timeout_s + UNLOAD_GRACE_S)
    time.sleep(0.2)  # a reply on its way when Triton exited reaches the ledger first
    answered, failed, running = ledger.snapshot()
    after = _read_from(log, log_offset)
    lost = max(failed - failed_before, running)
    if code is None:
        lost = max(lost, _in_flight_at_stop(after) - (answered - answered_before))
    broken = len(re.findall(r"Failed to process the request", after))
    return StopReport(answered=answered - answered_before, failed=lost + broken, triton_exit_code=code, log=log)


def _in_flight_at_stop(log_text: str) -> int:
    """Triton's own count of the requests in flight when its drain began (its first line about them)."""
    found = re.search(r"Found 0 model versions that have in-flight|has (\d+) in-flight inferences", log_text)
    return int(found.group(1)) if found and found.group(1) else 0


def _local_address(host: str) -> str:
    """Where this process reaches a server listening on ``host`` (URL form)."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


def _read_from(path: Path, offset: int) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")
    return ""


_TRITON_PREFIX = re.compile(r'^[EW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?')


def _log_cause(log: Path, console: str) -> str:
    """Triton's own complaint in one line: its last error lines (log file and console), prefixes dropped."""
    lines = [*_read_from(log, 0).splitlines(), *console.splitlines()]
    wanted = re.compile(r"^E\d{4} |error|invalid|bad option|failed|cannot|unable", re.IGNORECASE)
    found = [_TRITON_PREFIX.sub("", line).strip().rstrip('"') for line in lines
             if wanted.search(line) and not line.startswith((" ", "\t"))]
    found = [line.split("\\n")[0] for line in found if line]
    return "; ".join(dict.fromkeys(found[-2:])) or "no error in its log"


# The model Triton loads: PyTriton's proxy model (renamed pytriton_proxy.py beside it), whose execute() answers a
# refused request with that request's one-line error instead of raising a batch-wide traceback.
_ONE_LINE_MODEL = '''"""PyTriton's proxy model, one-line error replies (written by maefuse_deploy/serve/server.py)."""
import re

import triton_python_backend_utils as pb_utils

from .pytriton_proxy import TritonPythonModel as PyTritonProxyModel

REFUSAL = re.compile(r"^(?:maefuse_deploy\\.serve\\.server\\.)?RequestError: (.*?)(?:\\\\n.*)?$", re.MULTILINE)


class TritonPythonModel(PyTritonProxyModel):
    def execute(self, requests):
        try:
            return super().execute(requests)
        except pb_utils.TritonModelException as exc:
            text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
            found = REFUSAL.findall(text)
            if not found:
                raise
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(found[-1].strip())) for _ in requests]
'''


def _use_one_line_replies(version_folder: Path) -> None:
    proxy = version_folder / "model.py"
    proxy.rename(version_folder / "pytriton_proxy.py")
    proxy.write_text(_ONE_LINE_MODEL)
