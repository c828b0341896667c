"""``--init timm:MODEL``: timm's MAE encoders (e.g. vit_large_patch16_224.mae) as a training start.

The model here is created locally and registered with timm under a test name (no download): the same path
``timm:vit_large_patch16_224.mae`` takes, with a ViT shaped like maefuse-micro's encoder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from maefuse_deploy.cli.train import main as train_main
from maefuse_deploy.errors import CheckpointError
from maefuse_deploy.model.checkpoint import load_checkpoint

NAME = "maefuse_test_vit_micro"


def _micro_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(1234)  # "pretrained": the same weights every time
    kwargs.pop("pretrained", None)
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                             qkv_bias=True, **kwargs)


if NAME not in timm.list_models():

    @register_model
    def maefuse_test_vit_micro(pretrained: bool = False, **kwargs) -> VisionTransformer:
        return _micro_vit(**kwargs)


def test_timm_encoder_loads_into_our_encoder():
    model, report = load_checkpoint(f"timm:{NAME}", "maefuse-micro", allow_partial=True)
    assert report.layout == "upstream-mae" and any("fusion layer" in part for part in report.missing_parts)
    reference = timm.create_model(NAME, pretrained=True, num_classes=0).state_dict()
    ours = model.state_dict()
    compared = [key for key in reference if f"mae.{key}" in ours and "pos_embed" not in key]
    assert len(compared) == len([k for k in ours if k.startswith("mae.") and "decoder" not in k
                                 and "pos_embed" not in k])
    for key in compared:
        assert torch.equal(ours[f"mae.{key}"], reference[key]), key


def test_unknown_timm_model_is_a_one_line_error():
    with pytest.raises(CheckpointError, match="timm cannot create") as info:
        load_checkpoint("timm:no_such_model_anywhere", "maefuse-micro", allow_partial=True)
    assert "\n" not in str(info.value)


def test_train_accepts_timm_init(tmp_path: Path):
    rng = np.random.default_rng(0)
    for folder in ("ir", "vi"):
        (tmp_path / "d" / folder).mkdir(parents=True)
        for index in range(4):
            channels = () if folder == "ir" else (3,)
            image = rng.integers(0, 256, (64, 64, *channels), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "d" / folder / f"p{index:02d}.png"), image)
    result = CliRunner().invoke(train_main, [
        "--stage", "decoder", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "out"), "--init", f"timm:{NAME}",
        "--config", "maefuse-micro", "--steps", "1", "--no-progress", "--device", "cpu", "--val-count", "1",
        "--batch-size", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "upstream-mae" in result.output and (tmp_path / "out" / "model.safetensors").is_file()
