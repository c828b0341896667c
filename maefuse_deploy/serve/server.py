"""``maefuse-serve``: a real Triton Inference Server hosting a :class:`~maefuse_deploy.Fuser` through PyTriton.

PyTriton starts NVIDIA's ``tritonserver`` binary (shipped in the ``nvidia-pytriton`` wheel) with a Python-backend
proxy model; Triton does the HTTP/gRPC endpoints, health, Prometheus metrics and dynamic batching, and hands each
batch of requests to :func:`fuse_requests` in this process, which runs them through the Fuser in one
``fuse_batch`` call. Wire layouts: serve/protocol.py.

PyTriton needs numpy < 2, so it runs from its own virtual environment layered over the main one
(``scripts/serve-venv.sh``, docs/serving.md).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sysconfig
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UnavailableError
from ..runtime.fuser import Fuser
from .protocol import INPUT_IR, INPUT_IR16, INPUT_VIS, OUTPUT_FUSED, VIS_CHANNELS

SERVE_VENV_FIX = (
    "create the serving environment with `bash scripts/serve-venv.sh` (PyTriton needs numpy < 2, so it has its "
    "own venv) and run `.venv-serve/bin/maefuse-serve`"
)


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


def preferred_batch_sizes(fuser: Fuser, max_batch: int) -> list[int]:
    """The batch sizes Triton should aim for: the backend's own batch (a static graph runs exactly that many, a
    dynamic one is fastest at its largest), capped by the server's ``max_batch``."""
    backend_batch = fuser.backend.max_batch or fuser.batch_size
    return [min(backend_batch, max_batch)]


def fuse_requests(fuser: Fuser, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    """One Triton batch of requests -> one response per request (layouts: serve/protocol.py).

    Every pair of every request goes through one ``fuser.fuse_batch`` call, so the backend sees the batch Triton
    formed. ``requests`` are mappings of input name -> array with the batch axis first. A malformed request
    raises :class:`InputError`; Triton returns it as the error response and keeps serving.
    """
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    names: list[str] = []
    counts: list[int] = []
    grey_vis: list[bool] = []
    for index, request in enumerate(requests):
        data = dict(request.items())
        irs = [data[name] for name in (INPUT_IR, INPUT_IR16) if name in data]
        if len(irs) != 1:
            raise InputError(
                f"request {index}: send exactly one of the inputs {INPUT_IR!r} (UINT8) or {INPUT_IR16!r} (UINT16)"
            )
        ir, vis = irs[0], data.get(INPUT_VIS)
        if vis is None:
            raise InputError(f"request {index}: the input {INPUT_VIS!r} is missing")
        if ir.ndim != 3 or vis.ndim != 4 or vis.shape[3] not in VIS_CHANNELS:
            raise InputError(
                f"request {index}: IR is {list(ir.shape)} and VIS {list(vis.shape)}",
                fix="send IR as [batch, H, W] and VIS as [batch, H, W, 3] (BGR) or [batch, H, W, 1] (grey)",
            )
        if ir.shape[0] != vis.shape[0]:
            raise InputError(f"request {index}: {ir.shape[0]} IR frames but {vis.shape[0]} VIS frames")
        for row in range(ir.shape[0]):
            frame = vis[row, :, :, 0] if vis.shape[3] == 1 else vis[row]
            pairs.append((ir[row], frame))
            names.append(f"request {index} pair {row}")
        counts.append(ir.shape[0])
        grey_vis.append(vis.shape[3] == 1)
    fused = fuser.fuse_batch(pairs, names=names)
    responses, start = [], 0
    for count, grey in zip(counts, grey_vis, strict=True):
        images = fused[start : start + count]
        start += count
        stacked = np.stack([image[:, :, None] if grey else image for image in images])
        responses.append({OUTPUT_FUSED: np.ascontiguousarray(stacked, dtype=np.uint8)})
    return responses


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


def _import_pytriton() -> Any:
    try:
        import pytriton.triton as triton_module
    except ImportError as exc:  # missing, or installed against numpy 2 (it needs numpy < 2)
        raise UnavailableError(f"PyTriton cannot be imported here ({exc})", fix=SERVE_VENV_FIX) from exc
    return triton_module


def serve(
    fuser: Fuser,
    settings: ServeSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``fuser`` until SIGTERM or SIGINT, then drain in-flight requests and return.

    ``on_ready`` receives a one-line description of the endpoints once Triton reports the model ready.
    """
    triton_module = _import_pytriton()
    from pytriton.exceptions import PyTritonError
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    if not settings.log_verbose:
        logging.getLogger("pytriton").setLevel(logging.WARNING)
    max_batch = settings.max_batch or fuser.batch_size
    if max_batch < 1:
        raise InputError(f"max batch must be at least 1, got {max_batch}")
    if settings.queue_delay_us < 0:
        raise InputError(f"queue delay must be >= 0 microseconds, got {settings.queue_delay_us}")
    preferred = preferred_batch_sizes(fuser, max_batch)
    for role, port in (("HTTP", settings.http_port), ("gRPC", settings.grpc_port), ("metrics", settings.metrics_port)):
        check_port_free(settings.host, port, role)
    python_library_environment()
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
    )

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        return fuse_requests(fuser, requests)

    # SIGTERM (docker stop, Kubernetes) takes PyTriton's SIGINT path: Triton stops taking requests, waits up to
    # exit_timeout_s for those in flight, and the model is unloaded.
    stop_asked = threading.Event()

    def ask_to_stop(signum: int, frame: Any) -> None:
        stop_asked.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with triton_module.Triton(config=config) as triton:
            triton.bind(
                model_name=settings.model_name,
                infer_func=infer,
                inputs=[
                    Tensor(name=INPUT_IR, dtype=np.uint8, shape=(-1, -1), optional=True),
                    Tensor(name=INPUT_IR16, dtype=np.uint16, shape=(-1, -1), optional=True),
                    Tensor(name=INPUT_VIS, dtype=np.uint8, shape=(-1, -1, -1)),
                ],
                outputs=[Tensor(name=OUTPUT_FUSED, dtype=np.uint8, shape=(-1, -1, -1))],
                config=ModelConfig(
                    max_batch_size=max_batch,
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=settings.queue_delay_us, preferred_batch_size=preferred
                    ),
                ),
                strict=True,
            )
            triton.connect()
            if on_ready is not None:
                on_ready(
                    f"serving {settings.model_name!r} on http://{settings.host}:{settings.http_port} and grpc "
                    f"{settings.host}:{settings.grpc_port}, metrics http://{settings.host}:{settings.metrics_port}"
                    f"/metrics; max batch {max_batch}, preferred {preferred}, queue delay {settings.queue_delay_us}"
                    " us"
                )
            triton.serve()
    except KeyboardInterrupt:
        pass  # a signal during start-up: the context manager has already stopped Triton
    except (TimeoutError, PyTritonError) as exc:
        raise UnavailableError(f"Triton did not start serving: {exc}", fix="read Triton's log lines above") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stop_asked.is_set():  # PyTriton's serve() also returns when tritonserver or the proxy model died
        raise UnavailableError("Triton stopped serving on its own: the server or its Python backend exited",
                               fix="read Triton's log lines above")


def check_port_free(host: str, port: int, role: str) -> None:
    """Refuse a port something already listens on: Triton would fail to bind it and PyTriton would then wait for
    readiness from whatever holds it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen for {role} on {host}:{port}: {exc.strerror or exc}",
                             fix=f"pick a free port (--{role.lower()}-port) or stop what holds it") from exc
