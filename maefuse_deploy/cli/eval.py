"""maefuse-eval: the field's fusion metrics on a folder of fused images, or two folders compared."""

from __future__ import annotations

import sys

import click

from ..atomic import check_output
from ..errors import MaeFuseError
from ..metrics import (
    CONVENTIONS,
    METRIC_NAMES,
    CompareResult,
    FolderResult,
    compare,
    evaluate_folder,
    format_comparison,
    format_folder,
    write_csv,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fused", metavar="DIR", help="Fused images (folder or one file), matched to sources by name.")
@click.option(
    "--compare",
    "compare_dirs",
    nargs=2,
    metavar="DIR_A DIR_B",
    help="Two fused folders to evaluate and compare (e.g. FP32 vs FP16 engine outputs).",
)
@click.option("--ir", required=True, metavar="DIR", help="Infrared source images (folder or file).")
@click.option("--vis", required=True, metavar="DIR", help="Visible source images (folder or file).")
@click.option(
    "--convention",
    type=click.Choice(list(CONVENTIONS)),
    default="default",
    show_default=True,
    help="Metric definitions: the correct default, or a published lineage's (quirks included).",
)
@click.option("--metrics", metavar="LIST", help=f"Comma-separated subset of {','.join(METRIC_NAMES)}.")
@click.option("--csv", "csv_path", metavar="FILE", help="Write per-image values to this CSV file.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--overwrite", is_flag=True, help="Replace the --csv file if it exists (refused by default).")
def main(
    fused: str | None,
    compare_dirs: tuple[str, str] | None,
    ir: str,
    vis: str,
    convention: str,
    metrics: str | None,
    csv_path: str | None,
    jobs: int,
    overwrite: bool,
) -> None:
    """Score fused IR/VIS images with EN, SD, SF, AG, MI, CC, SCD, PSNR, VIF, Qabf, Nabf, SSIM and NLPD.

    Fused images are matched to the sources by file name (any image format). The report names the convention,
    the MI unit and the SSIM and PSNR variants; --convention picks the correct definitions (default) or those of a
    published lineage (tang2023, tang2022, cddfuse, vifb), quirks included.
    """
    if (fused is None) == (not compare_dirs):
        raise click.UsageError("pass exactly one of --fused DIR or --compare DIR_A DIR_B")
    try:
        if csv_path:
            check_output(csv_path, inputs=(fused, *(compare_dirs or ()), ir, vis), overwrite=overwrite, what="--csv")
        result: FolderResult | CompareResult
        if compare_dirs:
            result = compare(*compare_dirs, ir, vis, convention, metrics, jobs=jobs, progress=True)
            text = format_comparison(result)
        else:
            if fused is None:  # ruled out by the usage check above
                raise AssertionError("neither --fused nor --compare")
            result = evaluate_folder(fused, ir, vis, convention, metrics, jobs=jobs, progress=True)
            text = format_folder(result)
        if csv_path:
            write_csv(csv_path, result)
    except MaeFuseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(text)
    if csv_path:
        click.echo(f"per-image values: {csv_path}")
