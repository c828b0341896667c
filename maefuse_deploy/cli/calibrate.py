"""maefuse-calibrate: estimate the IR-to-VIS mapping of a camera rig and save it as JSON (docs/streaming.md)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import InputError
from ..io import find_pairs, read_image, write_image
from ..registration import MODELS
from ..stream.calibrate import from_frames, from_points, overlay, read_point_pairs
from .common import note, report_errors


def _size(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT, got {text!r}", param_hint=option) from None
    return width, height


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ir", type=click.Path(path_type=Path), help="IR frame or folder of frames (pairs by file stem)")
@click.option("--vis", type=click.Path(path_type=Path), help="VIS frame or folder, same names as --ir")
@click.option("--points", type=click.Path(path_type=Path),
              help="point pairs, one 'ir_x ir_y vis_x vis_y' line each: the exact least-squares mapping")
@click.option("--ir-size", help="IR frame size WxH (with --points and no --ir frames)")
@click.option("--vis-size", help="VIS frame size WxH (with --points and no --vis frames)")
@click.option("--transform", "model", type=click.Choice(MODELS), default="homography", show_default=True,
              help="the mapping's form (the file's 'model' field)")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="calibration JSON to write")
@click.option("--preview", type=click.Path(path_type=Path), help="write a PNG: VIS with the registered IR edges in red")
@report_errors
def main(ir: Path | None, vis: Path | None, points: Path | None, ir_size: str | None, vis_size: str | None,
         model: str, out: Path, preview: Path | None) -> None:
    """Estimate the IR-to-VIS homography (or affine map) from point pairs or from frame pairs."""
    if (ir is None) != (vis is None):
        raise click.UsageError("pass both --ir and --vis, or neither")
    frames = [(read_image(p.ir, "IR"), read_image(p.vis, "VIS")) for p in find_pairs(ir, vis)] if ir and vis else []
    if points is not None:
        sizes = (_size(ir_size, "--ir-size"), _size(vis_size, "--vis-size"))
        if frames:
            sizes = ((frames[0][0].shape[1], frames[0][0].shape[0]), (frames[0][1].shape[1], frames[0][1].shape[0]))
        if sizes[0] is None or sizes[1] is None:
            raise click.UsageError("--points needs the frame sizes: --ir-size WxH --vis-size WxH, or --ir/--vis")
        ir_points, vis_points = read_point_pairs(points)
        registration = from_points(ir_points, vis_points, sizes[0], sizes[1], model)  # type: ignore[arg-type]
        note(f"{len(ir_points)} point pairs: mean reprojection error {registration.residual_px:.3g} px")
    elif frames:
        note(f"estimating from {len(frames)} frame pair(s) (block matching on gradient structure)")
        registration = from_frames(frames, model)  # type: ignore[arg-type]
        note(f"{registration.extra['matches']} structure matches from {registration.extra['pairs_used']} of "
             f"{len(frames)} pairs; residual median {registration.residual_px:.2f} px, "
             f"90th percentile {registration.extra['residual_p90_px']:.2f} px (parallax and mismatches)")
    else:
        raise InputError("nothing to calibrate from", fix="pass --points FILE or --ir/--vis frame pairs")
    registration.save(out)
    corners = ", ".join(f"({x:.1f}, {y:.1f})" for x, y in registration.ir_corners_in_vis())
    click.echo(f"{registration.model} IR {registration.ir_size[0]}x{registration.ir_size[1]} -> VIS "
               f"{registration.vis_size[0]}x{registration.vis_size[1]}:")
    click.echo(np.array2string(registration.matrix, precision=6, suppress_small=True))
    click.echo(f"IR corners land at {corners} in the VIS frame")
    if preview is not None:
        if not frames:
            raise InputError("--preview needs --ir/--vis frames to draw on", fix="pass a frame pair")
        write_image(preview, overlay(registration, *frames[0]))
        click.echo(f"preview: {preview}")
    click.echo(f"wrote {out}")
