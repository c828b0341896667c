"""Warm start at another patch size (model/resample.py): the resampled model IS the trained one on shrunk frames."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as functional

from maefuse_deploy.errors import CheckpointError
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.model.maefuse import build_model
from maefuse_deploy.model.resample import resample_patch, warm_start
from maefuse_deploy.model.sources import TRAINED_MODELS


def test_patch_32_model_equals_the_trained_model_on_frames_shrunk_twice() -> None:
    tiny, _ = load_checkpoint(TRAINED_MODELS["maefuse-tiny"])
    rt = resample_patch(tiny, CONFIGS["maefuse-tiny"].replace(name="tiny-p32", patch_size=32))
    assert rt.config.patch_size == 32 and rt.config.policy == "official"  # the policy is the caller's to keep
    generator = torch.Generator().manual_seed(0)
    ir, vis = (torch.randn(1, 3, 96, 128, generator=generator) for _ in range(2))  # 3 x 4 tokens of 32
    with torch.no_grad():
        direct = rt(ir, vis)
        shrunk = tiny(functional.avg_pool2d(ir, 2), functional.avg_pool2d(vis, 2))
    enlarged = shrunk.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert direct.shape == ir.shape
    # float32 rounding of sums taken in another order; a wrong kernel or row order is off by O(1).
    assert float((direct - enlarged).abs().max()) < 1e-4


def test_only_a_whole_factor_of_the_patch_may_differ() -> None:
    micro = build_model(CONFIGS["maefuse-micro"], seed=0)
    with pytest.raises(CheckpointError, match="only the patch size may differ"):
        resample_patch(micro, CONFIGS["maefuse-micro"].replace(patch_size=8))  # finer: not a whole factor
    with pytest.raises(CheckpointError, match="only the patch size may differ"):
        resample_patch(micro, CONFIGS["maefuse-micro"].replace(patch_size=32, embed_dim=64))


def test_training_init_resamples_but_inference_loading_refuses(tmp_path) -> None:
    path = save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=0), tmp_path / "micro.safetensors")
    wanted = CONFIGS["maefuse-micro"].replace(name="micro-p32", patch_size=32)
    with pytest.raises(CheckpointError, match="was saved for maefuse-micro"):
        load_checkpoint(path, wanted)  # fusing with the wrong config is an error, never a silent resample
    model, report = load_checkpoint(path, wanted, allow_warm_start=True)
    assert model.config.patch_size == 32
    assert "warm start from maefuse-micro: resampled to patch 32" in report.notes[-1]


def test_real_time_model_starts_with_every_tensor_of_the_built_in_model() -> None:
    tiny, _ = load_checkpoint(TRAINED_MODELS["maefuse-tiny"])
    rt, note = warm_start(tiny, CONFIGS["maefuse-rt"])
    assert rt.config.num_heads == 1 and rt.config.decoder_num_heads == 2
    assert "attention regrouped into num_heads 1, decoder_num_heads 2" in note
    rt_state = rt.state_dict()
    assert all(torch.equal(value, rt_state[key]) for key, value in tiny.state_dict().items())
    # The same tensors grouped into fewer heads are a different function: the reason it is fine-tuned after.
    generator = torch.Generator().manual_seed(0)
    ir, vis = (torch.randn(1, 3, 64, 64, generator=generator) for _ in range(2))
    with torch.no_grad():
        assert float((rt(ir, vis) - tiny(ir, vis)).abs().max()) > 1e-3


def test_warm_start_refuses_other_widths_and_depths() -> None:
    micro = build_model(CONFIGS["maefuse-micro"], seed=0)
    with pytest.raises(CheckpointError, match="only head counts and the patch size"):
        warm_start(micro, CONFIGS["maefuse-micro"].replace(depth=3, num_heads=1))
    with pytest.raises(CheckpointError, match="only head counts and the patch size"):
        warm_start(micro, CONFIGS["maefuse-micro"].replace(patch_size=24, img_size=(96, 96)))
