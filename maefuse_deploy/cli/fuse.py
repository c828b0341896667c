"""maefuse-fuse: fuse IR/VIS files, folders or videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click
from tqdm import tqdm

from ..backends import AUTO
from ..contract import DEFAULT_BATCH_SIZE
from ..io import DEFAULT_MAX_PIXELS, OUTPUT_FORMATS
from ..model.config import CONFIGS
from ..model.sources import TRAINED_NAMES
from ..processing import Policy
from ..registration import load_registration
from ..runtime.files import SAMPLES_DIR, fuse_pairs, plan_fuse_job
from ..runtime.fuser import Fuser
from ..runtime.video import fuse_video, is_video, plan_video
from .common import note, note_backend_events, note_model, report_errors
from .options import (
    backend_option,
    batch_size_option,
    device_option,
    int8_calibration_option,
    model_option,
    processing_option,
)

# The resize of the official policy, per config, as the code defines it.
MODEL_SIZES = ", ".join(f"{c.img_size[1]}x{c.img_size[0]} for {name}" for name, c in CONFIGS.items())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ir", type=click.Path(path_type=Path), help="IR image, folder or video [default: shipped samples]")
@click.option("--vis", type=click.Path(path_type=Path), help="VIS image, folder or video (pairs matched by file stem)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fused"), show_default=True,
              help="output folder, one image file for one pair (fused.png), or a video file")
@click.option("--overwrite", is_flag=True, help="replace output files that already exist (refused by default)")
@model_option(f"checkpoint file, .onnx graph, engine, a trained model's name ({TRAINED_NAMES}), or "
              "random:CONFIG for "
              "random weights [default: the built-in model]")
@click.option("--config", help="model config name, when the checkpoint does not say (needs --model)")
@backend_option()
@device_option("auto", "auto is cuda when a GPU is visible (TensorRT engines: cuda), else cpu")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8", "int8-bf16"]),
              help="torch: the weights' dtype; openvino, openvino-weights: float32, bfloat16, int8 or int8-bf16 "
              "(quantized) [default: the backend's: torch float32, openvino float32, openvino-weights the fastest "
              "within 40 dB]")
@int8_calibration_option("openvino --dtype int8: a folder of real pairs (ir/ and vi/) to calibrate the quantization on")
@processing_option(f"official: the release's resize to the model size ({MODEL_SIZES}); native: pad to the patch "
                   "size, no resize [default: the policy the checkpoint records its weights were trained for (config "
                   "files and names: their config's); official for graphs and engines]")
@batch_size_option(DEFAULT_BATCH_SIZE, batch_alias=True)
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
              help="output image format [default: png, or --out's suffix]")
@click.option("--lossy", is_flag=True, help="allow a lossy output format (jpg, webp)")
@click.option("--side-by-side", is_flag=True, help="also write NAME_sbs: IR | VIS | fused")
@click.option("--resize-ir", is_flag=True, help="resize an IR image to its VIS partner's size instead of failing")
@click.option("--homography", type=click.Path(path_type=Path),
              help="IR-to-VIS calibration (maefuse-calibrate): warp each IR image into the VIS geometry first")
@click.option("--server", help="fuse on a Triton server (maefuse-serve) at http://HOST:PORT or grpc://HOST:PORT, "
              "with the server's model, instead of in this process")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="refuse images larger than this (read from the file header before decoding)")
@click.option("--strict", is_flag=True, help="videos: truncated or unequal-length inputs are errors, not warnings")
@report_errors
def main(
    ir: Path | None,
    vis: Path | None,
    out: Path,
    overwrite: bool,
    model: str | None,
    config: str | None,
    backend: str | None,
    device: str,
    dtype: str | None,
    int8_calibration: Path | None,
    processing: str | None,
    batch_size: int,
    fmt: str | None,
    lossy: bool,
    side_by_side: bool,
    resize_ir: bool,
    homography: Path | None,
    server: str | None,
    max_pixels: int,
    strict: bool,
) -> None:
    """Fuse registered infrared/visible pairs with MaeFuse."""
    if ir is None and vis is None:
        ir, vis = SAMPLES_DIR / "ir", SAMPLES_DIR / "vi"
        note(f"no --ir/--vis given: fusing the shipped sample pairs in {SAMPLES_DIR}")
    elif ir is None or vis is None:
        raise click.UsageError("pass both --ir and --vis (or neither, for the shipped samples)")
    video = is_video(ir) or is_video(vis)
    registration = load_registration(homography) if homography is not None else None
    if registration is not None and (video or resize_ir):
        raise click.UsageError("--homography works on image pairs without --resize-ir; use maefuse-stream for videos")
    # Every input and output is checked before the model loads: a bad pair or an existing output costs nothing.
    if video:
        video_job = plan_video(ir, vis, out if out.suffix else out / f"{Path(vis).stem}_fused.mp4",
                               overwrite=overwrite)
    else:
        job = plan_fuse_job(ir, vis, out, fmt=fmt, allow_lossy=lossy, with_side_by_side=side_by_side,
                            overwrite=overwrite, max_pixels=max_pixels, resize=resize_ir, registration=registration)
    if server is not None:
        fuser = remote_fuser(server, batch_size, model=model, config=config, processing=processing,
                             backend=None if backend == AUTO else backend, dtype=dtype,
                             device=None if device == "auto" else device, int8_calibration=int8_calibration)
    else:
        options = {"calibration": int8_calibration} if int8_calibration is not None else {}
        fuser = Fuser.open(model, backend, device=device, dtype=dtype, policy=cast(Policy | None, processing),
                           config=config, batch_size=batch_size, **options)
    note_model(fuser)
    with fuser:
        if video:
            with tqdm(desc="fusing frames", unit="frame") as bar:
                result = fuse_video(fuser, video_job, strict=strict, progress=bar.update)
            note_backend_events(fuser)
            for problem in result.problems:
                note(f"warning: {problem}")
            click.echo(f"wrote {_count(result.frames, 'fused frame')} to {video_job.out}")
            return
        with tqdm(total=len(job.pairs), desc="fusing", unit="pair") as bar:
            fuse_pairs(fuser, job, resize=resize_ir, registration=registration, progress=bar.update)
    note_backend_events(fuser)
    extra = f" and {_count(len(job.side_by_side), 'side-by-side')}" if job.side_by_side else ""
    where = job.fused[0] if len(job.fused) == 1 else f"{job.folder}/"
    click.echo(f"wrote {_count(len(job.fused), 'fused image')}{extra} for {_count(len(job.pairs), 'pair')} to {where}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def remote_fuser(url: str, batch_size: int, **local_only: object) -> Any:
    """A RemoteFuser for --server; the model options belong to the server, so giving them here is an error."""
    from ..serve.client import RemoteFuser

    given = [f"--{name.replace('_', '-')}" for name, value in local_only.items() if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)} choose a local model; with --server the server's model is used")
    return RemoteFuser(url, batch_size=batch_size)
