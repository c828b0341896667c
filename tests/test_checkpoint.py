"""Checkpoint loading: the released layouts (docs/model.md §3), upstream MAE files, our safetensors format."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch

from maefuse_deploy.errors import CheckpointError
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint


def block_shapes(prefix: str, dim: int, count: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for b in range(count):
        p = f"{prefix}{b}."
        shapes |= {
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (4 * dim, dim), p + "mlp.fc1.bias": (4 * dim,),
            p + "mlp.fc2.weight": (dim, 4 * dim), p + "mlp.fc2.bias": (dim,),
        }
    return shapes


def released_shapes() -> dict[str, tuple[int, ...]]:
    """The released final_new_60.pth layout, written out from docs/model.md §3, not taken from our model."""
    shapes = {
        "model1.pos_embed": (1, 1600, 1024),
        "model1.patch_embed.proj.weight": (1024, 3, 16, 16), "model1.patch_embed.proj.bias": (1024,),
        "model1.norm.weight": (1024,), "model1.norm.bias": (1024,),
        "model1.decoder_embed.weight": (512, 1024), "model1.decoder_embed.bias": (512,),
        "model1.decoder_pos_embed": (1, 1600, 512),
        "model1.decoder_norm.weight": (512,), "model1.decoder_norm.bias": (512,),
        "model1.decoder_pred.weight": (768, 512), "model1.decoder_pred.bias": (768,),
        "model2.pos_embed": (1, 1600, 1024),
        "model2.fc1.weight": (4096, 1024), "model2.fc1.bias": (4096,),
        "model2.fc2.weight": (1024, 4096), "model2.fc2.bias": (1024,),
        "model2.ln.weight": (1024,), "model2.ln.bias": (1024,),
    }
    for attn in ("cross_model", "merge_model"):
        shapes |= {
            f"model2.{attn}.in_proj_weight": (3072, 1024), f"model2.{attn}.in_proj_bias": (3072,),
            f"model2.{attn}.out_proj.weight": (1024, 1024), f"model2.{attn}.out_proj.bias": (1024,),
        }
    shapes |= block_shapes("model1.blocks.", 1024, 24)
    shapes |= block_shapes("model1.decoder_blocks.", 512, 4)
    return shapes


@pytest.fixture(scope="module")
def released_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # float16 halves the 1.3 GB of files the tests write; loading casts to the model's float32.
    return {k: torch.randn(s, generator=generator, dtype=torch.float32).half() for k, s in released_shapes().items()}


def save_released(state, path):
    torch.save({"model": state}, path)
    return path


@pytest.mark.slow
def test_released_fused_checkpoint_loads_strictly_into_l640(released_state, tmp_path):
    path = save_released(released_state, tmp_path / "final_new_60.pth")
    model, report = load_checkpoint(path, "maefuse-l640")
    assert report.layout == "released-fused" and report.complete
    assert report.loaded == len(released_state)
    ours = model.state_dict()
    for theirs, mine in (("model2.fc1.weight", "fusion.fc1.weight"), ("model1.blocks.23.mlp.fc2.bias",
                         "mae.blocks.23.mlp.fc2.bias"), ("model1.decoder_pred.weight", "mae.decoder_pred.weight")):
        assert torch.equal(ours[mine], released_state[theirs].float())
    # The config is recognised from the shapes alone, too.
    assert load_checkpoint(path)[0].config.name == "maefuse-l640"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("remove", r"missing .*model2\.merge_model\.out_proj\.bias"),
        ("add", r"unexpected .*model2\.extra_gate"),
        ("reshape", r"mis-shaped .*model2\.ln\.weight \(512,\) vs \(1024,\)"),
    ],
)
def test_released_checkpoint_with_a_wrong_key_fails_naming_it(released_state, tmp_path, change, expected):
    state = dict(released_state)
    if change == "remove":
        del state["model2.merge_model.out_proj.bias"]
    elif change == "add":
        state["model2.extra_gate"] = torch.zeros(3)
    else:
        state["model2.ln.weight"] = torch.zeros(512)
    path = save_released(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path, "maefuse-l640")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def micro_state(prefix_mae="model1.", prefix_fusion="model2."):
    model = build_model(get_config("maefuse-micro"), seed=0)
    state = {}
    for key, value in model.state_dict().items():
        part, rest = key.split(".", 1)
        state[(prefix_mae if part == "mae" else prefix_fusion) + rest] = value.clone()
    return model, state


def test_our_safetensors_round_trip_keeps_config_and_weights(tmp_path):
    model = build_model(get_config("maefuse-micro").replace(attention="tokens"), seed=7)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, report = load_checkpoint(path)
    assert report.layout == "maefuse" and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    path = save_checkpoint(build_model(get_config("maefuse-micro")), tmp_path / "micro.safetensors")
    with pytest.raises(CheckpointError, match=r"saved for maefuse-micro, not maefuse-tiny"):
        load_checkpoint(path, "maefuse-tiny")


def test_trained_for_policy_travels_with_the_weights(tmp_path):
    native = get_config("maefuse-micro").replace(policy="native")
    path = save_checkpoint(build_model(native, seed=1), tmp_path / "native.safetensors")
    assert load_checkpoint(path)[0].config.policy == "native"
    # Naming the config (whose policy is official) still loads the file; the file's policy wins.
    assert load_checkpoint(path, "maefuse-micro")[0].config.policy == "native"
    with pytest.raises(ValueError, match="policy must be one of"):
        get_config("maefuse-micro").replace(policy="stretch")


def test_released_mae_resume_file_with_namespace_loads_partially(tmp_path):
    _, state = micro_state()
    mae_only = {k[len("model1."):]: v for k, v in state.items() if k.startswith("model1.")}
    path = tmp_path / "resume.pth"
    torch.save({"model": mae_only, "optimizer": {}, "epoch": 49, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match=r"MAE file .*fusion layer"):
        load_checkpoint(path, "maefuse-micro")
    model, report = load_checkpoint(path, "maefuse-micro", allow_partial=True)
    assert report.layout == "released-mae"
    assert report.missing_parts == ["fusion layer (train it: maefuse-train --stage align, then fuse)"]
    assert torch.equal(model.state_dict()["mae.blocks.1.attn.qkv.weight"], mae_only["blocks.1.attn.qkv.weight"])


def test_upstream_mae_with_class_token_and_deeper_decoder_says_what_is_missing(tmp_path):
    _, state = micro_state()
    upstream = {k[len("model1."):]: v for k, v in state.items() if k.startswith("model1.")}
    upstream["cls_token"] = torch.zeros(1, 1, 32)
    upstream["mask_token"] = torch.zeros(1, 1, 32)
    upstream["pos_embed"] = torch.zeros(1, 1 + 196, 32)  # 14x14 + class token, as released by MAE
    upstream["decoder_pos_embed"] = torch.zeros(1, 1 + 196, 32)
    for key in [k for k in upstream if k.startswith("decoder_blocks.0.")]:
        upstream[key.replace("decoder_blocks.0.", "decoder_blocks.1.")] = upstream[key].clone()
    path = tmp_path / "mae_visualize.pth"
    torch.save({"model": upstream}, path)
    model, report = load_checkpoint(path, "maefuse-micro", allow_partial=True)
    assert report.layout == "upstream-mae"
    assert any("1-block decoder (the file has 2 blocks" in part for part in report.missing_parts)
    assert any("fusion layer" in part for part in report.missing_parts)
    # The 4x4 grid's tables come from the formula, not from the 14x14 file.
    assert model.mae.pos_embed.abs().sum() > 0


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    script = (
        "import os, torch\n"
        "class Boom:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {tmp_path}/pwned',))\n"
        f"torch.save({{'model': {{'x': torch.zeros(1)}}, 'hook': Boom()}}, {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(CheckpointError, match=r"pickled objects other than tensors .*--trust-pickle"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("content", "pattern"),
    [(b"not a checkpoint at all", r"not a readable torch checkpoint"), (None, r"checkpoint not found")],
)
def test_unreadable_or_missing_checkpoint(tmp_path, content, pattern):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert re.search(re.escape(str(path)), str(info.value))
