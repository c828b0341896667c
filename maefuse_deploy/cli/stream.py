"""maefuse-stream: fuse two live or recorded sources into a video, images, or a GStreamer pipeline."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from ..contract import DEFAULT_BATCH_SIZE
from ..errors import MaeFuseError
from ..model.sources import TRAINED_NAMES
from ..processing import POLICIES as PROCESSING_POLICIES
from ..registration import load_registration
from ..runtime.fuser import Fuser
from ..stream.metrics import MetricsServer
from ..stream.pipeline import PAIRINGS, POLICIES, Pipeline, open_endpoints
from ..stream.sinks import VideoFileSink
from ..stream.sources import Reconnect
from .common import note, note_backend_events, note_model, report_errors
from .options import backend_option, batch_size_option, deprecated, device_option, model_option, processing_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ir", required=True, help="IR source: video file, /dev/videoN or index, rtsp:// or http:// URL, or a "
              "GStreamer pipeline string (contains '!')")
@click.option("--vis", required=True, help="VIS source (same kinds)")
@click.option("--out", required=True, help="video file (.mp4, .mkv, .avi), folder (image sequence) or a GStreamer "
              "pipeline string fed through appsrc")
@click.option("--overwrite", is_flag=True, help="replace an existing video (only when the stream ends without an "
              "error) or the frames of an earlier run in the --out folder (refused by default)")
@click.option("--homography", type=click.Path(path_type=Path), help="IR-to-VIS calibration from maefuse-calibrate")
@click.option("--pair", type=click.Choice(PAIRINGS), default="timestamp", show_default=True,
              help="timestamp: nearest partner within the tolerance; index: frame n with frame n (lockstep files)")
@click.option("--ir-offset-ms", type=float, default=0.0, show_default=True,
              help="added to every IR timestamp before pairing (the IR camera's fixed delay, negated)")
@click.option("--tolerance-ms", type=click.FloatRange(min=0.0), help="largest timestamp gap of a pair [default: "
              "half the slower source's frame period]")
@click.option("--queue-policy", type=click.Choice(POLICIES), help="full queues: drop-oldest (latency first) or block "
              "(lose nothing); auto: block for files, drop-oldest when a source is live  [default: auto]")
@click.option("--policy", "old_policy", type=click.Choice([*POLICIES, *PROCESSING_POLICIES]), hidden=True)
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=4, show_default=True,
              help="depth of each queue")
@click.option("--max-latency-ms", type=click.FloatRange(min=0.0, min_open=True),
              help="drop pairs older than this before fusing them")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0.0),
              help="how long the fuse stage waits for a full batch [default: 50 with block, 0 with drop-oldest]")
@click.option("--side-by-side", is_flag=True, help="write IR | VIS | fused panels instead of the fused frame")
@click.option("--lossless", is_flag=True, help="lossless video (FFV1; name the output .mkv)")
@click.option("--fps", type=click.FloatRange(min=0.0, min_open=True, max=1000.0),
              help="output frame rate [default: the VIS source's]")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), help="stop after this many pairs")
@click.option("--raw-ir", is_flag=True, help="ask a V4L2 IR camera for raw (16-bit) frames (V4L2 only: 16-bit video "
              "files are read as 16-bit without it)")
@model_option(f"checkpoint file, .onnx graph, engine, a trained model's name ({TRAINED_NAMES}), or "
              "random:CONFIG for "
              "random weights [default: the built-in model]")
@click.option("--config", help="model config name, when the checkpoint does not say (needs --model)")
@backend_option()
@device_option("auto", "auto is cuda when a GPU is visible (TensorRT engines: cuda), else cpu")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8", "int8-bf16"]),
              help="[default: the backend's: torch float32, openvino-weights the fastest within 40 dB of float32]")
@processing_option(old=None)
@batch_size_option(DEFAULT_BATCH_SIZE, "largest number of waiting pairs fused in one call", batch_alias=True)
@click.option("--reconnect/--no-reconnect", default=True, show_default=True,
              help="reopen a live source (camera, URL, live GStreamer pipeline) that drops or stalls, with backoff; "
              "files never reconnect")
@click.option("--stall-s", type=click.FloatRange(min=0.0, min_open=True), default=Reconnect.stall_s,
              show_default=True, help="a live source with no frame for this long is in an outage")
@click.option("--give-up-s", type=click.FloatRange(min=0.0, min_open=True), default=Reconnect.give_up_s,
              show_default=True, help="end the stream when an outage lasts longer than this")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="serve the pipeline's counters as Prometheus "
              "metrics at http://HOST:PORT/metrics (0: any free port)")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="address of the metrics endpoint")
@click.option("--quiet", "-q", is_flag=True, help="no status line")
@report_errors
def main(ir: str, vis: str, out: str, overwrite: bool, homography: Path | None, pair: str, ir_offset_ms: float,
         tolerance_ms: float | None, queue_policy: str | None, old_policy: str | None, queue_size: int,
         max_latency_ms: float | None,
         batch_wait_ms: float | None, side_by_side: bool, lossless: bool, fps: float | None,
         max_frames: int | None, raw_ir: bool,
         model: str | None, config: str | None, backend: str | None, device: str, dtype: str | None,
         processing: str | None, batch_size: int, reconnect: bool, stall_s: float, give_up_s: float,
         metrics_port: int | None, metrics_host: str,
         quiet: bool) -> None:
    """Fuse an IR and a VIS stream live: pair by timestamp, register, fuse in batches, write."""
    queue_policy, processing = _old_policy(old_policy, queue_policy, processing)
    registration = load_registration(homography) if homography is not None else None
    # Sources, sizes and the output are checked before the model loads: a bad source costs no model load.
    ends = open_endpoints(ir, vis, out, registration=registration, pair=pair, fps=fps, lossless=lossless,
                          overwrite=overwrite, raw_ir=raw_ir,
                          reconnect=Reconnect(enabled=reconnect, stall_s=stall_s, give_up_s=give_up_s))
    for warning in ends.warnings:
        note(f"warning: {warning}")
    metrics = None
    try:
        # The metrics port is bound before the model loads too: a port in use costs nothing.
        metrics = MetricsServer(metrics_port, metrics_host) if metrics_port is not None else None
        fuser = Fuser.open(model, backend, device=device, dtype=dtype, policy=processing,  # type: ignore[arg-type]
                           config=config, batch_size=batch_size)
    except BaseException:
        ends.close()
        if metrics is not None:
            metrics.close()
        raise
    note_model(fuser)
    with fuser:
        pipeline = Pipeline(
            fuser, ends.ir, ends.vis, sink=ends.sink, registration=registration, pair=pair,
            tolerance=tolerance_ms / 1000.0 if tolerance_ms is not None else None, ir_offset=ir_offset_ms / 1000.0,
            policy=queue_policy, queue_size=queue_size, max_latency_ms=max_latency_ms, batch_wait_ms=batch_wait_ms,
            side_by_side=side_by_side,
            fps=ends.output_fps, max_frames=max_frames,
        )
        if metrics is not None:
            metrics.watch(pipeline)
            note(f"metrics: {metrics.url}")
        signals: list[str] = []

        def on_signal(number: int, _frame: FrameType | None) -> None:
            signals.append(signal.Signals(number).name)
            if len(signals) == 1:
                pipeline.stop()  # drain what is queued, close the output
            else:
                pipeline.abort()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            note(f"streaming ({pipeline.policy}, pairing by {pair}) to {out}; Ctrl-C stops")
            pipeline.start()
            tty = sys.stderr.isatty()
            while not pipeline.wait(0.5 if tty else 2.0):
                if not quiet:
                    click.echo(("\r" if tty else "") + pipeline.stats.line(), err=True, nl=not tty)
            if tty and not quiet:
                click.echo("", err=True)
            try:
                stats = pipeline.join()
            except MaeFuseError:
                # The output is closed and valid: say what it holds, then the one-line error.
                click.echo(pipeline.stats.summary())
                if isinstance(ends.sink, VideoFileSink) and ends.sink.replaces:
                    click.echo(f"{out} keeps the earlier video: the {pipeline.stats.written} frames fused before "
                               "the error were not written over it")
                else:
                    click.echo(f"wrote {pipeline.stats.written} fused frames to {out} before the error")
                raise
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            if metrics is not None:
                metrics.close()
    note_backend_events(fuser)
    if signals:
        note(f"stopped on {signals[0]}")
    click.echo(stats.summary())
    click.echo(f"wrote {stats.written} fused frames to {out}")


def _old_policy(old: str | None, queue_policy: str | None, processing: str | None) -> tuple[str, str | None]:
    """``--policy`` was the queue policy here but the processing policy in fuse and serve: an old value of either
    kind still works, with a note naming its new option."""
    if old in PROCESSING_POLICIES:
        deprecated(f"--policy {old}", f"--processing {old}")
        processing = processing or old
    elif old is not None:
        deprecated("--policy", "--queue-policy")
        queue_policy = queue_policy or old
    return queue_policy or "auto", processing


if __name__ == "__main__":
    main()
