"""The network: position embeddings, both attention semantics, batch invariance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maefuse_deploy.model import MaeFuseConfig, build_model, get_config, sincos_2d

WIDE = MaeFuseConfig(
    name="test-wide", img_size=(48, 64), embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
    decoder_depth=1, decoder_num_heads=2, fusion_num_heads=4,
)


def closed_form(dim: int, rows: int, cols: int) -> torch.Tensor:
    """docs/model.md §1 written out token by token: first half encodes the column, second half the row."""
    quarter = dim // 4
    table = torch.empty(rows * cols, dim, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            token = r * cols + c
            for k in range(quarter):
                w = 10000 ** (-k / quarter)
                table[token, k] = math.sin(c * w)
                table[token, quarter + k] = math.cos(c * w)
                table[token, 2 * quarter + k] = math.sin(r * w)
                table[token, 3 * quarter + k] = math.cos(r * w)
    return table.float()


@pytest.mark.parametrize(("dim", "rows", "cols"), [(32, 4, 4), (64, 3, 5), (16, 7, 2)])
def test_position_embeddings_match_closed_form(dim, rows, cols):
    assert torch.allclose(sincos_2d(dim, rows, cols), closed_form(dim, rows, cols), atol=1e-6, rtol=0)


def test_position_embeddings_on_released_native_grid():
    # 640x480 native: 40 columns x 30 rows; column first (the upstream comment says the opposite).
    table = sincos_2d(1024, 30, 40)
    token = 7 * 40 + 13  # row 7, column 13
    assert table.shape == (1200, 1024)
    assert table[token, 0].item() == pytest.approx(math.sin(13.0), abs=1e-6)
    assert table[token, 512].item() == pytest.approx(math.sin(7.0), abs=1e-6)


def test_shifted_grid_positions_are_the_slice_of_a_larger_grid():
    # Training crops start their tokens at a random (row, col); that must be the same table, sliced.
    whole = sincos_2d(32, 9, 12).view(9, 12, 32)
    shifted = sincos_2d(32, 4, 5, first_row=3, first_col=6).view(4, 5, 32)
    assert torch.equal(shifted, whole[3:7, 6:11])


def release_fusion(model, ir_tokens, vis_tokens):
    """The released fusion layer, run the released way: nn.MultiheadAttention (batch_first=False) on (B, N, C)."""
    fusion = model.fusion
    dim = fusion.fc1.in_features
    heads = fusion.merge_model.num_heads
    modules = {}
    for name in ("cross_model", "merge_model"):
        mha = nn.MultiheadAttention(dim, heads)  # batch_first=False, as the release
        source = getattr(fusion, name)
        mha.load_state_dict(source.state_dict())
        modules[name] = mha.eval()
    with torch.no_grad():
        pos = fusion.pos_embed
        v, i = vis_tokens + pos, ir_tokens + pos
        p = modules["cross_model"](i, v, v)[0] + modules["cross_model"](v, i, i)[0]
        f = modules["merge_model"](p, v, v)[0] + modules["merge_model"](p, i, i)[0]
        return fusion.ln(f + fusion.fc2(torch.nn.functional.gelu(fusion.fc1(f))))


def randomise_biases(model):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "ln." in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)


def test_official_attention_equals_release_multihead_attention_at_batch_one():
    model = build_model(WIDE, seed=1)
    randomise_biases(model)
    torch.manual_seed(0)
    ir, vis = torch.randn(1, 3, 48, 64), torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        ir_tokens, vis_tokens = model.encode_pair(ir, vis)
        ours = model.fusion(ir_tokens, vis_tokens, (3, 4))
    reference = release_fusion(model, ir_tokens, vis_tokens)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_official_output_does_not_depend_on_batch_companions():
    model = build_model(WIDE, seed=2)
    randomise_biases(model)
    torch.manual_seed(1)
    ir, vis = torch.randn(5, 3, 48, 64), torch.randn(5, 3, 48, 64)
    with torch.no_grad():
        batched = model(ir, vis)
        for k in range(5):
            alone = model(ir[k : k + 1], vis[k : k + 1])
            assert (batched[k : k + 1] - alone).abs().max().item() <= 1e-5


def test_release_semantics_do_depend_on_batch_companions():
    """Why `official` exists: the released code mixes a batch's images once B > 1."""
    model = build_model(WIDE, seed=3)
    torch.manual_seed(2)
    ir, vis = torch.randn(3, 3, 48, 64), torch.randn(3, 3, 48, 64)
    with torch.no_grad():
        ir_tokens, vis_tokens = model.encode_pair(ir, vis)
        together = release_fusion(model, ir_tokens, vis_tokens)
        alone = release_fusion(model, ir_tokens[:1], vis_tokens[:1])
    assert (together[:1] - alone).abs().max().item() > 1e-3


def test_tokens_attention_equals_batch_first_multihead_attention():
    config = WIDE.replace(attention="tokens")
    model = build_model(config, seed=4)
    randomise_biases(model)
    fusion = model.fusion
    torch.manual_seed(3)
    i, v = torch.randn(2, 12, 64), torch.randn(2, 12, 64)
    mha = nn.MultiheadAttention(64, 4, batch_first=True)
    mha.load_state_dict(fusion.cross_model.state_dict())
    with torch.no_grad():
        ours = fusion.cross_model.attend(i, v, v)
        reference = mha(i, v, v, need_weights=False)[0]
    assert (ours - reference).abs().max().item() <= 1e-5


def test_folded_official_map_equals_unfolded():
    model = build_model(WIDE, seed=5)
    randomise_biases(model)
    torch.manual_seed(4)
    ir_tokens, vis_tokens = torch.randn(2, 12, 64), torch.randn(2, 12, 64)
    with torch.no_grad():
        unfolded = model.fusion(ir_tokens, vis_tokens, (3, 4))
        model.fusion.folded = model.fusion.fold()
        folded = model.fusion(ir_tokens, vis_tokens, (3, 4))
    assert (unfolded - folded).abs().max().item() <= 1e-5


def test_any_grid_runs_and_keeps_the_image_size():
    model = build_model(get_config("maefuse-micro"), seed=0)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 80), torch.randn(2, 3, 48, 80))
    assert out.shape == (2, 3, 48, 80)


def test_released_parameter_counts():
    model = build_model(get_config("maefuse-l640"))
    counts = {"encoder": 0, "decoder": 0, "fusion": 0}
    for name, parameter in model.named_parameters():
        part = "fusion" if name.startswith("fusion.") else "decoder" if ".decoder" in name else "encoder"
        counts[part] += parameter.numel()
    assert 302e6 < counts["encoder"] < 304e6
    assert 13.0e6 < counts["decoder"] < 14.0e6
    assert 16.7e6 < counts["fusion"] < 16.9e6
