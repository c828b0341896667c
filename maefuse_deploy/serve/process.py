"""Run ``maefuse-serve`` as a child process on free loopback ports: for tests, benchmarks and scripts.

The server gets its own process group, so :meth:`ServerProcess.stop` can end it whatever state it is in; its
``tritonserver`` runs in a session of its own (serve/server.py) and exits when ``maefuse-serve`` dies (PyTriton sets
its parent-death signal).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..errors import UnavailableError

REPO_SERVE_BIN = Path(__file__).resolve().parents[2] / ".venv-serve" / "bin" / "maefuse-serve"


def serve_executable() -> Path:
    """``$MAEFUSE_SERVE_BIN``, else the repository's serving venv (scripts/serve-venv.sh)."""
    return Path(os.environ.get("MAEFUSE_SERVE_BIN", REPO_SERVE_BIN))


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class ServerProcess:
    """A ``maefuse-serve`` child on 127.0.0.1 with its log in ``log``."""

    def __init__(self, log: str | os.PathLike[str], args: Sequence[str] = (), *, model: str = "maefuse",
                 executable: str | os.PathLike[str] | None = None) -> None:
        executable = Path(executable or serve_executable())
        if not executable.is_file():
            raise UnavailableError(f"no maefuse-serve at {executable}", fix="run bash scripts/serve-venv.sh")
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.model = model
        self.log = Path(log)
        command = [str(executable), "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port",
                   str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--model-name", model, *args]
        with open(self.log, "wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_url = f"grpc://127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UnavailableError(f"maefuse-serve exited with {self.process.returncode}: "
                                       f"{self.log_tail(1)}", fix=f"read {self.log}")
            with contextlib.suppress(OSError):
                if self.get(f"/v2/models/{self.model}/ready")[0] == 200:
                    return
            time.sleep(0.5)
        raise UnavailableError(f"maefuse-serve not ready after {timeout_s:.0f} s", fix=f"read {self.log}")

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        """GET ``path`` on the HTTP (or ``port``) endpoint -> (status, body)."""
        url = f"http://127.0.0.1:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str) -> float:
        """A Prometheus counter of this model (Triton's metrics endpoint)."""
        _, text = self.get("/metrics", self.metrics_port)
        match = re.search(rf'^{name}{{[^}}]*model="{self.model}"[^}}]*}} (\S+)$', text, re.MULTILINE)
        if not match:
            raise UnavailableError(f"{name} for model {self.model} is not in Triton's metrics")
        return float(match.group(1))

    def rss_mib(self) -> float:
        """Resident memory of the whole server tree (this child, tritonserver, the Python-backend stub)."""
        total, pending, seen = 0, [self.process.pid], set()
        while pending:
            pid = pending.pop()
            if pid in seen:
                continue
            seen.add(pid)
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                rss = re.search(r"VmRSS:\s+(\d+) kB", status)
                if rss is None:  # no VmRSS line: a zombie, which holds no memory
                    continue
                total += int(rss.group(1))
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(c) for c in (task / "children").read_text().split())
        return total / 1024

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the server drains), then SIGKILL to whatever is left of its process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
