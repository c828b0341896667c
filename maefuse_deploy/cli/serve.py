"""maefuse-serve: serve the Fuser from a Triton Inference Server (PyTriton), HTTP + gRPC + metrics."""

from __future__ import annotations

import dataclasses
from typing import cast

import click

from ..errors import MaeFuseError
from ..processing import Policy
from ..runtime.fuser import Fuser
from ..serve.server import ServeSettings, check_settings, require_pytriton, serve, set_torch_threads
from .common import note, note_backend_events, note_model, report_errors
from .options import backend_option, device_option, model_option, processing_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_option("checkpoint file, .onnx graph or engine; random:CONFIG for random weights (e.g. random:maefuse-micro) "
              "[default: the built-in model]")
@click.option("--config", help="model config name, when the checkpoint does not say")
@backend_option()
@device_option("auto", "auto is cuda for TensorRT engines, else cpu")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8", "int8-bf16"]),
              help="[default: the backend's: torch float32, openvino-weights the fastest within 40 dB of float32]")
@processing_option()
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="largest batch Triton forms (capped by the backend's own largest batch)")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="how long Triton may hold a request to fill a batch (microseconds)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: all)")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--model-name", default="maefuse", show_default=True)
@click.option("--exit-timeout", type=click.IntRange(min=0), default=30, show_default=True,
              help="on SIGTERM/SIGINT, seconds in-flight requests may take to finish")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch intra-op threads on CPU [default: torch's]; on a shared CPU, 1 avoids threads waiting on "
              "each other (benchmarks/serving.md)")
@click.option("--verbose", "-v", count=True, help="Triton's verbose log level")
@report_errors
def main(model: str | None, config: str | None, backend: str | None, device: str, dtype: str | None,
         processing: str | None, max_batch: int, queue_delay_us: int, host: str, http_port: int, grpc_port: int,
         metrics_port: int, model_name: str, exit_timeout: int, threads: int | None, verbose: int) -> None:
    """Serve MaeFuse from a real Triton Inference Server until SIGTERM/SIGINT (which drain in-flight requests)."""
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    for option, port in ports.items():
        clash = [other for other, value in ports.items() if value == port and other != option]
        if clash:
            raise click.UsageError(f"{option} and {clash[0]} are both {port}: each endpoint needs its own port")
    settings = ServeSettings(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             model_name=model_name, max_batch=max_batch, queue_delay_us=queue_delay_us,
                             exit_timeout_s=exit_timeout, log_verbose=verbose)
    require_pytriton()  # every check before the model loads
    check_settings(settings)
    if threads is not None:
        set_torch_threads(threads)
    fuser = Fuser.open(model, backend, device=device, dtype=dtype, policy=cast(Policy | None, processing),
                       config=config, batch_size=max_batch)
    note_model(fuser, f" (policy {fuser.policy}, batch {fuser.batch_size})")
    with fuser:
        report = serve(fuser, dataclasses.replace(settings, max_batch=fuser.batch_size),
                       on_ready=lambda line: _ready(fuser, line))
    if not report.drained:
        raise MaeFuseError(
            f"stopped, not drained: {report.failed} in-flight request(s) failed or were cut off, {report.answered} "
            f"answered (Triton exit code {report.triton_exit_code})",
            fix=f"raise --exit-timeout if the drain ran out of time; Triton's log: {report.log}")
    note(f"stopped: in-flight requests drained ({report.answered} answered after the stop signal)")


def _ready(fuser: Fuser, line: str) -> None:
    note_backend_events(fuser)  # the warm-up's first-use work (a compile, a cache hit)
    note(f"ready: {line}")

