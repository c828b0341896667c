"""maefuse-eval end to end on real MSRS pairs, and its one-line errors."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maefuse_deploy.cli.eval import main
from maefuse_deploy.metrics import METRIC_NAMES, evaluate

NAMES = ("00556D", "00858N", "01023N")


@pytest.fixture(scope="module")
def dataset(msrs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ir/ and vi/ with 3 real pairs (VIS re-encoded as JPEG, as cameras' files come), mean/ and max/ with their
    fused PNGs."""
    root = tmp_path_factory.mktemp("msrs3")
    for sub in ("ir", "vi", "mean", "max"):
        (root / sub).mkdir()
    for name in NAMES:
        for sub in ("ir", "vi"):
            image = cv2.imread(str(msrs / sub / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(root / sub / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        ir = cv2.imread(str(root / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
        grey = cv2.cvtColor(cv2.imread(str(root / "vi" / f"{name}.jpg")), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(root / "mean" / f"{name}.png"), ((ir.astype(np.uint16) + grey + 1) // 2).astype(np.uint8))
        cv2.imwrite(str(root / "max" / f"{name}.png"), np.maximum(ir, grey))
    return root


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_evaluates_a_folder_and_writes_the_csv(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "per_image.csv"
    code, stdout, _ = run("--fused", dataset / "mean", "--ir", dataset / "ir", "--vis", dataset / "vi", "--csv", out)
    assert code == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
        header = list(rows[0])
    assert header == ["image", *METRIC_NAMES, "PSNR_tang", "convention"]
    assert [r["image"] for r in rows] == list(NAMES)
    # The CSV holds what the Python API gives for the same files.
    first = evaluate(
        cv2.imread(str(dataset / "mean" / f"{NAMES[0]}.png"), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(dataset / "ir" / f"{NAMES[0]}.jpg"), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(dataset / "vi" / f"{NAMES[0]}.jpg"), cv2.IMREAD_UNCHANGED),
    )
    for column, value in first.items():
        assert float(rows[0][column]) == pytest.approx(value, rel=1e-12), column
    assert "convention: default" in stdout and "MI unit: bits" in stdout and "SSIM:" in stdout
    qabf_line = next(line for line in stdout.splitlines() if line.startswith("Qabf "))
    assert qabf_line.split()[1] == f"{np.mean([float(r['Qabf']) for r in rows]):.4f}"


def test_process_pool_gives_the_same_rows(dataset: Path, tmp_path: Path) -> None:
    common = ["--fused", dataset / "max", "--ir", dataset / "ir", "--vis", dataset / "vi"]
    common += ["--convention", "tang2023", "--metrics", "MI,Nabf,SSIM"]
    assert run(*common, "--csv", tmp_path / "one.csv")[0] == 0
    assert run(*common, "--csv", tmp_path / "two.csv", "--jobs", "2")[0] == 0
    one, two = (tmp_path / "one.csv").read_text(), (tmp_path / "two.csv").read_text()
    assert one == two
    assert one.splitlines()[0] == "image,MI,Nabf,SSIM,convention"


def test_compare_two_sets(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.csv"
    code, stdout, _ = run(
        "--compare", dataset / "mean", dataset / "max", "--ir", dataset / "ir", "--vis", dataset / "vi",
        "--metrics", "EN,PSNR,SSIM", "--csv", out,
    )  # fmt: skip
    assert code == 0
    assert "A mean" in stdout and "B mean" in stdout and "B - A" in stdout
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4] == ["image", "PSNR_AB", "SSIM_AB", "max_abs_diff"]
    assert all(10 < float(r["PSNR_AB"]) < 40 for r in rows)
    code, stdout, _ = run(
        "--compare", dataset / "mean", dataset / "mean", "--ir", dataset / "ir", "--vis", dataset / "vi",
        "--metrics", "SSIM",
    )  # fmt: skip
    assert code == 0
    assert "identical images             3" in stdout and "PSNR_AB pooled (dB)          inf" in stdout


def _broken_copy(dataset: Path, tmp_path: Path) -> Path:
    fused = tmp_path / "fused"
    shutil.copytree(dataset / "mean", fused)
    return fused


def test_mismatched_size_is_a_one_line_error_naming_the_file(dataset: Path, tmp_path: Path) -> None:
    fused = _broken_copy(dataset, tmp_path)
    bad = fused / f"{NAMES[1]}.png"
    image = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(bad), image[:-2])
    code, _, stderr = run("--fused", fused, "--ir", dataset / "ir", "--vis", dataset / "vi")
    assert code == 1
    (line,) = error_lines(stderr)
    assert str(bad) in line and "fix:" in line


def test_unreadable_file_is_a_one_line_error_naming_the_file(dataset: Path, tmp_path: Path) -> None:
    fused = _broken_copy(dataset, tmp_path)
    bad = fused / f"{NAMES[2]}.png"
    bad.write_bytes(b"not a png")
    code, _, stderr = run("--fused", fused, "--ir", dataset / "ir", "--vis", dataset / "vi", "--jobs", "2")
    assert code == 1
    (line,) = error_lines(stderr)
    assert str(bad) in line and "not a readable image" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ir", "{root}/nowhere"], "IR path not found: {root}/nowhere"),
        (["--fused", "{root}/nowhere"], "fused path not found: {root}/nowhere"),
        (["--metrics", "EN,FMI"], "unknown metric 'FMI'"),
    ],
)
def test_missing_folder_and_bad_options_are_one_line_errors(dataset: Path, args: list[str], expected: str) -> None:
    base = {"--fused": str(dataset / "mean"), "--ir": str(dataset / "ir"), "--vis": str(dataset / "vi")}
    extra = [a.format(root=dataset) for a in args]
    if extra[0] in base:
        base[extra[0]] = extra[1]
        extra = []
    code, stdout, stderr = run(*[x for kv in base.items() for x in kv], *extra)
    assert code == 1 and stdout == ""
    (line,) = error_lines(stderr)
    assert expected.format(root=dataset) in line


def test_fused_image_without_sources_is_an_error(dataset: Path, tmp_path: Path) -> None:
    fused = _broken_copy(dataset, tmp_path)
    shutil.copy(fused / f"{NAMES[0]}.png", fused / "99999X.png")
    code, _, stderr = run("--fused", fused, "--ir", dataset / "ir", "--vis", dataset / "vi")
    assert code == 1
    (line,) = error_lines(stderr)
    assert "99999X" in line


def test_needs_exactly_one_of_fused_or_compare(dataset: Path) -> None:
    code, _, stderr = run("--ir", dataset / "ir", "--vis", dataset / "vi")
    assert code == 2 and "exactly one of --fused" in stderr


def test_undefined_values_print_as_not_available(dataset: Path) -> None:
    code, stdout, _ = run(
        "--fused", dataset / "mean", "--ir", dataset / "ir", "--vis", dataset / "vi", "--convention", "tang2022",
        "--metrics", "SSIM,SD",
    )  # fmt: skip
    assert code == 0
    ssim_line = next(line for line in stdout.splitlines() if line.startswith("SSIM "))
    assert "n/a" in ssim_line and "not reproduced" in ssim_line
    sd = float(next(line for line in stdout.splitlines() if line.startswith("SD ")).split()[1])
    assert 0 < sd < math.sqrt(255)
