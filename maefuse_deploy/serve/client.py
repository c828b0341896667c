"""RemoteFuser: the Fuser interface over a Triton server (``maefuse-serve``), through NVIDIA's ``tritonclient``.

``fuse``/``fuse_batch``/``batch_size``/``close`` behave like :class:`maefuse_deploy.Fuser`'s, so the file and video
helpers (runtime/files.py, runtime/video.py) fuse the same folder the same way locally or remotely. Images in and
out follow OpenCV like the Fuser's: IR HxW (or HxWx3/4, converted to grey) uint8 or uint16; VIS HxWx3 BGR, HxW grey,
BGRA or 16-bit (converted as the Fuser converts them); fused HxWx3 BGR uint8 (HxW grey for a grey VIS).

Each pair is its own request and up to ``batch_size`` are in flight at once, so the server's dynamic batcher, not
the client, decides the batch (requests from many cameras share it). Wire layouts: serve/protocol.py.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np

from ..contract import DEFAULT_BATCH_SIZE
from ..errors import InputError, UnavailableError
from ..processing import check_pair, vis_to_bgr8
from .protocol import DEFAULT_MODEL_NAME, INPUT_IR, INPUT_IR16, INPUT_VIS, OUTPUT_FUSED

SCHEMES = ("http", "grpc")
CLIENT_FIX = 'install Triton\'s client: pip install "maefuse-deploy[client]"'


def parse_server_url(url: str) -> tuple[str, str]:
    """``grpc://host:port`` -> ("grpc", "host:port"); ``http://host:port`` or ``host:port`` -> ("http", ...)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in SCHEMES or not parsed.hostname or parsed.port is None:
        raise InputError(
            f"server URL {url!r} is not http://HOST:PORT or grpc://HOST:PORT",
            fix="e.g. --server http://127.0.0.1:8000 or --server grpc://127.0.0.1:8001",
        )
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


def request_arrays(ir: np.ndarray, vis: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """One OpenCV pair -> (IR input name, IR [1, H, W], VIS [1, H, W, C]) as the server takes them."""
    if ir.ndim == 3:  # colour IR: grey here, in its own bit depth, as the Fuser's ir_to_grey8 does first
        ir = ir[:, :, 0] if ir.shape[2] == 1 else cv2.cvtColor(
            ir, cv2.COLOR_BGRA2GRAY if ir.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    vis = vis_to_bgr8(vis)
    if vis.ndim == 2:
        vis = vis[:, :, None]
    name = INPUT_IR16 if ir.dtype == np.uint16 else INPUT_IR
    return name, np.ascontiguousarray(ir)[None], np.ascontiguousarray(vis)[None]


def server_message(exc: BaseException) -> str:
    """The useful line of a Triton error, for one-line reports.

    Triton's own refusals (type, shape) are one line; a refusal from the model comes as PyTriton's forwarded
    traceback, whose exception line (``maefuse_deploy.errors.InputError: ...``) says what, followed by the stub's
    ``At:`` frames.
    """
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = raised[-1] if raised else (lines[0] if lines else type(exc).__name__)
    return _REQUEST_ID.sub("", line).removeprefix("maefuse_deploy.errors.")


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_REQUEST_ID = re.compile(r"\[request id: [^\]]*\] ")


class RemoteFuser:
    """Fuses pairs on a Triton server that runs ``maefuse-serve`` (or any server with the same model contract)."""

    def __init__(
        self, url: str, *, model_name: str = DEFAULT_MODEL_NAME, batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_s: float = 120.0,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.url = url
        self.protocol, self.address = parse_server_url(url)
        self.model_name = model_name
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.warnings: list[str] = []
        self._module = _client_module(self.protocol)
        if self.protocol == "http":
            self._client = self._module.InferenceServerClient(
                self.address, concurrency=batch_size, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self._client = self._module.InferenceServerClient(self.address)
        self._check_ready()
        self.description = f"Triton server {self.protocol}://{self.address}, model {model_name!r}"

    def _check_ready(self) -> None:
        start = f"start one with maefuse-serve (docs/serving.md), or check --server {self.url}"
        try:
            live = self._client.is_server_live()
            ready = live and self._client.is_model_ready(self.model_name)
        except Exception as exc:  # tritonclient raises its own and the transport's exception types
            self.close()
            raise UnavailableError(f"no Triton server answers at {self.url}: {server_message(exc)}", fix=start) from exc
        if not ready:
            self.close()
            raise UnavailableError(f"Triton server at {self.url} has no ready model {self.model_name!r}", fix=start)

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return self.fuse_batch([(ir, vis)])[0]

    def fuse_batch(self, pairs: Sequence[tuple[Any, Any]], names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Fuse ``pairs``, ``batch_size`` requests in flight at a time; results in the order given."""
        labels = list(names) if names is not None else [f"pair {i}" for i in range(len(pairs))]
        requests = []
        for (ir, vis), label in zip(pairs, labels, strict=True):
            ir, vis = np.asarray(ir), np.asarray(vis)
            check_pair(ir, vis, label)  # the Fuser's own check and message, before anything is sent
            requests.append(request_arrays(ir, vis))
        results: list[np.ndarray] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            results.extend(self._send(chunk, labels[start : start + self.batch_size]))
        return results

    def _inputs(self, ir_name: str, ir: np.ndarray, vis: np.ndarray) -> list[Any]:
        inputs = [
            self._module.InferInput(ir_name, list(ir.shape), "UINT16" if ir.dtype == np.uint16 else "UINT8"),
            self._module.InferInput(INPUT_VIS, list(vis.shape), "UINT8"),
        ]
        if self.protocol == "http":
            inputs[0].set_data_from_numpy(ir, binary_data=True)
            inputs[1].set_data_from_numpy(vis, binary_data=True)
        else:
            inputs[0].set_data_from_numpy(ir)
            inputs[1].set_data_from_numpy(vis)
        return inputs

    def _send(self, chunk: list[tuple[str, np.ndarray, np.ndarray]], labels: list[str]) -> list[np.ndarray]:
        outputs = [self._module.InferRequestedOutput(OUTPUT_FUSED, **({"binary_data": True}
                                                                     if self.protocol == "http" else {}))]
        answers: list[Any] = []
        if self.protocol == "http":
            pending = [self._client.async_infer(self.model_name, self._inputs(*arrays), outputs=outputs,
                                                timeout=int(self.timeout_s * 1e6)) for arrays in chunk]
            for handle in pending:
                try:
                    answers.append(handle.get_result(timeout=self.timeout_s))
                except Exception as exc:
                    answers.append(exc)
        else:
            done: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
            for index, arrays in enumerate(chunk):
                self._client.async_infer(
                    self.model_name, self._inputs(*arrays), outputs=outputs, client_timeout=self.timeout_s,
                    callback=lambda result, error, index=index: done.put((index, result, error)),
                )
            by_index: dict[int, Any] = {}
            for _ in chunk:
                try:
                    index, result, error = done.get(timeout=self.timeout_s + 5)
                except queue.Empty:
                    raise UnavailableError(
                        f"Triton server at {self.url} did not answer within {self.timeout_s:.0f} s",
                        fix="check the server's log, or raise the client timeout",
                    ) from None
                by_index[index] = error if error is not None else result
            answers = [by_index[i] for i in range(len(chunk))]
        fused = []
        for answer, label, (_, _, vis) in zip(answers, labels, chunk, strict=True):
            if isinstance(answer, BaseException):
                raise InputError(f"{label}: the server at {self.url} refused it: {server_message(answer)}")
            image = answer.as_numpy(OUTPUT_FUSED)
            if image is None or image.shape[1:3] != vis.shape[1:3]:
                raise InputError(f"{label}: the server at {self.url} answered without a fused image of the VIS size")
            image = image[0]
            fused.append(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image))
        return fused

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    def __enter__(self) -> RemoteFuser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client_module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise UnavailableError(f"tritonclient ({protocol}) cannot be imported: {exc}", fix=CLIENT_FIX) from exc
    return module
