"""Image-fusion metrics (EN, SD, SF, AG, MI, CC, SCD, PSNR, VIF, Qabf, Nabf, SSIM, NLPD) under named conventions.

``evaluate(fused, ir, vis, convention="default")`` scores one image (uint8 arrays); ``evaluate_folder`` and
``compare`` score folders matched by file stem. ``CONVENTIONS`` holds the correct default and the lineages
whose published numbers it reproduces (tang2023, tang2022, cddfuse, vifb); see docs/metrics.md.
"""

from __future__ import annotations

from .compute import evaluate
from .conventions import CONVENTIONS, METRIC_NAMES, Convention, get_convention
from .dataset import CompareResult, FolderResult, compare, evaluate_folder, write_csv
from .report import format_comparison, format_folder

__all__ = [
    "CONVENTIONS",
    "METRIC_NAMES",
    "CompareResult",
    "Convention",
    "FolderResult",
    "compare",
    "evaluate",
    "evaluate_folder",
    "format_comparison",
    "format_folder",
    "get_convention",
    "write_csv",
]
