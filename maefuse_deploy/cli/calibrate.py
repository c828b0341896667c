"""maefuse-calibrate: estimate the IR-to-VIS mapping of a camera rig and save it as JSON (docs/streaming.md)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
import numpy as np

from ..atomic import check_output
from ..contract import parse_frame_size
from ..errors import InputError
from ..io import IMAGE_SUFFIXES, find_pairs, read_image, write_image
from ..registration import (
    DEFAULT_FRAMES,
    TRANSFORMS,
    FrameCollector,
    Progress,
    Registration,
    check_calibration,
    from_frames,
    from_points,
    load_registration,
    overlay,
    read_point_pairs,
)
from .common import note, report_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ir", metavar="PATH|SOURCE",
              help="IR frame or folder of frames (pairs by file stem); or a live source as maefuse-stream takes it "
                   "(video file, /dev/videoN, rtsp:// URL, GStreamer pipeline): calibrate from its stream")
@click.option("--vis", metavar="PATH|SOURCE",
              help="VIS frame or folder, same names as --ir; or a live source (same kinds)")
@click.option("--frames", "max_frames", type=click.IntRange(min=1),
              help=f"live sources: keep at most N frame pairs (new views with shared structure), fewer when the "
                   f"uncertainty is within --max-uncertainty sooner  [default: {DEFAULT_FRAMES}]")
@click.option("--points", type=click.Path(path_type=Path),
              help="point pairs, one 'ir_x ir_y vis_x vis_y' line each: the exact least-squares mapping")
@click.option("--ir-size", help="IR frame size WxH (with --points and no --ir frames)")
@click.option("--vis-size", help="VIS frame size WxH (with --points and no --vis frames)")
@click.option("--transform", "model", type=click.Choice(TRANSFORMS), default="auto", show_default=True,
              help="the mapping's form; auto: similarity, then affine, then homography as far as the matches "
                   "support (frame pairs; point pairs: homography)")
@click.option("--max-uncertainty", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="refuse (exit 1, nothing written) when the expected error at an output corner is larger (px)")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="calibration JSON to write")
@click.option("--overwrite", is_flag=True, help="replace an existing --out or --preview file (refused by default)")
@click.option("--check", "check_path", type=click.Path(path_type=Path),
              help="instead: measure this calibration JSON on the --ir/--vis frames (structure displacement left)")
@click.option("--max-residual", type=click.FloatRange(min=0.0), default=3.0, show_default=True,
              help="with --check: fail when the median displacement is larger (pixels)")
@click.option("--preview", type=click.Path(path_type=Path), help="write a PNG: VIS with the registered IR edges in red")
@report_errors
def main(ir: str | None, vis: str | None, max_frames: int | None, points: Path | None, ir_size: str | None,
         vis_size: str | None, model: str, max_uncertainty: float, out: Path | None, overwrite: bool,
         check_path: Path | None, max_residual: float, preview: Path | None) -> None:
    """Estimate the IR-to-VIS homography (or affine map) from point pairs, frame pairs or a live rig, or check one."""
    if (ir is None) != (vis is None):
        raise click.UsageError("pass both --ir and --vis, or neither")
    if (out is None) == (check_path is None):
        raise click.UsageError("pass --out H.json to calibrate, or --check H.json to measure a calibration")
    if preview is not None and ir is None:
        raise click.UsageError("--preview needs --ir/--vis frames to draw on")
    live = ir is not None and vis is not None and _is_live(ir)
    if ir is not None and vis is not None and live != _is_live(vis):
        raise click.UsageError("--ir and --vis must both be images (files or folders) or both live sources (video "
                               "files, devices, URLs, GStreamer pipelines)")
    if live:
        assert ir is not None and vis is not None  # live needs both
        if points is not None or check_path is not None:
            raise click.UsageError("--points and --check take image frames (files or folders), not live sources")
        assert out is not None  # the usage check above
        _calibrate_live(ir, vis, max_frames or DEFAULT_FRAMES, model, max_uncertainty, out, preview, overwrite)
        return
    if max_frames is not None:
        raise click.UsageError("--frames is for live sources (video files, devices, URLs, GStreamer pipelines)")
    found = find_pairs(ir, vis) if ir and vis else []
    # Every file this run writes is checked before any work: never an input, never replaced unasked.
    inputs = [points, check_path, ir, vis, *(path for pair in found for path in (pair.ir, pair.vis))]
    for target, option in ((out, "-o"), (preview, "--preview")):
        if target is not None:
            check_output(target, inputs=inputs, overwrite=overwrite, what=option)
    if out is not None and preview is not None and out.resolve() == preview.resolve():
        raise click.UsageError("-o and --preview name the same file")
    frames = [(read_image(p.ir, "IR"), read_image(p.vis, "VIS")) for p in found]
    if check_path is not None:
        _check(check_path, frames, [p.ir.stem for p in found], max_residual)
        return
    assert out is not None  # the usage check above
    if points is not None:
        sizes: list[tuple[int, int] | None] = [  # (width, height) of IR and VIS
            parse_frame_size(text, option) if text else None
            for text, option in ((ir_size, "--ir-size"), (vis_size, "--vis-size"))]
        if frames:
            sizes = [(image.shape[1], image.shape[0]) for image in frames[0]]
        if sizes[0] is None or sizes[1] is None:
            raise click.UsageError("--points needs the frame sizes: --ir-size WxH --vis-size WxH, or --ir/--vis")
        ir_points, vis_points = read_point_pairs(points)
        registration = from_points(ir_points, vis_points, sizes[0], sizes[1], model,  # type: ignore[arg-type]
                                   max_uncertainty_px=max_uncertainty)
        note(f"{len(ir_points)} point pairs: mean reprojection error {registration.residual_px:.3g} px")
    elif frames:
        note(f"estimating from {len(frames)} frame pair(s) (block matching on gradient structure)")
        registration = from_frames(frames, model, max_uncertainty_px=max_uncertainty)  # type: ignore[arg-type]
        note(f"{registration.extra['matches']} structure matches from {registration.extra['pairs_used']} of "
             f"{len(frames)} pairs, coverage {100 * registration.extra['coverage']:.0f} % of the frame; residual "
             f"median {registration.residual_px:.2f} px, 90th percentile {registration.extra['residual_p90_px']:.2f}"
             " px (parallax and mismatches)")
    else:
        raise InputError("nothing to calibrate from", fix="pass --points FILE or --ir/--vis frame pairs")
    _write(registration, frames[0] if frames else None, out, preview)


def _is_live(spec: str) -> bool:
    """An image file or a folder of images is the frame-pair mode; anything else (a video file, a device, a URL,
    a GStreamer pipeline) is a live source."""
    if "!" in spec or "://" in spec:
        return True
    path = Path(spec)
    return not (path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES)


def _calibrate_live(ir: str, vis: str, frames: int, model: str, max_uncertainty: float, out: Path,
                    preview: Path | None, overwrite: bool) -> None:
    """Read both sources, pair by timestamp (the stream's rule), keep pairs until the collector is done, write."""
    # The stream layer (sources, pairing) imports the model runtime (torch, a second or two): only live
    # calibration needs it.
    from ..stream import TimestampPairer, open_source

    for target, option in ((out, "-o"), (preview, "--preview")):
        if target is not None:
            check_output(target, inputs=[ir, vis], overwrite=overwrite, what=option)
    if preview is not None and out.resolve() == preview.resolve():
        raise click.UsageError("-o and --preview name the same file")
    collector = FrameCollector(model, max_uncertainty_px=max_uncertainty, max_frames=frames)  # type: ignore[arg-type]
    note(f"collecting frame pairs (paired by timestamp): new views with shared structure, until the corner "
         f"uncertainty is within {max_uncertainty:g} px or {frames} pairs are kept; Ctrl-C abandons")
    tty = sys.stderr.isatty()
    shown: tuple[int, int] | None = None
    with contextlib.ExitStack() as stack:
        if tty:  # end the rewritten line, whatever ends the collection (an error is its own line)
            stack.callback(click.echo, "", err=True)
        sources = {}
        for name, spec in (("ir", ir), ("vis", vis)):
            sources[name] = open_source(spec, name)
            stack.callback(sources[name].close)
        pairer = TimestampPairer(fps=(sources["ir"].nominal_fps, sources["vis"].nominal_fps))
        while not collector.done and (role := pairer.needs()) is not None:
            for pair in pairer.add(role, sources[role].read()):
                collector.offer(pair.ir.image, pair.vis.image)
                progress = collector.progress()
                # On a terminal the line is rewritten for every pair; in a log, one line per change.
                if tty:
                    click.echo("\r" + _progress_line(progress, max_uncertainty), err=True, nl=False)
                elif shown != (progress.kept, progress.estimated_from):
                    note(_progress_line(progress, max_uncertainty))
                shown = (progress.kept, progress.estimated_from)
                if collector.done:
                    break
    if not collector.done:
        note(f"the sources ended after {collector.read} frame pairs")
    registration = collector.result()
    note(f"{registration.extra['matches']} structure matches from {len(collector.kept)} kept of {collector.read} "
         f"frame pairs read, coverage {100 * registration.extra['coverage']:.0f} % of the frame; residual median "
         f"{registration.residual_px:.2f} px, 90th percentile {registration.extra['residual_p90_px']:.2f} px")
    _write(registration, collector.kept[0], out, preview)


def _progress_line(progress: Progress, limit: float) -> str:
    if progress.uncertainty_px is None:
        estimate = "no estimate yet"
    else:
        estimate = (f"uncertainty {progress.uncertainty_px:.2f} px (limit {limit:g}) from {progress.estimated_from}, "
                    f"coverage {100 * (progress.coverage or 0.0):.0f} %")
    return f"calibrating: {progress.read} pairs read, {progress.kept} kept, {estimate}"


def _write(registration: Registration, frames: tuple[np.ndarray, np.ndarray] | None, out: Path,
           preview: Path | None) -> None:
    """Write the preview (on ``frames``, an (ir, vis) pair) and the calibration, and print what was written."""
    if preview is not None and frames is not None:  # --preview without frames is a usage error
        write_image(preview, overlay(registration, *frames))
    registration.save(out)
    corners = ", ".join(f"({x:.1f}, {y:.1f})" for x, y in registration.ir_corners_in_vis())
    click.echo(f"{registration.model} IR {registration.ir_size[0]}x{registration.ir_size[1]} -> VIS "
               f"{registration.vis_size[0]}x{registration.vis_size[1]}:")
    click.echo(np.array2string(registration.matrix, precision=6, suppress_small=True))
    click.echo(f"IR corners land at {corners} in the VIS frame")
    click.echo(f"fitted as {_fitted(registration)}; {_uncertainty(registration)}")
    if preview is not None:
        click.echo(f"preview: {preview}")
    click.echo(f"wrote {out}")


def _check(path: Path, frames: list[tuple[np.ndarray, np.ndarray]], names: list[str], max_residual: float) -> None:
    registration = load_registration(path)
    if not frames:
        raise InputError("--check needs frame pairs to measure on", fix="pass --ir and --vis")
    result = check_calibration(registration, frames)
    click.echo(f"{path}: {_uncertainty(registration)}")
    for name, median in zip(names, result.pair_medians_px, strict=True):
        click.echo(f"{name}: median structure displacement {median:.2f} px")
    click.echo(f"{path}: median {result.median_px:.2f} px, 90th percentile {result.p90_px:.2f} px over "
               f"{result.matches} structure matches in {len(frames)} pair(s)")
    if result.median_px > max_residual:
        raise InputError(f"calibration {path} leaves shared structure {result.median_px:.2f} px apart (median; "
                         f"limit {max_residual:g} px)", fix="re-calibrate: the cameras moved, or these frames are "
                         "from another rig")


def _fitted(registration: Registration) -> str:
    """The fitted model, and where auto reported another fit than the one support chose, both with their
    uncertainties (``model_evidence["reported"]``, estimate.least_uncertain)."""
    fitted = str(registration.extra.get("fitted_model", registration.model))
    reported = registration.extra.get("model_evidence", {}).get("reported")
    if not isinstance(reported, dict) or reported.get("supported_model") in (None, fitted):
        return fitted
    return (f"{fitted}, the least uncertain fit (the matches support the {reported['supported_model']}, whose "
            f"possible bias makes it {reported['supported_uncertainty_px']:.2f} px uncertain)")


def _uncertainty(registration: Registration) -> str:
    """The calibration's corner uncertainty as one phrase (older files and exactly determined points have none)."""
    uncertainty = registration.extra.get("corner_uncertainty_px")
    if not isinstance(uncertainty, dict):
        return "corner uncertainty unknown (" + str(registration.extra.get("corner_uncertainty_note",
                                                                            "not recorded in this file")) + ")"
    corners = ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in uncertainty.items()
                        if name != "max")
    return f"expected error at the output's corners (uncertainty) {uncertainty['max']:.2f} px max ({corners} px)"
