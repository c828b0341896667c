"""Regression tests for the correctness findings of issue 14: one test per item, named after it. Each failed on
the code before its fix (see the commit messages). Built on ``maefuse-micro`` and tiny synthetic data."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from maefuse_deploy import Fuser
from maefuse_deploy.atomic import atomic_path
from maefuse_deploy.bench.timing import summarize
from maefuse_deploy.cli.bench import main as bench_main
from maefuse_deploy.cli.eval import main as eval_main
from maefuse_deploy.cli.fuse import main as fuse_main
from maefuse_deploy.cli.train import main as train_main
from maefuse_deploy.errors import InputError, MaeFuseError, NonFiniteError, VerificationError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.io import ImagePair
from maefuse_deploy.metrics import compare, format_comparison
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.processing import normalise
from maefuse_deploy.runtime.files import SAMPLES_DIR
from maefuse_deploy.train.dataset import load_grey_pair, select_pairs
from maefuse_deploy.train.evaluate import mean_scores, score, tensor_to_grey8
from maefuse_deploy.train.trainer import Trainer, TrainOptions, train


def write_pairs(root: Path, names: list[str], size: tuple[int, int] = (72, 80)) -> Path:
    """IR/VIS pairs named ``names`` (the file stem: names may hold dots), distinct textures per pair."""
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    rng = np.random.default_rng(len(names))
    for name in names:
        ir = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (5, 5), 2.0)
        vis = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (5, 5), 2.0)
        cv2.imwrite(str(root / "ir" / f"{name}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{name}.png"), vis)
    return root


# -- item 1: names with dots, the held-out test split -------------------------------------------------------------

def test_item01_dotted_names_are_held_out_and_counted_by_pairs_matched(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", ["scene.001", "scene.002", "scene", "b", "c"])
    (data / "test50.txt").write_text("scene.001\nscene.002.png\n")
    chosen, notes = select_pairs([data])
    # Both test pairs are removed; the unrelated "scene" is trained on.
    assert sorted(p.name for p in chosen) == ["b", "c", "scene"]
    assert any("2 of the 2 names" in note and "2 pairs" in note for note in notes), notes
    # A name in the wrong case still keeps its pair out of training; a name matching nothing is warned about.
    (data / "test50.txt").write_text("SCENE.001\nscene.002\nnot-there\n")
    chosen, notes = select_pairs([data])
    assert sorted(p.name for p in chosen) == ["b", "c", "scene"]
    assert any("WARNING" in note and "not-there" in note for note in notes), notes
    assert any("SCENE.001" in note and "case" in note for note in notes), notes
    # Every split file is read the same way: a dotted name in --split selects exactly that pair.
    split = tmp_path / "split.txt"
    split.write_text("scene\nscene.002\n")
    chosen, _ = select_pairs([data], split=split, holdout_default=False)
    assert [p.name for p in chosen] == ["scene", "scene.002"]


# -- items 5 and 7: validation during training --------------------------------------------------------------------

def train_options(data: Path, out: Path, stage: str, **overrides: object) -> TrainOptions:
    values: dict[str, object] = dict(stage=stage, data=[data], out=out, config="maefuse-micro", val_count=2,
                                     batch_size=5, lr=1e-3, steps=2, checkpoint_every=1000, progress=False,
                                     device="cpu")
    values.update(overrides)
    return TrainOptions(**values)  # type: ignore[arg-type]


def val_rows(out: Path) -> list[dict[str, str]]:
    with (out / "val.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_item05_native_validation_scores_and_previews_each_image_at_its_own_size(tmp_path: Path) -> None:
    # 72x80 pairs: the native policy pads them to 80x80 for the network; scores and preview must see 72x80.
    data = write_pairs(tmp_path / "d", [f"p{k:02d}" for k in range(12)])
    out = tmp_path / "run"
    result = train(train_options(data, out, "fuse", native_tokens=16), echo=lambda _m: None)
    preview = cv2.imread(str(out / "preview.png"))
    assert preview.shape[0] == 72
    # The logged scores equal the metrics of the model's output cropped back to each image's size.
    model = result.model.eval()
    rows = []
    for name in ("p10", "p11"):  # the last val_count names are validated
        ir8, vis8 = load_grey_pair(ImagePair(name, data / "ir" / f"{name}.png", data / "vi" / f"{name}.png"))
        padded = [cv2.copyMakeBorder(p, 0, 8, 0, 0, cv2.BORDER_REPLICATE) for p in (ir8, vis8)]
        ir_t, vis_t = (torch.from_numpy(normalise(p))[None] for p in padded)
        with torch.no_grad():
            fused8 = tensor_to_grey8(model(ir_t, vis_t))[0][:72, :80]
        rows.append(score(fused8, ir8, vis8))
    expected = mean_scores(rows)
    logged = val_rows(out)[-1]
    for key in ("Qabf", "SCD", "EN", "SD"):
        assert abs(float(logged[key]) - expected[key]) < 1e-3, (key, logged[key], expected[key])


def test_item07_last_validation_row_carries_the_epoch_it_validates(tmp_path: Path) -> None:
    # 10 training pairs, batch 5: 2 steps per epoch. 2 steps end exactly on the first epoch's boundary.
    data = write_pairs(tmp_path / "d", [f"p{k:02d}" for k in range(12)])
    train(train_options(data, tmp_path / "a", "fuse", steps=2), echo=lambda _m: None)
    assert [(r["step"], r["epoch"]) for r in val_rows(tmp_path / "a")] == [("2", "0")]
    # 3 steps: epoch 0 validated at its end (step 2), then the run ends inside epoch 1.
    train(train_options(data, tmp_path / "b", "fuse", steps=3), echo=lambda _m: None)
    assert [(r["step"], r["epoch"]) for r in val_rows(tmp_path / "b")] == [("2", "0"), ("3", "1")]


# -- item 3: changed options on --resume --------------------------------------------------------------------------

def test_item03_resume_applies_or_refuses_changed_options_explicitly(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", [f"p{k:02d}" for k in range(8)])
    out = tmp_path / "run"
    first = dict(val_count=0, batch_size=4, steps=2, checkpoint_every=2)
    train(train_options(data, out, "mae", **first), echo=lambda _m: None)
    # Optimiser settings changed on resume are applied, and the log says so.
    log: list[str] = []
    trainer = Trainer(train_options(data, out, "mae", **{**first, "steps": 4}, resume=True, weight_decay=0.2,
                                    betas=(0.8, 0.9)), echo=log.append)
    decay_group, plain_group = trainer.optimizer.param_groups
    assert decay_group["weight_decay"] == 0.2 and plain_group["weight_decay"] == 0.0
    assert all(tuple(group["betas"]) == (0.8, 0.9) for group in trainer.optimizer.param_groups)
    assert any("weight decay 0.05 -> 0.2" in line and "betas (0.9, 0.95) -> (0.8, 0.9)" in line for line in log), log
    # Options that change what the saved state means are refused in one line naming the option.
    for change, flag in (({"train": ("decoder",)}, "--train"), ({"mask_ratio": 0.0}, "--mask-ratio")):
        with pytest.raises(MaeFuseError, match=flag) as caught:
            train(train_options(data, out, "mae", **{**first, "steps": 4}, resume=True, **change),
                  echo=lambda _m: None)
        assert "\n" not in str(caught.value)


# -- item 2: NaN in reports, non-finite network output ------------------------------------------------------------

@pytest.fixture(scope="module")
def overflowing_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """maefuse-micro weights whose patch embedding overflows float16 (tokens ~1e5 > 65504) but not float32."""
    model = build_model(get_config("maefuse-micro"), seed=0)
    with torch.no_grad():
        model.mae.patch_embed.proj.weight.mul_(3e4)
    path = tmp_path_factory.mktemp("overflow") / "overflow.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN -> uint8, on purpose
def test_item02_nan_accuracy_is_written_in_both_reports(overflowing_checkpoint: Path, tmp_path: Path) -> None:
    paths = {"json": tmp_path / "bench.json", "markdown": tmp_path / "bench.md"}
    result = CliRunner().invoke(bench_main, [
        "--latency", "--model", str(overflowing_checkpoint), "--backends", "torch,torch-fp16", "--iterations", "1",
        "--warmup", "0", "--pairs", "1", "--pairs-dir", str(SAMPLES_DIR), "--peak-tflops", "0.1", "--threads", "1",
        "--json", str(paths["json"]), "--markdown", str(paths["markdown"]),
    ])
    assert paths["json"].is_file() and paths["markdown"].is_file(), result.output
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN written as a string, like inf
    (fp16,) = [row for row in data["rows"] if row["backend"] == "torch-fp16"]
    assert fp16["max_abs_err"] == "nan"
    assert any("non-finite" in note for note in fp16["notes"])
    (fp32,) = [row for row in data["rows"] if row["backend"] == "torch"]
    assert fp32["max_abs_err"] == 0.0 and not any("non-finite" in note for note in fp32["notes"])
    table = paths["markdown"].read_text()
    assert "| torch-fp16 |" in table and "nan" in table and "non-finite" in table


def test_item02_float16_overflow_fails_instead_of_writing_black_images(overflowing_checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    ir = cv2.imread(str(SAMPLES_DIR / "ir" / sorted(p.name for p in (SAMPLES_DIR / "ir").iterdir())[0]),
                    cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(SAMPLES_DIR / "vi" / sorted(p.name for p in (SAMPLES_DIR / "vi").iterdir())[0]))
    assert Fuser.from_checkpoint(overflowing_checkpoint, dtype="float32").fuse(ir, vis).shape == vis.shape
    with pytest.raises(NonFiniteError, match="float16"):
        Fuser.from_checkpoint(overflowing_checkpoint, dtype="float16").fuse(ir, vis)
    out = tmp_path / "fused"
    result = CliRunner().invoke(fuse_main, ["--checkpoint", str(overflowing_checkpoint), "--dtype", "float16",
                                            "--out", str(out)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code != 0 and len(errors) == 1 and "non-finite" in errors[0], result.output
    assert not any(out.glob("*.png"))


def test_item02_export_verification_refuses_a_graph_with_non_finite_output(overflowing_checkpoint: Path,
                                                                           tmp_path: Path) -> None:
    model, _ = load_checkpoint(overflowing_checkpoint)
    path = tmp_path / "overflow-fp16.onnx"
    with pytest.raises(VerificationError, match="non-finite"):
        export_onnx(model, path, ExportSpec(64, 64, precision="fp16"))
    assert not path.exists()


# -- item 8: percentiles the sample count cannot support ----------------------------------------------------------

def test_item08_percentiles_need_enough_samples(tmp_path: Path) -> None:
    three = summarize([4.0, 4.1, 4.18])
    assert three["p50"] == 4.1 and three["max"] == 4.18
    assert three["p90"] is None and three["p99"] is None  # 3 calls say nothing about the slowest 10% or 1%
    ten = summarize([float(k) for k in range(1, 11)])
    assert ten["p90"] is not None and ten["p99"] is None
    hundred = summarize([float(k) for k in range(1, 101)])
    assert hundred["p90"] is not None and hundred["p99"] is not None
    # A 3-call benchmark shows '-' for p90/p99 in its tables and says why.
    path = tmp_path / "bench.md"
    result = CliRunner().invoke(bench_main, [
        "--latency", "--model", "random:maefuse-micro", "--backends", "torch", "--iterations", "3", "--warmup", "0",
        "--pairs", "1", "--pairs-dir", str(SAMPLES_DIR), "--peak-tflops", "0.1", "--threads", "1",
        "--markdown", str(path),
    ])
    assert result.exit_code == 0, result.output
    lines = path.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| backend"))
    row = next(line for line in lines if line.startswith("| torch |"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")], strict=True))
    assert cells["p90 ms"] == "-" and cells["p99 ms"] == "-" and cells["p50 ms"] != "-"
    assert any("p90 needs at least 10" in line for line in lines)
    # The recorded tables of benchmarks/ that were measured with 3 calls show no p90/p99 as if they meant something:
    # the columns are labelled (n=3) or every row has "-" there, and the text says to read max ms.
    # Every table recorded with 3 calls is checked; one without percentile columns shows nothing misleading.
    readme = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text()
    checked = 0
    for start in [m.start() for m in re.finditer("--iterations 3", readme)]:
        section = readme[start:]
        lines = section[section.index("| backend"):].splitlines()
        table = lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]
        columns = [c.strip() for c in table[0].split("|")]
        rows = [[c.strip() for c in line.split("|")] for line in table[2:] if line.startswith("| ")]
        assert rows, section[:200]
        for name in ("p90 ms", "p99 ms"):
            labelled = f"{name} (n=3)" in columns
            if not labelled and name not in columns:
                continue
            index = columns.index(f"{name} (n=3)" if labelled else name)
            assert labelled or all(row[index] == "-" for row in rows), name
            checked += 1
    assert checked and "read max ms" in readme


# -- item 4: --compare over images defined in both sets ----------------------------------------------------------

def test_item04_compare_subtracts_means_over_images_defined_in_both_sets(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", ["a", "b", "c"], size=(64, 64))
    for name in ("A", "B"):
        (data / name).mkdir()
    for stem in ("a", "b", "c"):
        ir = cv2.imread(str(data / "ir" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        grey = cv2.cvtColor(cv2.imread(str(data / "vi" / f"{stem}.png")), cv2.COLOR_BGR2GRAY)
        mean = ((ir.astype(np.uint16) + grey + 1) // 2).astype(np.uint8)
        cv2.imwrite(str(data / "A" / f"{stem}.png"), mean)
        # B equals A except on "a", where it is the VIS itself: SCD is undefined there (F - VIS is constant).
        cv2.imwrite(str(data / "B" / f"{stem}.png"), grey if stem == "a" else mean)
    result = compare(data / "A", data / "B", data / "ir", data / "vi", metrics="SCD,EN")
    assert math.isnan(result.b.rows[0]["SCD"]) and result.b.counts["SCD"] == 2
    # Where both sets are defined they are the same images: no difference, whatever A scores on "a".
    assert result.differences["SCD"] == 0.0
    assert result.differences["EN"] != 0.0  # EN is defined everywhere, and "a" differs
    text = format_comparison(result)
    scd_line = next(line for line in text.splitlines() if line.startswith("SCD "))
    assert "2 of 3" in scd_line, text
    means = scd_line.split()[1:4]  # A mean, B mean, B - A: all over the 2 images defined in both
    assert float(means[0]) == float(means[1]) and float(means[2]) == 0.0


# -- item 6: one-line errors, before the work ---------------------------------------------------------------------

def one_error_line(result: Result) -> str:
    """The CLI's single ``error:`` line (it must exit non-zero and print no traceback)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code not in (0, None) and len(errors) == 1, (result.exit_code, result.output)
    assert ("Traceback" not in result.output and not isinstance(result.exception, Exception | None)) or (
        isinstance(result.exception, SystemExit)), repr(result.exception)
    return errors[0]


def test_item06_atomic_path_maps_a_failing_final_rename_to_one_line(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(InputError, match="taken") as caught, atomic_path(target) as tmp:
        tmp.write_text("result")
    assert "\n" not in str(caught.value) and target.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # the temporary file is gone


def test_item06_eval_csv_onto_a_folder_fails_before_evaluating(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", ["a"], size=(64, 64))
    (data / "fused").mkdir()
    cv2.imwrite(str(data / "fused" / "a.png"), cv2.imread(str(data / "ir" / "a.png")))
    taken = tmp_path / "taken"
    taken.mkdir()
    result = CliRunner().invoke(eval_main, ["--fused", str(data / "fused"), "--ir", str(data / "ir"), "--vis",
                                            str(data / "vi"), "--csv", str(taken)])
    assert "taken" in one_error_line(result) and "evaluating" not in result.stderr and not result.stdout


def test_item06_bad_device_strings_are_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "fused"
    line = one_error_line(CliRunner().invoke(fuse_main, ["--checkpoint", "random:maefuse-micro", "--device", "bogus",
                                                         "--out", str(out)]))
    assert "bogus" in line and not out.exists()
    data = write_pairs(tmp_path / "d", [f"p{k}" for k in range(4)])
    line = one_error_line(CliRunner().invoke(train_main, [
        "--stage", "mae", "--data", str(data), "--out", str(tmp_path / "run"), "--config", "maefuse-micro",
        "--steps", "1", "--no-progress", "--device", "bogus"]))
    assert "bogus" in line
    graph = tmp_path / "micro.onnx"
    export_onnx(build_model(get_config("maefuse-micro"), seed=0), graph, ExportSpec(64, 64), verify=False)
    for device in ("cuda:x", "bogus"):
        line = one_error_line(CliRunner().invoke(fuse_main, ["--checkpoint", str(graph), "--device", device,
                                                             "--out", str(out)]))
        assert device in line and not out.exists()


# -- item 12: help texts and options that were silently ignored ---------------------------------------------------

def test_item12_help_matches_the_code_and_config_is_not_silently_ignored(tmp_path: Path) -> None:
    runner = CliRunner()
    # Wide enough that no config name is wrapped at its hyphen ("maefuse- micro").
    fuse_help = " ".join(runner.invoke(fuse_main, ["--help"], terminal_width=1000).output.split())
    for config in CONFIGS.values():  # the resize sizes come from the configs, not from prose
        assert f"{config.img_size[1]}x{config.img_size[0]} for {config.name}" in fuse_help, fuse_help
    train_help = " ".join(runner.invoke(train_main, ["--help"]).output.split())
    assert "ignored with --crop or --native-crops" in train_help
    # Every training default shown in the help is TrainOptions' own.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    shown = [p for p in train_main.params if isinstance(p, click.Option) and p.show_default and p.name in defaults]
    assert len(shown) > 20
    for param in shown:
        if param.name != "betas":
            assert param.default == defaults[param.name], param.name
    assert tuple(float(x) for x in train_main.params[[p.name for p in train_main.params].index("betas")]
                 .default.split(",")) == defaults["betas"]
    # --config names the config of a checkpoint that does not record one: without a checkpoint it is refused,
    # not silently replaced by the built-in model (fuse) or by random weights (bench).
    out = tmp_path / "fused"
    line = one_error_line(runner.invoke(fuse_main, ["--config", "maefuse-micro", "--out", str(out)]))
    assert "--config" in line and not out.exists()
    line = one_error_line(runner.invoke(bench_main, ["--latency", "--config", "maefuse-micro", "--iterations", "1"]))
    assert "--config" in line and "--model" in line


def test_item02_bench_refuses_a_non_finite_reference(tmp_path: Path) -> None:
    model = build_model(get_config("maefuse-micro"), seed=0)
    with torch.no_grad():
        model.mae.patch_embed.proj.weight[0, 0, 0, 0] = float("nan")  # broken weights: NaN even in float32
    path = tmp_path / "nan.safetensors"
    save_checkpoint(model, path)
    result = CliRunner().invoke(bench_main, [
        "--latency", "--model", str(path), "--backends", "torch", "--iterations", "1", "--warmup", "0", "--pairs",
        "1", "--pairs-dir", str(SAMPLES_DIR), "--peak-tflops", "0.1", "--json", str(tmp_path / "bench.json"),
    ])
    assert "reference" in one_error_line(result) and not (tmp_path / "bench.json").exists()
