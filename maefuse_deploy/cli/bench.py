"""maefuse-bench: latency, throughput and accuracy of every backend side by side; --stream for a camera view."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..atomic import check_output
from ..bench.report import check_plot_path, terminal_table, write_json, write_markdown, write_plot
from ..bench.runner import run_benchmark
from ..bench.settings import (
    BACKENDS,
    DEFAULT_CALIBRATION_PAIRS,
    BenchSettings,
    parse_backends,
    parse_batches,
    parse_peak,
)
from ..contract import parse_frame_size
from ..errors import InputError
from .common import note, report_errors
from .options import (
    auto_device,
    batches_option,
    deprecated,
    device_option,
    int8_calibration_option,
    model_option,
)


@click.command(name="maefuse-bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--latency", is_flag=True, help="per-pair latency table for every backend x batch")
@click.option("--stream", is_flag=True, help="sustained run at --fps with bounded queues (camera-pipeline view)")
@model_option("checkpoint, trained model name, random:CONFIG (random weights), .onnx graph or TensorRT engine "
              "[default: the built-in model]",
              checkpoint_alias=False)
@click.option("--config", help="model config name, when the checkpoint does not say")
@click.option("--reference", help="torch weights for the float32 reference and the torch rows when --model is a "
              "graph or engine")
@click.option("--versus", help="also time these torch weights (a checkpoint or trained model name, e.g. "
              "maefuse-tiny) in float32 in the same run; the speed-up column is over that row")
@click.option("--backends", help=f"comma list of {', '.join(BACKENDS)} [default: every backend that can run on "
              "--device; the others are listed with the reason]")
@batches_option("1")
@click.option("--iterations", type=int, default=10, show_default=True, help="timed calls per row")
@click.option("--warmup", type=int, default=2, show_default=True, help="untimed calls after the first call")
@click.option("--resolution", help="network input WIDTHxHEIGHT [default: the model's]")
@click.option("--io", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="float: network on prepared tensors; uint8: from camera frames, processing included")
@device_option("cpu", "where every backend runs; auto is cuda where torch sees a GPU")
@click.option("--peak-tflops", help="peak matmul TFLOP/s for the floor: X for every precision, or "
              "float32=X,bfloat16=Y [default: measured]")
@click.option("--pairs", type=int, default=6, show_default=True, help="real pairs fed to the calls and checked")
@click.option("--pairs-dir", type=click.Path(path_type=Path), help="folder with ir/ and vi/ [default: the "
              "3 samples shipped in the package]")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and onnxruntime [default: theirs]")
@int8_calibration_option("folder of real pairs (ir/, vi/) for openvino-int8 calibration, other than --pairs-dir "
                         "[default: the benchmark's own pairs]")
@click.option("--int8-calibration-pairs", type=click.IntRange(min=1), help="pairs openvino-int8 calibrates on  "
              f"[default: {DEFAULT_CALIBRATION_PAIRS}]")
@click.option("--calibration-pairs", "calibration_pairs_alias", type=click.IntRange(min=1), hidden=True)
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="torch and TensorRT on CUDA")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--duration", type=float, default=10.0, show_default=True, help="stream length in seconds")
@click.option("--queue", type=int, default=2, show_default=True, help="stream queue length in frames")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="PNG of the latency distributions")
@click.option("--overwrite", is_flag=True, help="replace --json, --markdown or --plot files that exist")
@report_errors
def main(latency: bool, stream: bool, model: str | None, config: str | None, reference: str | None,
         versus: str | None,
         backends: str | None, batches: str, iterations: int, warmup: int, resolution: str | None, io: str, device: str,
         peak_tflops: str | None, pairs: int, pairs_dir: Path | None, threads: int | None,
         int8_calibration: Path | None, int8_calibration_pairs: int | None, calibration_pairs_alias: int | None,
         cuda_graph: bool,
         fps: float, duration: float, queue: int, json_path: Path | None, markdown_path: Path | None,
         plot_path: Path | None, overwrite: bool) -> None:
    """Benchmark MaeFuse backends: latency, throughput, memory, accuracy vs torch float32, ratio to the floor."""
    if calibration_pairs_alias is not None:
        deprecated("--calibration-pairs", "--int8-calibration-pairs")
        int8_calibration_pairs = int8_calibration_pairs or calibration_pairs_alias
    if plot_path is not None:
        check_plot_path(plot_path)
    inputs = (model, config, reference, versus, pairs_dir, int8_calibration)
    reports = [(target, option) for target, option in ((json_path, "--json"), (markdown_path, "--markdown"),
                                                       (plot_path, "--plot")) if target is not None]
    for index, (target, option) in enumerate(reports):
        check_output(target, inputs=inputs, overwrite=overwrite, what=option)
        for other, other_option in reports[:index]:  # the later report would replace the earlier one
            if target.resolve() == other.resolve():
                raise click.UsageError(f"{other_option} and {option} name the same file {target}: give each its own")
    settings = BenchSettings(
        model=model, config=config, reference=reference, versus=versus,
        backends=parse_backends(backends) if backends is not None else None,
        batches=parse_batches(batches), iterations=iterations, warmup=warmup,
        resolution=parse_frame_size(resolution, "--resolution").hw if resolution else None, io=io,  # type: ignore[arg-type]
        device=auto_device(device), peak_flops=parse_peak(peak_tflops) if peak_tflops else {}, pairs=pairs,
        pairs_dir=pairs_dir, cuda_graph=cuda_graph, threads=threads, calibration_dir=int8_calibration,
        calibration_pairs=int8_calibration_pairs or DEFAULT_CALIBRATION_PAIRS, latency=latency, stream=stream,
        fps=fps, duration=duration, queue=queue,
    )
    result = run_benchmark(settings, log=note, command=_command_line(click.get_current_context()))
    click.echo(terminal_table(result))
    for path, writer in ((json_path, write_json), (markdown_path, write_markdown), (plot_path, write_plot)):
        if path is not None:
            click.echo(f"wrote {writer(result, path)}")
    if latency and not any(row.status == "ok" for row in result.rows):
        raise InputError("nothing was measured: every backend was skipped or failed (reasons above)",
                         fix="name backends that run here with --backends, or pass --reference CHECKPOINT for "
                         "the torch rows of a graph or engine")
    if any(row.status == "failed" for row in result.rows) or result.release_check["status"] == "FAILED":
        sys.exit(1)


def _command_line(ctx: click.Context) -> str:
    """The command as typed, rebuilt from the options given on the command line, for the recorded results."""
    words = [ctx.command_path]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            flags = param.opts if value else param.secondary_opts
            words.extend([max(flags, key=len)] if flags else [])
        else:
            words.extend([max(param.opts, key=len), str(value)])
    return shlex.join(words)
