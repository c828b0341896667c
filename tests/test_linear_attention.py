"""Linear block attention (config ``block_attention="linear"``, model/vit.py: LinearAttention): what it computes,
how it is stored, exported and refused where the authors' code cannot run it."""

from __future__ import annotations

import onnx
import pytest
import torch

from maefuse_deploy.backends.release_style import ReleaseStyleBackend
from maefuse_deploy.backends.torch import TorchBackend
from maefuse_deploy.bench.flops import count_flops
from maefuse_deploy.errors import CheckpointError, InputError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model import build_model, get_config
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.sources import trained_weights
from maefuse_deploy.model.vit import Attention, LinearAttention

MICRO_LINEAR = get_config("maefuse-micro").replace(name="micro-linear", block_attention="linear")


def _attention(dim: int = 48, heads: int = 2) -> tuple[Attention, LinearAttention]:
    softmax = Attention(dim, num_heads=heads, qkv_bias=True).double().eval()
    linear = LinearAttention(dim, num_heads=heads, qkv_bias=True).double().eval()
    linear.load_state_dict(softmax.state_dict())
    softmax.fused = False
    return softmax, linear


def test_linear_attention_is_the_first_order_expansion_of_the_softmax_weights() -> None:
    torch.manual_seed(0)
    _, linear = _attention()
    x = torch.randn(2, 37, 48, dtype=torch.float64)
    batch, tokens, dim = x.shape
    q, k, v = linear.qkv(x).reshape(batch, tokens, 3, 2, 24).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q * linear.scale) @ k.transpose(-2, -1)
    weights = (1 + logits - logits.mean(dim=-1, keepdim=True)) / tokens  # (B, heads, N, N), rows sum to 1
    expected = linear.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))
    with torch.no_grad():
        assert torch.allclose(linear(x), expected, rtol=0, atol=1e-12)


def test_linear_attention_approaches_softmax_attention_as_the_logits_shrink() -> None:
    torch.manual_seed(1)
    softmax, linear = _attention()
    x = torch.randn(1, 50, 48, dtype=torch.float64)
    errors = []
    with torch.no_grad():
        for shrink in (1.0, 0.1, 0.01):
            softmax.scale = linear.scale = _attention()[0].scale * shrink
            errors.append((softmax(x) - linear(x)).abs().max().item())
    # A second-order remainder: 10x smaller logits, ~100x smaller difference (a first-order one would give ~10x).
    assert errors[1] < errors[0] / 50 and errors[2] < errors[1] / 50 and errors[2] > 0


def test_config_refuses_an_unknown_block_attention() -> None:
    with pytest.raises(ValueError, match="block_attention must be one of"):
        get_config("maefuse-micro").replace(block_attention="performer")


def test_checkpoint_keeps_linear_attention_and_it_is_another_network(tmp_path) -> None:
    path = tmp_path / "linear.safetensors"
    save_checkpoint(build_model(MICRO_LINEAR, seed=0), path)
    model, _ = load_checkpoint(path)
    assert model.config.block_attention == "linear"
    assert all(isinstance(block.attn, LinearAttention) for block in [*model.mae.blocks, *model.mae.decoder_blocks])
    # The same tensors loaded as softmax attention would be another model: loading for inference refuses it.
    with pytest.raises(CheckpointError, match="saved for micro-linear"):
        load_checkpoint(path, get_config("maefuse-micro").replace(name="micro-linear-softmax"))


def test_training_starts_linear_attention_from_the_shipped_softmax_weights() -> None:
    softmax = trained_weights("maefuse-rt")
    model, report = load_checkpoint(softmax, get_config("maefuse-rt-linear"), allow_warm_start=True)
    assert "block attention softmax -> linear" in " ".join(report.notes)
    source, _ = load_checkpoint(softmax)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(),
                                                 strict=True))
    with pytest.raises(CheckpointError, match="saved for maefuse-rt"):
        load_checkpoint(softmax, get_config("maefuse-rt-linear"))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_linear_graph_has_no_softmax_and_onnxruntime_gives_the_torch_output(tmp_path, precision) -> None:
    path = tmp_path / "linear.onnx"
    report = export_onnx(build_model(MICRO_LINEAR, seed=0), path, ExportSpec(64, 64, precision=precision))
    assert report.verification  # export_onnx verified onnxruntime against torch on the shipped pairs
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Softmax" not in ops


def test_release_style_refuses_linear_attention() -> None:
    with pytest.raises(InputError, match="softmax attention"):
        ReleaseStyleBackend(build_model(MICRO_LINEAR, seed=0))
    assert ReleaseStyleBackend.unsupported_block_attention("linear")  # the benchmark skips its row by this rule
    assert not ReleaseStyleBackend.unsupported_block_attention("softmax")
    assert not TorchBackend.unsupported_block_attention("linear")  # runs the model's own modules: every kind


def test_linear_attention_flops_at_640x480() -> None:
    softmax, linear = get_config("maefuse-rt"), get_config("maefuse-rt-linear")
    tokens, dim, dec = 1200, softmax.embed_dim, softmax.decoder_embed_dim
    saved = count_flops(softmax, (30, 40)).total - count_flops(linear, (30, 40)).total
    # Per image and block 2 x 2 N^2 D -> K^T V (2 N D d), the fold of the projection (2 D d D) and mean(V)'s
    # projection (2 D D); the encoder has one head (d = D), the decoder two (d = D / 2).
    def linear_block(width: int, head: int) -> int:
        return 2 * tokens * width * head + 2 * width * head * width + 2 * width * width

    expected = (2 * softmax.depth * (4 * tokens * tokens * dim - linear_block(dim, dim))
                + softmax.decoder_depth * (4 * tokens * tokens * dec - linear_block(dec, dec // 2)))
    assert saved == pytest.approx(expected, rel=1e-12)


def test_openvino_int8_finds_each_linear_attention_output_projection(tmp_path) -> None:
    ov = pytest.importorskip("openvino")
    from maefuse_deploy.backends import openvino as ov_backend

    path = tmp_path / "linear.onnx"
    export_onnx(build_model(MICRO_LINEAR, seed=0), path, ExportSpec(64, 64), verify=False)
    graph = ov.Core().read_model(str(path))
    activations = ov_backend.activation_matmuls(graph)
    blocks = MICRO_LINEAR.depth + MICRO_LINEAR.decoder_depth
    # K^T V and Q (Cov W^T): the Q, K and V rows of qkv and the transposed projection are weights in the graph
    # (export/trace.py folds them; unfolded, the three products with them counted too: 5 a block).
    assert len(activations) == 2 * blocks
    # The output projection, folded into Cov W^T and applied to mean(V), is left out of calibration as softmax
    # attention's is (two MatMuls a block; quantize_int8 quantizes their input per frame); the count of a graph
    # without them would be 0.
    assert len(ov_backend.attention_projections(graph, activations)) == 2 * blocks


def test_openvino_weights_int8_has_linear_attention_matmuls_to_quantize_and_softmax_none() -> None:
    """The torch-converted model (openvino-weights) fuses softmax attention into one op NNCF leaves alone; linear
    attention keeps two activation MatMuls a block, which int8 quantizes."""
    ov = pytest.importorskip("openvino")
    from maefuse_deploy.backends.openvino import activation_matmuls, attention_calibrates
    from maefuse_deploy.model import set_fused_attention

    example = (torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    for config, expected in ((MICRO_LINEAR, 2), (get_config("maefuse-micro"), 0)):
        model = build_model(config, seed=0)
        set_fused_attention(model, False)  # as openvino-weights converts it
        converted = ov.convert_model(model, example_input=example, input=[ov.PartialShape([1, 3, 64, 64])] * 2)
        blocks = config.depth + config.decoder_depth
        activations = activation_matmuls(converted)
        assert len(activations) == expected * blocks
        assert attention_calibrates(converted, activations) == bool(expected)
