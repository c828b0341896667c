"""Regression tests for the correctness findings of issue 14: one test per item, named after it. Each failed on
the code before its fix (see the commit messages). Built on ``maefuse-micro`` and tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from maefuse_deploy.train.dataset import select_pairs


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
