"""Plain-text reports of dataset results: the convention header, then one line per metric."""

from __future__ import annotations

import math

from .dataset import CompareResult, FolderResult


def _value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def _coverage(result: FolderResult, column: str) -> str:
    n = result.counts[column]
    return "" if n == len(result.rows) else f" ({n} of {len(result.rows)} images defined)"


def format_folder(result: FolderResult) -> str:
    """Header naming the convention, MI unit, SSIM and PSNR variants, then mean and definition per column."""
    labels = result.convention.labels()
    lines = [
        f"{len(result.rows)} fused images in {result.fused} ({result.source_pairs} IR/VIS pairs available)",
        *result.convention.header(),
        "",
        f"{'metric':<10} {'mean':>10}  definition",
    ]
    for column in result.columns:
        lines.append(f"{column:<10} {_value(result.means[column]):>10}  {labels[column]}{_coverage(result, column)}")
    return "\n".join(lines)


def format_comparison(result: CompareResult) -> str:
    """Both sets' means and B - A per column over the images defined in both sets (with the coverage where that is
    not every image), then how close the two sets' images are."""
    a = result.a
    lines = [
        f"A: {a.fused}",
        f"B: {result.b.fused}",
        f"{len(a.rows)} images matched by name ({a.source_pairs} IR/VIS pairs available)",
        *a.convention.header(),
        "",
        "Means over the images where the metric is defined in both sets:",
        f"{'metric':<10} {'A mean':>10} {'B mean':>10} {'B - A':>10}",
    ]
    for column, (mean_a, mean_b, count) in result.paired_means.items():
        coverage = "" if count == len(a.rows) else f"  ({count} of {len(a.rows)} images defined in both)"
        lines.append(
            f"{column:<10} {_value(mean_a):>10} {_value(mean_b):>10} {_value(mean_b - mean_a):>10}{coverage}"
        )
    lines += ["", "A vs B on the stored pixels (0-255, all channels; SSIM: Wang, 11x11 Gaussian, valid):"]
    for key, value in result.between_summary.items():
        lines.append(f"  {key:<28} {value if isinstance(value, int) else _value(value)}")
    return "\n".join(lines)
