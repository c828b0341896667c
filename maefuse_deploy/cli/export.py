"""maefuse-export: ONNX graphs (--onnx), AOTInductor packages for the C++ runtime (--aoti) and TensorRT compatibility
checks (--check-trt)."""

from __future__ import annotations

from pathlib import Path

import click

from ..contract import parse_frame_size
from ..export import check_trt, export_onnx
from ..export.request import ExportRequest, check_outputs
from ..hashing import file_sha256
from ..model.sources import resolve_torch_model
from ..serve.repository import describe, export_repository
from .common import note, report_errors
from .options import batch_range_option, model_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--onnx", "onnx_out", type=click.Path(path_type=Path), help="write an ONNX graph here")
@click.option("--aoti", "aoti_out", type=click.Path(path_type=Path),
              help="write an AOTInductor package (.pt2) for the C++ runtime, uint8 io at --camera-size (docs/cpp.md)")
@click.option("--check-trt", "trt_model", type=click.Path(path_type=Path),
              help="statically check an ONNX graph against TensorRT's parser")
@model_option("checkpoint file, trained model name or random:CONFIG (random weights) [default: built-in model]")
@click.option("--config", help="model config name, when the checkpoint does not say")
@click.option("--preset", help="a named recipe: ./export/NAME.json, else the package's presets (flags override it)")
@click.option("--height", type=int, help="model grid height in pixels [default: the config's]")
@click.option("--width", type=int, help="model grid width in pixels [default: the config's]")
@batch_range_option("N for a static batch, MIN:OPT:MAX for a dynamic batch axis [default: the preset's, else 1]",
                    batch_alias=True, dynamic_alias=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]))
@click.option("--io", type=click.Choice(["float", "uint8"]), help="uint8: pre/post-processing inside the graph")
@click.option("--camera-size", help="WxH of uint8 frames (resized to the model grid in the graph)")
@click.option("--size-from", type=click.Path(path_type=Path),
              help="a sample camera frame: the grid is its size (rounded to the patch size), and --camera-size for "
              "uint8 graphs")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--no-verify", is_flag=True, help="skip the onnxruntime verification against PyTorch")
@click.option("--triton", "triton_repo", type=click.Path(path_type=Path),
              help="write a Triton model repository here (from --triton-from, or from the graph --onnx writes)")
@click.option("--triton-from", type=click.Path(path_type=Path), help="the .onnx graph or built engine for --triton")
@click.option("--triton-name", default="maefuse", show_default=True, help="model name in the Triton repository")
@click.option("--overwrite", is_flag=True,
              help="replace an existing --onnx/--aoti file, or add to a --triton folder that holds files (refused by "
              "default)")
@report_errors
def main(onnx_out, aoti_out, trt_model, model, config, preset, height, width, batch_range, precision, io,
         camera_size, size_from, opset, no_verify, triton_repo, triton_from, triton_name, overwrite) -> None:
    """Export MaeFuse to a verified ONNX graph, or check a graph for TensorRT."""
    inputs = (model, size_from, triton_from)
    run = ("--check-trt" if trt_model is not None else "--aoti" if aoti_out is not None
           else "--onnx" if onnx_out is not None else "--triton" if triton_repo is not None else None)
    if run is not None:
        _refuse_ignored(click.get_current_context(), run)
    if triton_repo is not None and onnx_out is None:
        if triton_from is None:
            raise click.UsageError("--triton needs --triton-from MODEL.onnx|ENGINE, or --onnx OUT.onnx to export first")
        describe(triton_from)  # the source first: a graph or engine that no repository can hold
        check_outputs(triton=triton_repo, triton_name=triton_name, inputs=inputs, overwrite=overwrite)
        export_triton(triton_repo, triton_from, triton_name)
        return
    if trt_model is not None:
        for major in ("10", "11"):
            result = check_trt(trt_model, major)
            status = "OK" if result.ok else f"{len(result.blockers)} blocker(s)"
            click.echo(f"TensorRT {major}.x: {status}")
            for line in result.blockers:
                click.echo(f"  blocker: {line}")
            for line in result.warnings:
                click.echo(f"  warning: {line}")
        click.echo("operators: " + ", ".join(f"{op} x{n}" for op, n in result.op_counts.items()))
        if not result.ok:
            raise SystemExit(1)
        return
    if aoti_out is not None:
        check_outputs(aoti=aoti_out, inputs=inputs, overwrite=overwrite)
        camera = parse_frame_size(camera_size, "--camera-size").hw if camera_size else None
        _export_aoti(aoti_out, model, config, camera)
        return
    if onnx_out is None:
        raise click.UsageError("pass --onnx OUT.onnx, --aoti OUT.pt2 or --check-trt MODEL.onnx")
    # Every output and option is checked before the model loads.
    check_outputs(onnx=onnx_out, triton=triton_repo, triton_name=triton_name, inputs=inputs, overwrite=overwrite)
    request = ExportRequest(height=height, width=width, batch=batch_range, precision=precision, io=io,
                            camera_size=camera_size, size_from=size_from, opset=opset, preset=preset).read()
    resolved = resolve_torch_model(model, config)
    network = resolved.model
    for warning in resolved.warnings:
        note(f"warning: {warning}")
    spec = request.spec(network.config)
    sha = file_sha256(resolved.path) if resolved.path else ""
    note(f"model: {resolved.description}")
    note(f"exporting {spec.width}x{spec.height}, batch {request.batch_text}, {spec.precision}, io {spec.io} ...")
    note(f"the graph bakes in a {spec.width}x{spec.height} grid (metadata: policy official, height, width): frames of "
         f"another size are resized to it; {network.config.name} was trained for the {network.config.policy} policy")
    report = export_onnx(network, onnx_out, spec, checkpoint_sha256=sha, verify=not no_verify)
    if report.fold_max_error is not None:
        click.echo(f"official fusion folded to one linear map: max |difference| {report.fold_max_error:.2e}")
    for line in report.checks:
        click.echo(f"check: {line}")
    if report.max_activation:
        value, where = report.max_activation
        click.echo(f"largest activation on real pairs: {value:.1f} at {where} (FP16 max 65504, "
                   f"{65504 / max(value, 1e-9):.0f}x headroom)")
    for line in report.verification:
        click.echo(f"verified: {line}")
    for line in report.not_verified:
        click.echo(f"NOT verified: {line}")
    size = report.size_bytes / 2**20
    data = " + external data" if report.external_data else ""
    click.echo(f"wrote {onnx_out} ({size:.1f} MiB{data}) in {report.seconds:.1f} s")
    if triton_repo is not None:
        export_triton(triton_repo, triton_from or onnx_out, triton_name)


# The options each kind of run reads. One given for another kind would be ignored (`--aoti X --onnx Y` wrote only X,
# `--aoti` took no --height), so it is refused instead.
_ONNX_RUN = {"onnx_out", "model", "checkpoint_alias", "config", "preset", "height", "width", "batch_range",
             "batch_alias", "dynamic_batch_alias", "precision", "io", "camera_size", "size_from", "opset", "no_verify",
             "triton_repo", "triton_from", "triton_name", "overwrite"}
_RUN_OPTIONS = {
    "--onnx": _ONNX_RUN,
    "--aoti": {"aoti_out", "model", "checkpoint_alias", "config", "camera_size", "overwrite"},
    "--check-trt": {"trt_model"},
    "--triton": {"triton_repo", "triton_from", "triton_name", "overwrite"},
}


def _refuse_ignored(ctx: click.Context, run: str) -> None:
    ignored = [max(param.opts, key=len) for param in ctx.command.params
               if isinstance(param, click.Option) and param.name is not None
               and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
               and param.name not in _RUN_OPTIONS[run]]
    if ignored:
        raise click.UsageError(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to a {run} "
                               "run: run maefuse-export once per kind of output")


def export_triton(repository: Path, source: Path, name: str) -> None:
    folder = export_repository(source, repository, name=name)
    click.echo(f"wrote Triton model repository {folder} (config.pbtxt + version 1) from {source}")


def _export_aoti(out: Path, model: str | None, config: str | None, camera_size: tuple[int, int] | None) -> None:
    from ..export.aoti import export_aoti

    resolved = resolve_torch_model(model, config)
    for warning in resolved.warnings:
        note(f"warning: {warning}")
    size = camera_size or resolved.model.config.img_size
    note(f"model: {resolved.description}")
    note(f"compiling {size[1]}x{size[0]} uint8 io with AOTInductor for this CPU (a minute or two) ...")
    sha = file_sha256(resolved.path) if resolved.path else ""
    report = export_aoti(resolved.model, out, size, checkpoint_sha256=sha)
    click.echo(f"wrote {out} ({report.size_bytes / 2**20:.1f} MiB) in {report.seconds:.0f} s")
