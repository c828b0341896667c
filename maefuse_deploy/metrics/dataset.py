"""Dataset-level evaluation: fused folders matched to IR/VIS by file stem, a process pool, means and CSV.

Files are read unchanged (``io.read_image``) and must be 8-bit; a fused image may use another format than
its sources (fused .png for .jpg sources). Every input problem raises :class:`InputError` naming the file.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from ..compare import psnr_from_mse
from ..errors import InputError
from ..io import find_pairs, images_by_stem, read_image
from .compute import check_inputs, evaluate
from .conventions import Convention, get_convention, select_metrics
from .structural import ssim_gaussian

_T = TypeVar("_T")
_R = TypeVar("_R")
SIDE_BY_SIDE = "_sbs"
_WANG: dict[str, Any] = {"c1": (0.01 * 255.0) ** 2, "c2": (0.03 * 255.0) ** 2, "padding": "valid"}


@dataclass(frozen=True)
class Triple:
    """One fused image and the IR/VIS pair it was made from, matched by file stem."""

    name: str
    fused: Path
    ir: Path
    vis: Path


@dataclass(frozen=True)
class FolderResult:
    """Per-image rows ({"image": stem, column: value}) and per-column means over the images.

    A mean skips NaN values (metrics undefined on an image); ``counts`` says how many images each mean covers.
    """

    convention: Convention
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    means: dict[str, float]
    counts: dict[str, int]
    fused: Path
    source_pairs: int


@dataclass(frozen=True)
class CompareResult:
    """Two fused sets evaluated on the same sources, and how close the two sets are to each other.

    ``between`` holds per-image rows {"image", "PSNR_AB", "SSIM_AB", "max_abs_diff"} computed on the stored pixels
    (all channels, 0-255): PSNR = 10 log10(255^2 / MSE(A,B)), SSIM with Wang's constants averaged over channels.
    """

    a: FolderResult
    b: FolderResult
    between: list[dict[str, Any]]

    @property
    def paired_means(self) -> dict[str, tuple[float, float, int]]:
        """Per column: (mean of A, mean of B, images) over the images where the metric is defined in both sets.

        A metric undefined on an image of either set (NaN) drops that image from both means, so that B - A compares
        the same images; NaN means when no image is defined in both.
        """
        paired: dict[str, tuple[float, float, int]] = {}
        for column in self.a.columns:
            both = [(row_a[column], row_b[column]) for row_a, row_b in zip(self.a.rows, self.b.rows, strict=True)
                    if not (math.isnan(row_a[column]) or math.isnan(row_b[column]))]
            if both:
                paired[column] = (float(np.mean([a for a, _ in both])), float(np.mean([b for _, b in both])), len(both))
            else:
                paired[column] = (math.nan, math.nan, 0)
        return paired

    @property
    def differences(self) -> dict[str, float]:
        """Mean of B minus mean of A per column, over the images defined in both (:attr:`paired_means`)."""
        return {column: mean_b - mean_a for column, (mean_a, mean_b, _) in self.paired_means.items()}

    @property
    def between_summary(self) -> dict[str, float | int]:
        """PSNR of the pooled MSE over all images, the worst per-image PSNR, mean and worst SSIM, identical count."""
        mse = [r["MSE_AB"] for r in self.between]
        ssim = [r["SSIM_AB"] for r in self.between]
        return {
            "PSNR_AB pooled (dB)": psnr_from_mse(float(np.mean(mse))),
            "PSNR_AB worst image (dB)": min(r["PSNR_AB"] for r in self.between),
            "SSIM_AB mean": float(np.mean(ssim)),
            "SSIM_AB worst image": float(np.min(ssim)),
            "max abs pixel difference": float(max(r["max_abs_diff"] for r in self.between)),
            "identical images": sum(m == 0 for m in mse),
        }


def match_fused(
    fused: str | os.PathLike[str], ir: str | os.PathLike[str], vis: str | os.PathLike[str], role: str = "fused"
) -> tuple[list[Triple], int]:
    """Match fused images to IR/VIS pairs by file stem; returns the triples and the number of source pairs.

    Three files are one triple. For folders, every fused image needs a source pair (else InputError); source
    pairs without a fused image are allowed (a test split inside a full dataset) and show in the pair count.
    """
    fused = Path(fused)
    if not fused.exists():
        raise InputError(f"{role} path not found: {fused}", fix="check the path")
    pairs = find_pairs(ir, vis)
    if fused.is_file():
        if len(pairs) != 1:
            raise InputError(
                f"{role} {fused} is a file but the sources are folders", fix="pass IR and VIS files, or a folder"
            )
        return [Triple(fused.stem, fused, pairs[0].ir, pairs[0].vis)], 1
    images = images_by_stem(fused, role)
    by_stem = {pair.name: pair for pair in pairs}
    # maefuse-fuse --side-by-side writes NAME_sbs (IR | VIS | fused) beside NAME: not a fused image, skipped.
    images = {stem: path for stem, path in images.items()
              if not (stem.endswith(SIDE_BY_SIDE) and stem not in by_stem and stem[: -len(SIDE_BY_SIDE)] in images)}
    orphans = sorted(set(images) - set(by_stem))
    if orphans:
        shown = ", ".join(orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        raise InputError(
            f"{role} image(s) {shown} in {fused} have no IR/VIS pair of the same name",
            fix="name fused images like their sources, or point --ir/--vis at the right dataset",
        )
    triples = [Triple(stem, path, by_stem[stem].ir, by_stem[stem].vis) for stem, path in images.items()]
    return triples, len(pairs)


def _read_u8(path: Path, role: str) -> np.ndarray:
    image = read_image(path, role)
    if image.dtype != np.uint8:
        raise InputError(f"{role} image {path} is {image.dtype}", fix="the fusion metrics need 8-bit images")
    return image


def _evaluate_triple(task: tuple[Triple, Convention, tuple[str, ...]]) -> dict[str, Any]:
    triple, convention, names = task
    fused = _read_u8(triple.fused, "fused")
    ir = _read_u8(triple.ir, "IR")
    vis = _read_u8(triple.vis, "VIS")
    check_inputs(fused, ir, vis, (f"fused image {triple.fused}", f"IR {triple.ir}", f"VIS {triple.vis}"), names)
    return {"image": triple.name, **evaluate(fused, ir, vis, convention, names)}


def _between(path_a: Path, path_b: Path) -> dict[str, float]:
    """Closeness of two fused images as stored (HxW or HxWxC uint8, same shape): MSE, PSNR, SSIM, max diff."""
    a = _read_u8(path_a, "fused A")
    b = _read_u8(path_b, "fused B")
    if a.shape != b.shape:
        raise InputError(
            f"fused image {path_b} has shape {b.shape} but {path_a} has {a.shape}",
            fix="compare outputs of the same inputs at the same size",
        )
    xa = a.astype(np.float64).reshape(a.shape[0], a.shape[1], -1)
    xb = b.astype(np.float64).reshape(xa.shape)
    diff = xa - xb
    mse = float((diff * diff).mean())
    ssim = np.mean(
        [
            ssim_gaussian(np.ascontiguousarray(xa[:, :, k]), np.ascontiguousarray(xb[:, :, k]), **_WANG)
            for k in range(xa.shape[2])
        ]
    )
    return {
        "MSE_AB": mse, "PSNR_AB": psnr_from_mse(mse), "SSIM_AB": float(ssim), "max_abs_diff": float(np.abs(diff).max())
    }


def _compare_triple(
    task: tuple[Triple, Path, Convention, tuple[str, ...]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    triple_a, path_b, convention, names = task
    row_a = _evaluate_triple((triple_a, convention, names))
    triple_b = Triple(triple_a.name, path_b, triple_a.ir, triple_a.vis)
    row_b = _evaluate_triple((triple_b, convention, names))
    return row_a, row_b, {"image": triple_a.name, **_between(triple_a.fused, path_b)}


def _single_threaded_opencv() -> None:
    # One image per process: OpenCV's own threads would only oversubscribe the cores the pool already uses.
    cv2.setNumThreads(1)


def _run(worker: Callable[[_T], _R], tasks: Sequence[_T], jobs: int, progress: bool, description: str) -> list[_R]:
    """``worker`` over ``tasks`` in order, in ``jobs`` processes (1: in this process), with a tqdm bar."""
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}", fix="pass --jobs 1 or more")

    def bar(results: Iterable[_R]) -> Iterable[_R]:
        return tqdm(results, total=len(tasks), desc=description, unit="img", disable=not progress)

    if jobs == 1 or len(tasks) == 1:
        return list(bar(map(worker, tasks)))
    # Spawned, not forked: a child forked after OpenCV has started its worker threads can inherit a held lock
    # and hang on its first parallel call.
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(tasks))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_opencv) as pool:
        return list(bar(pool.map(worker, tasks)))


def summarise(rows: list[dict[str, Any]], columns: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-column means over ``rows`` skipping NaN (NaN if every value is NaN), and the count of values used."""
    means: dict[str, float] = {}
    counts: dict[str, int] = {}
    for column in columns:
        values = [row[column] for row in rows if not math.isnan(row[column])]
        means[column] = float(np.mean(values)) if values else float("nan")
        counts[column] = len(values)
    return means, counts


def _folder_result(rows: list[dict[str, Any]], convention: Convention, fused: Path, pairs: int) -> FolderResult:
    columns = tuple(c for c in rows[0] if c != "image")
    means, counts = summarise(rows, columns)
    return FolderResult(convention, columns, rows, means, counts, fused, pairs)


def evaluate_folder(
    fused: str | os.PathLike[str],
    ir: str | os.PathLike[str],
    vis: str | os.PathLike[str],
    convention: str | Convention = "default",
    metrics: str | Sequence[str] | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> FolderResult:
    """Evaluate every fused image in ``fused`` (a folder, or one file) against its IR/VIS pair.

    ``convention``/``metrics`` as in :func:`evaluate`; ``jobs`` worker processes (spawned: a script calling this
    with jobs > 1 needs the usual ``if __name__ == "__main__":`` guard); ``progress`` shows a tqdm bar on stderr.
    Rows come in file-name order.
    """
    convention = get_convention(convention)
    names = select_metrics(metrics)
    triples, pairs = match_fused(fused, ir, vis)
    rows = _run(_evaluate_triple, [(t, convention, names) for t in triples], jobs, progress, "evaluating")
    return _folder_result(rows, convention, Path(fused), pairs)


def compare(
    fused_a: str | os.PathLike[str],
    fused_b: str | os.PathLike[str],
    ir: str | os.PathLike[str],
    vis: str | os.PathLike[str],
    convention: str | Convention = "default",
    metrics: str | Sequence[str] | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> CompareResult:
    """Evaluate two fused sets (e.g. FP32 and FP16 engine outputs) on the same sources and compare them.

    Both folders must hold the same image names; arguments as in :func:`evaluate_folder`. Returns both sets'
    per-image rows and means, and the per-image PSNR/SSIM between the sets (see :class:`CompareResult`).
    """
    convention = get_convention(convention)
    names = select_metrics(metrics)
    triples_a, pairs = match_fused(fused_a, ir, vis, role="fused A")
    triples_b, _ = match_fused(fused_b, ir, vis, role="fused B")
    stems_a = {t.name for t in triples_a}
    stems_b = {t.name for t in triples_b}
    if stems_a != stems_b:
        side, missing = ("B", sorted(stems_a - stems_b)) if stems_a - stems_b else ("A", sorted(stems_b - stems_a))
        folder = fused_b if side == "B" else fused_a
        raise InputError(
            f"fused {side} folder {folder} lacks {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
            fix="compare two folders holding the same image names",
        )
    path_b = {t.name: t.fused for t in triples_b}
    tasks = [(t, path_b[t.name], convention, names) for t in triples_a]
    results = _run(_compare_triple, tasks, jobs, progress, "comparing")
    rows_a = [r[0] for r in results]
    rows_b = [r[1] for r in results]
    return CompareResult(
        _folder_result(rows_a, convention, Path(fused_a), pairs),
        _folder_result(rows_b, convention, Path(fused_b), pairs),
        [r[2] for r in results],
    )


def write_csv(path: str | os.PathLike[str], result: FolderResult | CompareResult) -> Path:
    """Write per-image rows as CSV, atomically (a failed write leaves no partial file).

    FolderResult: ``image``, the metric columns, ``convention``. CompareResult: ``image``, PSNR_AB, SSIM_AB,
    max_abs_diff, then <column>_A and <column>_B per metric, ``convention``. Floats at full precision; NaN and
    infinity as ``nan`` and ``inf``.
    """
    if isinstance(result, FolderResult):
        convention = result.convention.name
        header = ["image", *result.columns, "convention"]
        rows = [{**row, "convention": convention} for row in result.rows]
    else:
        convention = result.a.convention.name
        paired = [f"{c}_{side}" for c in result.a.columns for side in ("A", "B")]
        header = ["image", "PSNR_AB", "SSIM_AB", "max_abs_diff", *paired, "convention"]
        rows = [
            {
                **between,
                **{f"{c}_A": row_a[c] for c in result.a.columns},
                **{f"{c}_B": row_b[c] for c in result.b.columns},
                "convention": convention,
            }
            for between, row_a, row_b in zip(result.between, result.a.rows, result.b.rows, strict=True)
        ]
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in header])
    return path
