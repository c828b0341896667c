"""maefuse-build-engine: a TensorRT engine (and its sidecar) from an exported maefuse ONNX graph."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..atomic import check_output
from ..tensorrt.build import BuildOptions, build_engine, prepare_build
from ..tensorrt.pool import DEFAULT_POOL_SIZE
from ..tensorrt.sidecar import sidecar_path
from .common import note, report_errors
from .options import batch_range_option, device_option, model_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("graph", type=click.Path(path_type=Path), required=False)
@model_option("the .onnx graph written by maefuse-export --onnx (or give it as the positional GRAPH)",
              checkpoint_alias=False)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="engine file to write; the sidecar ENGINE.json and ENGINE.layers.json go beside it",
)
@click.option(
    "--precision",
    type=click.Choice(["fp16", "fp32"]),
    default="fp16",
    show_default=True,
    help="fp16: FP16 builder flag on TensorRT 10, or the FP16 graph (strongly typed) on TensorRT 11",
)
@batch_range_option(
    "batch range of the optimisation profile, or N for a fixed batch [default: the graph's batch (fixed, or the "
    "range recorded by maefuse-export --batch-range), else 1:1:8]",
    batch_alias=True,
)
@click.option(
    "--profiles",
    type=click.IntRange(min=1),
    help="optimization profiles (each over the batch range): how many calls a dynamic-batch engine runs at once, "
    "since each concurrent execution context needs its own; a graph with a fixed batch needs one [default: "
    f"{DEFAULT_POOL_SIZE} (the backend's pool_size) for a dynamic-batch graph, else 1]",
)
@click.option("--workspace", type=float, help="builder workspace limit in GiB [default: TensorRT's]")
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    help="timing cache file: loaded when present, saved after the build",
)
@click.option("--opt-level", type=int, help="builder optimisation level 0..5 [default: TensorRT's, 3]")
@click.option("--hardware-compat", is_flag=True, help="run on any Ampere or newer GPU (may be slower)")
@click.option("--version-compat", is_flag=True, help="run on later TensorRT versions (may be slower)")
@device_option("cuda", "the CUDA device to build on (auto and cuda mean cuda:0)")
@click.option("--overwrite", is_flag=True, help="replace an existing engine (and its sidecar); refused by default")
@report_errors
def main(
    graph: Path | None,
    model: str | None,
    output: Path,
    precision: str,
    batch_range: str | None,
    profiles: int | None,
    workspace: float | None,
    timing_cache: Path | None,
    opt_level: int | None,
    hardware_compat: bool,
    version_compat: bool,
    device: str,
    overwrite: bool,
) -> None:
    """Build a TensorRT engine for this machine's GPU from GRAPH.onnx (written by maefuse-export --onnx)."""
    if (graph is None) == (model is None):
        raise click.UsageError("give the graph once: as the positional GRAPH or as --model GRAPH.onnx")
    if device == "cpu":
        raise click.UsageError("TensorRT builds on a CUDA device: use --device cuda or cuda:N")
    options = BuildOptions(
        precision=precision,
        batch=batch_range,
        profiles=profiles,
        workspace_gib=workspace,
        timing_cache=timing_cache,
        opt_level=opt_level,
        hardware_compat=hardware_compat,
        version_compat=version_compat,
    )
    source = graph if graph is not None else Path(model)  # type: ignore[arg-type]
    plan = prepare_build(source, output, options)  # input mistakes first, before looking for TensorRT
    _check_outputs(output, (source, *(source.parent / name for name in plan.graph.external_files), timing_cache),
                   overwrite)
    result = build_engine(plan, device=int(device.partition(":")[2] or 0), stream=sys.stderr)
    sidecar = result.sidecar
    for line in result.notes:
        note(f"note: {line}")
    cc = sidecar.compute_capability
    click.echo(
        f"engine:  {result.engine_path} ({result.engine_bytes / 2**20:.1f} MiB; TensorRT "
        f"{sidecar.tensorrt_version}; {sidecar.gpu_name}, compute capability {cc[0]}.{cc[1]})"
    )
    click.echo(f"batch:   {plan.profiles_summary}; precision {sidecar.precision} ({sidecar.typing}); io {sidecar.io}")
    click.echo(f"sidecar: {result.sidecar_path}")
    click.echo(f"layers:  {result.layers_path}")
    click.echo(f"log:     {result.log_path}")
    click.echo(result.attention.summary())
    click.echo(f"built in {sidecar.build_seconds:.1f} s")


def _check_outputs(engine: Path, inputs: tuple[Path | None, ...], overwrite: bool) -> None:
    """The output rule for everything a build writes, before the graph is read. The engine and its sidecar are
    one result (replaced only with ``overwrite``); the layer report and the build log describe the latest build
    attempt (a failed build leaves its log to read) and are replaced by the next one, but never over an input."""
    check_output(engine, inputs=inputs, overwrite=overwrite, what="-o")
    check_output(sidecar_path(engine), inputs=inputs, overwrite=overwrite, what="-o's sidecar")
    for beside in (Path(f"{engine}.layers.json"), Path(f"{engine}.build.log")):
        check_output(beside, inputs=inputs, overwrite=True, what="-o's")
