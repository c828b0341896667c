"""maefuse-train on synthetic pairs with the micro config: stages learn, frozen parts stay put, resume is exact,
torchrun/DDP keeps ranks identical, and bad inputs fail with one line."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from maefuse_deploy.cli.train import main as train_main
from maefuse_deploy.errors import CheckpointError, InputError
from maefuse_deploy.io import read_image
from maefuse_deploy.metrics.statistics import scd_fusion
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.model.maefuse import build_model
from maefuse_deploy.processing import normalise
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.train.dataset import Augment, PairDataset, read_names, select_pairs, split_validation
from maefuse_deploy.train.evaluate import split_report, stack_rows
from maefuse_deploy.train.losses import edge_error, laplacian, scd_deficit, sobel_laplacian_loss, sobel_magnitude
from maefuse_deploy.train.stages import part_of
from maefuse_deploy.train.trainer import Trainer, TrainOptions, train

REPO = Path(__file__).resolve().parents[1]


def make_pairs(root: Path, count: int, size: tuple[int, int] = (72, 80)) -> Path:
    """``count`` synthetic pairs: IR grey with hot blobs, VIS colour with stripes, HxW = ``size``."""
    rng = np.random.default_rng(count)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    for k in range(count):
        ir = np.full(size, 40, np.uint8)
        for _ in range(2):
            cy, cx, r = rng.integers(10, height - 10), rng.integers(10, width - 10), rng.integers(4, 9)
            ir[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 230
        ir = cv2.GaussianBlur(ir, (5, 5), 1.0)
        period = rng.uniform(5, 12)
        stripes = (127 + 100 * np.sin(2 * np.pi * (xx + rng.uniform(0, 1) * yy) / period)).astype(np.uint8)
        vis = np.stack([stripes, np.roll(stripes, 3, axis=1), 255 - stripes], axis=-1)
        cv2.imwrite(str(root / "ir" / f"p{k:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"p{k:02d}.png"), vis)
    return root


def options(data: Path, out: Path, stage: str, **overrides: object) -> TrainOptions:
    values: dict[str, object] = dict(
        stage=stage, data=[data], out=out, config="maefuse-micro", val_count=0, batch_size=8, lr=1e-3,
        steps=20, checkpoint_every=1000, progress=False, device="cpu",
    )
    values.update(overrides)
    return TrainOptions(**values)  # type: ignore[arg-type]


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def pairs8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("pairs8"), 8)


@pytest.fixture(scope="module")
def pairs12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("pairs12"), 12)


@pytest.fixture(scope="module")
def micro_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded micro model file to start the later stages from."""
    path = tmp_path_factory.mktemp("init") / "micro.safetensors"
    save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=3), path)
    return path


# -- losses ------------------------------------------------------------------------------------------------------

def test_filters_match_their_definitions() -> None:
    grey = torch.zeros(1, 1, 5, 5)
    grey[0, 0, 2, 2] = 1.0
    assert laplacian(grey)[0, 0, 2, 2] == -8 and laplacian(grey)[0, 0, 1, 1] == 1
    ramp = torch.arange(5.0).repeat(5, 1)[None, None]  # brightness rises to the right by 1 per pixel
    assert sobel_magnitude(ramp)[0, 0, 2, 2] == 8  # |Sobel_x| = 8 on a unit ramp, Sobel_y = 0


def test_sobel_laplacian_loss_rewards_the_sources_detail() -> None:
    image = torch.randn(2, 1, 16, 16).expand(-1, 3, -1, -1)
    flat = torch.zeros(2, 3, 16, 16)
    assert float(sobel_laplacian_loss(image, image, image)) < 1e-3
    # Fusing a textured and a flat source: copying the texture beats the flat image.
    assert float(sobel_laplacian_loss(image, image, flat)) < float(sobel_laplacian_loss(flat, image, flat))


def grey_tensor(plane: np.ndarray) -> torch.Tensor:
    """HxW uint8 grey -> (1, 3, H, W) normalised, the network's space."""
    return torch.from_numpy(normalise(plane))[None]


def test_scd_deficit_is_two_minus_the_metrics_scd(msrs: Path) -> None:
    """The training term measures what maefuse-eval reports as SCD, on a real pair and a real-looking fusion."""
    ir = read_image(msrs / "ir" / "00858N.png", "IR")
    vis = cv2.cvtColor(read_image(msrs / "vi" / "00858N.png", "VIS"), cv2.COLOR_BGR2GRAY)
    fused = np.clip(0.6 * ir.astype(np.float64) + 0.5 * vis, 0, 255).round().astype(np.uint8)
    expected = 2.0 - scd_fusion(ir.astype(np.float64), vis.astype(np.float64), fused)
    measured = float(scd_deficit(grey_tensor(fused), grey_tensor(ir), grey_tensor(vis)))
    assert measured == pytest.approx(expected, abs=1e-3), (measured, expected)
    # A fusion that carries both sources beats either source alone.
    assert measured < float(scd_deficit(grey_tensor(vis), grey_tensor(ir), grey_tensor(vis)))


def test_scd_term_adds_to_the_fusion_loss_and_only_where_it_can(pairs8: Path, tmp_path: Path) -> None:
    common = dict(seed=1, batch_size=4, steps=1, lr=0.0)
    plain, once, twice = (train(options(pairs8, tmp_path / f"w{weight}", "fuse", scd_weight=weight, **common),
                                echo=quiet).losses[0] for weight in (0.0, 10.0, 20.0))
    assert once > plain and twice - plain == pytest.approx(2 * (once - plain), rel=1e-4)
    code, err = run_cli("--stage", "decoder", "--data", str(pairs8), "--out", str(tmp_path / "o"), "--scd-weight", "5")
    assert code == 1 and "--scd-weight has no meaning in stage decoder" in err
    teacher = tmp_path / "teacher.safetensors"
    save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=7), teacher)
    code, err = run_cli("--stage", "fuse", "--data", str(pairs8), "--out", str(tmp_path / "o"), "--scd-weight", "5",
                        "--teacher", str(teacher), "--distill-only")
    assert code == 1 and "--scd-weight adds to the fusion loss, which --distill-only drops" in err


def test_edge_error_charges_blur_not_brightness() -> None:
    image = torch.zeros(1, 3, 32, 32)
    image[..., 8:24, 8:24] = 1.0
    blurred = torch.nn.functional.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    # A brightness offset with the same pixel MSE as the blur: no edge error at all.
    shifted = image + float(torch.mean((blurred - image) ** 2)) ** 0.5
    assert torch.isclose(torch.mean((shifted - image) ** 2), torch.mean((blurred - image) ** 2))
    assert float(edge_error(image, image)) == 0.0
    assert float(edge_error(shifted, image)) < 1e-10 < float(edge_error(blurred, image))


# -- stages ------------------------------------------------------------------------------------------------------

STAGE_CASES = [
    ("mae", {"mask_ratio": 0.75}, ("encoder", "decoder")),
    ("mae", {"mask_ratio": 0.0}, ("encoder", "decoder")),
    ("decoder", {}, ("decoder",)),
    ("decoder", {"edge_weight": 1.0}, ("decoder",)),
    ("align", {}, ("fusion",)),
    ("fuse", {}, ("fusion",)),
    ("fuse", {"loss": "intensity-gradient", "train": ("fusion", "decoder")}, ("fusion", "decoder")),
]


@pytest.mark.parametrize(("stage", "extra", "trained"), STAGE_CASES, ids=lambda c: str(c))
def test_stage_lowers_its_loss_and_keeps_frozen_parts(
    stage: str, extra: dict, trained: tuple[str, ...], pairs8: Path, micro_start: Path, tmp_path: Path
) -> None:
    # 8 pairs, batch 8 (pairs) or 16 (single images): every step sees the same fixed batch.
    batch = 8 if stage in ("align", "fuse") else 16
    start = load_file(str(micro_start))
    result = train(options(pairs8, tmp_path, stage, init=micro_start, batch_size=batch, **extra), echo=quiet)
    assert len(result.losses) == 20
    assert result.losses[-1] < 0.98 * result.losses[0], result.losses
    after = result.model.state_dict()
    for name, value in after.items():
        if name.endswith("pos_embed"):
            continue
        changed = not torch.equal(value, start[name])
        if part_of(name) in trained:
            continue
        assert not changed, f"{name} ({part_of(name)}) is frozen in {stage} but changed"
    assert any(not torch.equal(after[n], start[n]) for n in after if part_of(n) in trained)


def test_resume_reproduces_the_next_losses_exactly(pairs12: Path, tmp_path: Path) -> None:
    # 24 images, batch 4: 6 steps per epoch. Stop mid-epoch at step 4, resume, and cross into the next epoch.
    common = dict(stage="mae", batch_size=4, crop=True, flip=True, steps=9, checkpoint_every=4)
    straight = train(options(pairs12, tmp_path / "a", **common), echo=quiet)
    train(options(pairs12, tmp_path / "b", **{**common, "steps": 4}), echo=quiet)
    resumed = train(options(pairs12, tmp_path / "b", **common, resume=True), echo=quiet)
    assert resumed.losses == straight.losses[4:]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def _first_step(opts: TrainOptions) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss and the parameter gradients of the first optimiser step (the optimiser clears them only at the
    start of the next step, so they are still there after it)."""
    trainer = Trainer(opts, quiet)
    micro = list(itertools.islice(trainer._epoch_batches(0, 0), opts.accum))
    trainer.net.train()
    loss = trainer._train_step(micro)
    grads = {name: p.grad.detach().clone() for name, p in trainer.module.named_parameters() if p.grad is not None}
    return loss, grads


def test_gradient_accumulation_matches_one_large_batch(pairs8: Path, micro_start: Path, tmp_path: Path) -> None:
    # 16 images: one batch of 16, or two accumulated micro-batches of 8 over the same images. Compared where the
    # arithmetic makes them equal: the loss and the gradient of the step, to float32 rounding of sums taken in
    # another order (relative 1e-4 of each tensor's largest gradient; a wrong scale or micro-batch seed is off by
    # tens of per cent). Not the weights after Adam: its update is g / sqrt(v), about +-lr for every component,
    # so a gradient component at rounding level flips sign on another CPU's kernels and moves its weight by 2 lr.
    common = dict(stage="decoder", init=micro_start, steps=3)
    whole_loss, whole = _first_step(options(pairs8, tmp_path / "a", batch_size=16, **common))
    split_loss, split = _first_step(options(pairs8, tmp_path / "b", batch_size=8, accum=2, **common))
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == split.keys() and whole
    for name, grad in whole.items():
        scale = float(grad.abs().max())
        assert torch.allclose(split[name], grad, rtol=0, atol=1e-4 * scale + 1e-12), name


def test_validation_writes_metrics_and_a_preview(pairs12: Path, micro_start: Path, tmp_path: Path) -> None:
    train(options(pairs12, tmp_path, "fuse", init=micro_start, val_count=2, steps=2, batch_size=4), echo=quiet)
    header, *rows = (tmp_path / "val.csv").read_text().splitlines()
    assert {"loss", "Qabf", "SCD"} <= set(header.split(",")) and rows
    preview = cv2.imread(str(tmp_path / "preview.png"))
    assert preview.shape[0] == 64 and preview.shape[1] > 3 * 64  # IR | VIS | fused at the micro model size
    assert (tmp_path / "train.csv").is_file() and (tmp_path / "model.safetensors").is_file()


def test_split_report_scores_each_model_beside_the_baselines_and_pictures_what_it_scored(
        pairs8: Path, micro_start: Path) -> None:
    """The test-split report: every model and both baselines scored on every pair, a model under two labels scored
    alike, and a pictured pair's row is IR | VIS | each model's fusion exactly as the runtime gives it."""
    pairs, _ = select_pairs([pairs8])
    other = micro_start.with_name("other.safetensors")
    save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=4), other)
    report = split_report({"a": micro_start, "again": micro_start, "b": other}, pairs[:3], ("Qabf", "SSIM"),
                         pictured=(pairs[1].name,))
    assert list(report.scores) == ["a", "again", "b", "mean", "max"]
    assert report.scores["a"] == report.scores["again"] and report.scores["a"] != report.scores["b"]
    assert all(set(values) == {"Qabf", "SSIM"} for values in report.scores.values())
    assert list(report.pictures) == [pairs[1].name]
    ir, vis = read_image(pairs[1].ir, "IR"), read_image(pairs[1].vis, "VIS")
    with Fuser.open(other, "torch", device="cpu") as fuser:
        fused = fuser.fuse(ir, vis)
    picture = report.pictures[pairs[1].name]
    height, width = vis.shape[:2]
    assert picture.shape == (height, 5 * width + 4 * 4, 3)  # IR, VIS, a, again, b with 4 px gaps
    assert np.array_equal(picture[:, -width:], fused)
    assert stack_rows([picture, picture], 300).shape == (2 * round(height * 300 / picture.shape[1]), 300, 3)


DDP_SCRIPT = """
import itertools
import os
import sys
from pathlib import Path
from safetensors.torch import save_file
from maefuse_deploy.train.trainer import Trainer, TrainOptions, train

data, out = Path(sys.argv[1]), Path(sys.argv[2])
opts = TrainOptions(stage="fuse", data=[data], out=out, config="maefuse-micro", init=Path(sys.argv[3]), val_count=0,
                    batch_size=2, lr=1e-3, steps=4, progress=False, device="cpu", train=("fusion", "decoder"))
rank = int(os.environ["RANK"])
result = train(opts, echo=lambda m: None)
save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
"""


def test_torchrun_two_processes_keep_identical_weights(pairs8: Path, micro_start: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(pairs8), str(out), str(micro_start)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    start = load_file(str(micro_start))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not torch.equal(rank0["fusion.fc1.weight"], start["fusion.fc1.weight"])
    assert (out / "model.safetensors").is_file()


# -- errors ------------------------------------------------------------------------------------------------------

def run_cli(*args: str) -> tuple[int, str]:
    """Exit code and the error line (stderr also carries progress notes; exactly one line must be an error)."""
    result = CliRunner().invoke(train_main, [*args, "--config", "maefuse-micro", "--steps", "1", "--no-progress",
                                             "--device", "cpu"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and not result.stdout, result.stderr
    return result.exit_code, errors[0]


def test_empty_folders_fail_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        train(options(tmp_path, tmp_path / "out", "mae"), echo=quiet)
    code, err = run_cli("--stage", "mae", "--data", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code != 0 and "holds no images" in err


def test_unmatched_names_fail_in_one_line(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "d", 3)
    (data / "vi" / "p01.png").rename(data / "vi" / "other.png")
    code, err = run_cli("--stage", "align", "--data", str(data), "--out", str(tmp_path / "out"))
    assert code != 0 and "unmatched names" in err


def test_unreadable_image_fails_in_one_line(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "d", 3)
    (data / "ir" / "p02.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"p02\.png"):
        train(options(data, tmp_path / "out", "fuse"), echo=quiet)
    code, err = run_cli("--stage", "fuse", "--data", str(data), "--out", str(tmp_path / "out"))
    assert code != 0 and "not a readable image" in err


def test_checkpoint_of_another_config_fails_in_one_line(pairs8: Path, tmp_path: Path) -> None:
    other = tmp_path / "tiny-shaped.safetensors"
    save_checkpoint(build_model(CONFIGS["maefuse-micro"].replace(name="micro-wide", embed_dim=64), seed=0), other)
    with pytest.raises(CheckpointError):
        train(options(pairs8, tmp_path / "out", "align", init=other), echo=quiet)
    code, err = run_cli("--stage", "align", "--data", str(pairs8), "--out", str(tmp_path / "o"), "--init", str(other),
                        "--batch-size", "8")
    assert code != 0 and "micro-wide" in err


def test_resume_of_another_stage_fails_in_one_line(pairs8: Path, tmp_path: Path) -> None:
    train(options(pairs8, tmp_path, "decoder", steps=1, batch_size=16), echo=quiet)
    with pytest.raises(CheckpointError, match="belongs to stage decoder"):
        train(options(pairs8, tmp_path, "align", resume=True), echo=quiet)


def test_test50_is_held_out_by_default(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "d", 10)
    (data / "test50.txt").write_text("p00\np01.png\n")
    chosen, notes = select_pairs([data])
    assert {p.name for p in chosen} == {f"p{k:02d}" for k in range(2, 10)} and "test50.txt" in notes[0]
    assert len(select_pairs([data], holdout_default=False)[0]) == 10


def test_validation_is_the_last_names_or_the_named_split_and_never_trained_on(tmp_path: Path) -> None:
    """The pairs maefuse-train validates on (and benchmarks/validation_proxy.py scores) come from one rule."""
    pairs, _ = select_pairs([make_pairs(tmp_path / "d", 10)])
    train_pairs, val_pairs = split_validation(pairs, None, 3)
    assert [p.name for p in val_pairs] == ["p07", "p08", "p09"] and len(train_pairs) == 7
    (tmp_path / "val.txt").write_text("p02\np05.png\n")
    train_pairs, val_pairs = split_validation(pairs, tmp_path / "val.txt", 3)
    assert [p.name for p in val_pairs] == ["p02", "p05"]
    assert not {p.name for p in train_pairs} & {"p02", "p05"} and len(train_pairs) == 8
    assert split_validation(pairs, None, 10) == (pairs, [])  # nothing left to train on: no validation
    assert split_validation(pairs, None, 0) == (pairs, [])


def test_roadscene_training_split_excludes_test50(roadscene: Path) -> None:
    root = roadscene
    chosen, _ = select_pairs([root])
    assert len(chosen) == 171
    assert not {p.name for p in chosen} & set(read_names(root / "test50.txt"))


def window_of(plane: np.ndarray, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(normalise(plane[top : top + height, left : left + width]))


def test_photometric_changes_tones_only_reproducibly_and_keeps_the_crops(msrs: Path) -> None:
    """--photometric: the same crops and flips as without it (its own random stream), each plane through a
    monotone tone curve, the same on every replay of an epoch."""
    pairs, _ = select_pairs([msrs])
    plain = PairDataset(pairs, (64, 64), 16, "native", Augment(flip=True, native_tokens=12), seed=0)
    toned = PairDataset(pairs, (64, 64), 16, "native", Augment(flip=True, native_tokens=12, photometric=1.0), seed=0)
    indices = [0, 1, 2, 3]
    before, after = plain.__getitems__(indices), toned.__getitems__(indices)
    assert all(torch.equal(a["origin"], b["origin"]) for a, b in zip(before, after, strict=True))
    changed = 0
    for a, b in zip(before, after, strict=True):
        for key in ("ir", "vis"):
            assert a[key].shape == b[key].shape
            # A monotone curve keeps the order of the pixels' grey levels: the same crop, another tone.
            x, y = a[key][0].flatten(), b[key][0].flatten()
            order = torch.argsort(x, stable=True)
            assert bool((y[order][1:] >= y[order][:-1] - 1e-6).all())
            changed += int(not torch.equal(a[key], b[key]))
    assert changed >= 6
    again = toned.__getitems__(indices)
    assert all(torch.equal(a["vis"], b["vis"]) for a, b in zip(after, again, strict=True))


def test_native_crops_share_one_grid_per_batch_and_keep_native_pixels(tmp_path: Path) -> None:
    roots = [make_pairs(tmp_path / "a", 4, (100, 130)), make_pairs(tmp_path / "b", 4, (90, 150))]
    pairs, _ = select_pairs(roots)
    data = PairDataset(pairs, (64, 64), 16, "native", Augment(native_tokens=12, native_positions=10), seed=0)
    batches = ([0, 1, 4, 5], [2, 6, 3, 7], [0, 2, 4, 6])
    windows, origins = set(), set()
    for epoch in range(4):
        data.set_epoch(epoch)
        for indices in batches:
            items = data.__getitems__(indices)
            (window,) = {tuple(item["ir"].shape) for item in items} | {tuple(item["vis"].shape) for item in items}
            _, height, width = window
            assert height % 16 == 0 and width % 16 == 0 and (height // 16) * (width // 16) <= 12
            windows.add((height, width))
            # One token origin per batch, keeping the whole grid inside the 10x10 positions to be trained.
            (origin,) = {tuple(item["origin"].tolist()) for item in items}
            assert 0 <= origin[0] <= 10 - height // 16 and 0 <= origin[1] <= 10 - width // 16
            origins.add(origin)
            for index, item in zip(indices, items, strict=True):
                # Native resolution: the crop is a slice of the stored plane, not a resized copy.
                source = data.images[index][0]
                assert any(
                    torch.equal(item["ir"], window_of(source, top, left, height, width))
                    for top in range(source.shape[0] - height + 1)
                    for left in range(source.shape[1] - width + 1)
                )
            again = data.__getitems__(indices)
            assert all(torch.equal(a["ir"], b["ir"]) for a, b in zip(items, again, strict=True))
    assert len(windows) >= 3 and len(origins) >= 3  # grids and origins are drawn per batch, not fixed


def test_native_crop_training_makes_a_native_model(pairs12: Path, micro_start: Path, tmp_path: Path) -> None:
    result = train(options(pairs12, tmp_path, "fuse", init=micro_start, native_tokens=16, val_count=2, steps=2,
                           batch_size=4), echo=quiet)
    assert result.model_path is not None
    model, _ = load_checkpoint(result.model_path, "maefuse-micro")  # the named config still matches the file
    assert model.config.policy == "native"
    # Validation ran on whole images at their own size (72x80, padded to 80x80 for the network and cropped back),
    # not at the 64x64 model size.
    preview = cv2.imread(str(tmp_path / "preview.png"))
    assert preview.shape[0] == 72
    fuser = Fuser.from_checkpoint(result.model_path)
    assert fuser.policy == "native"
    ir = cv2.imread(str(pairs12 / "ir" / "p00.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(pairs12 / "vi" / "p00.png"))
    assert fuser.fuse(ir, vis).shape == vis.shape
    assert Fuser.from_checkpoint(result.model_path, policy="official").policy == "official"


def test_native_crops_and_model_size_crops_exclude_each_other(pairs8: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="exclude each other"):
        train(options(pairs8, tmp_path, "mae", native_tokens=16, crop=True), echo=quiet)
