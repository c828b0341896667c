"""The C++ runtime's model artefact (export/aoti.py) and the in-graph colour conversions it relies on.

Compiling a package takes a minute or more, so the compiled path is tested by ctest (engines/tests, docs/cpp.md),
which compares the C++ output with the Python Fuser on real pairs; here: the cheap checks.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from maefuse_deploy.errors import InputError
from maefuse_deploy.export.aoti import build_aoti_module, export_aoti
from maefuse_deploy.export.graph import _bgr_to_ycrcb, _ycrcb_to_bgr, grey_of
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.model.maefuse import build_model


def test_graph_colour_conversions_match_opencv() -> None:
    """BGR -> YCrCb -> BGR in the graph equal OpenCV's 8-bit conversions within rounding ties; RGB -> grey exactly."""
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tensor = torch.from_numpy(bgr).permute(2, 0, 1)[None].float()
    ycrcb = _bgr_to_ycrcb(tensor).round().clamp(0, 255)
    want = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    got = ycrcb[0].permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(got - want).max() <= 1 and (got != want).mean() < 0.01
    back = _ycrcb_to_bgr(torch.from_numpy(want).permute(2, 0, 1)[None].float()).round().clamp(0, 255)
    back_want = cv2.cvtColor(want, cv2.COLOR_YCrCb2BGR)
    assert np.abs(back[0].permute(1, 2, 0).numpy() - back_want).max() <= 1
    # The fused grey is the host path's to the grey level: every one of the 2^24 RGB colours.
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(4096, 4096, 3)
    grey = grey_of(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0, 0].numpy()
    np.testing.assert_array_equal(grey, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_aoti_module_takes_uint8_frames_at_the_camera_size() -> None:
    model = build_model(CONFIGS["maefuse-micro"], seed=0)
    module = build_aoti_module(model, (32, 48))
    ir = torch.randint(0, 256, (1, 32, 48), dtype=torch.uint8)
    vis = torch.randint(0, 256, (1, 32, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        fused = module(ir, vis)
    assert fused.shape == (1, 32, 48, 3) and fused.dtype == torch.uint8


def test_aoti_refuses_sizes_off_the_patch_grid_and_other_suffixes(tmp_path) -> None:
    model = build_model(CONFIGS["maefuse-micro"], seed=0)
    with pytest.raises(InputError, match="multiple of the patch size"):
        build_aoti_module(model, (30, 48))
    with pytest.raises(InputError, match=r"must end in \.pt2"):
        export_aoti(model, tmp_path / "model.onnx", (32, 48))
