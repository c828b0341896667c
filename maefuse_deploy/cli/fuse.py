"""maefuse-fuse: fuse IR/VIS files, folders or videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click
from tqdm import tqdm

from ..backends import FUSER_BACKENDS
from ..io import find_pairs
from ..model.config import CONFIGS
from ..processing import POLICIES, Policy
from ..registration import load_registration
from ..runtime.files import SAMPLES_DIR, fuse_pairs, output_suffix
from ..runtime.fuser import Fuser
from ..runtime.video import fuse_video, is_video
from .common import note, report_errors
from .options import batch_size_option, device_option, model_option

# The resize of the official policy, per config, as the code defines it.
MODEL_SIZES = ", ".join(f"{c.img_size[1]}x{c.img_size[0]} for {name}" for name, c in CONFIGS.items())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ir", type=click.Path(path_type=Path), help="IR image, folder or video [default: shipped samples]")
@click.option("--vis", type=click.Path(path_type=Path), help="VIS image, folder or video (pairs matched by file stem)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fused"), show_default=True,
              help="output folder (images) or file (video)")
@model_option("checkpoint file, .onnx graph, engine, or a config name (random weights) [default: the built-in model]")
@click.option("--config", help="model config name, when the checkpoint does not say (needs --model)")
@click.option("--backend", type=click.Choice(FUSER_BACKENDS), help="[default: from the checkpoint's file type]")
@device_option("auto", "auto is cuda when a GPU is visible (TensorRT engines: cuda), else cpu")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8"]), default="float32",
              show_default=True, help="torch: the weights' dtype; openvino: float32, bfloat16 or int8 (quantized)")
@click.option("--calibration", type=click.Path(path_type=Path), help="openvino --dtype int8: a folder of real pairs "
              "(ir/ and vi/) to calibrate on")
@click.option("--policy", type=click.Choice(POLICIES),
              help=f"official: the release's resize to the model size ({MODEL_SIZES}); native: pad to the patch size, "
              "no resize [default: the policy the checkpoint records its weights were trained for (config files and "
              "names: their config's); official for graphs and engines]")
@batch_size_option(4, batch_alias=True)
@click.option("--format", "fmt", default="png", show_default=True, help="output image format (png, tif, bmp, jpg)")
@click.option("--lossy", is_flag=True, help="allow a lossy output format (jpg, webp)")
@click.option("--side-by-side", is_flag=True, help="also write NAME_sbs: IR | VIS | fused")
@click.option("--resize-ir", is_flag=True, help="resize an IR image to its VIS partner's size instead of failing")
@click.option("--homography", type=click.Path(path_type=Path),
              help="IR-to-VIS calibration (maefuse-calibrate): warp each IR image into the VIS geometry first")
@click.option("--server", help="fuse on a Triton server (maefuse-serve) at http://HOST:PORT or grpc://HOST:PORT, "
              "with the server's model, instead of in this process")
@report_errors
def main(
    ir: Path | None,
    vis: Path | None,
    out: Path,
    model: str | None,
    config: str | None,
    backend: str | None,
    device: str,
    dtype: str,
    calibration: Path | None,
    policy: str | None,
    batch_size: int,
    fmt: str,
    lossy: bool,
    side_by_side: bool,
    resize_ir: bool,
    homography: Path | None,
    server: str | None,
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
    suffix = None if video else output_suffix(fmt, lossy)
    if server is not None:
        fuser = remote_fuser(server, batch_size, model=model, config=config, backend=backend, policy=policy,
                             device=None if device == "auto" else device, calibration=calibration)
    else:
        options = {"calibration": calibration} if calibration is not None else {}
        fuser = Fuser.open(model, backend, device=device, dtype=dtype, policy=cast(Policy | None, policy),
                           config=config, batch_size=batch_size, **options)
    note(f"model: {fuser.description}")
    for warning in fuser.warnings:
        note(f"warning: {warning}")
    with fuser:
        if video:
            target = out if out.suffix else out / f"{Path(vis).stem}_fused.mp4"
            with tqdm(desc="fusing frames", unit="frame") as bar:
                frames = fuse_video(fuser, ir, vis, target, progress=bar.update)
            click.echo(f"wrote {frames} fused frames to {target}")
            return
        pairs = find_pairs(ir, vis)
        with tqdm(total=len(pairs), desc="fusing", unit="pair") as bar:
            written = fuse_pairs(fuser, pairs, out, suffix=suffix or ".png", with_side_by_side=side_by_side,
                                 resize=resize_ir, registration=registration, progress=bar.update)
    click.echo(f"wrote {len(written)} images for {len(pairs)} pairs to {out}/")


def remote_fuser(url: str, batch_size: int, **local_only: object) -> Any:
    """A RemoteFuser for --server; the model options belong to the server, so giving them here is an error."""
    from ..serve.client import RemoteFuser

    given = [f"--{name}" for name, value in local_only.items() if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)} choose a local model; with --server the server's model is used")
    return RemoteFuser(url, batch_size=batch_size)
