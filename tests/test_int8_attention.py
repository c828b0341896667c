"""The int8 attention kernel as the OpenVINO backend uses it (backends/openvino_attention.py): the extension built
here with the machine's compiler, run by OpenVINO's CPU plugin, against attention in float64; only the attention
ops it computes exactly are replaced; where Q, K and V come from the qkv projection (the PyTorch and ONNX frontends'
patterns) the op reads it in place and gives the same numbers to the bit as on transposed copies; openvino-weights'
int8 graphs use it, keep the fused image, and read it back from the cache; where it is off (the switch, the CPU, AMX
unless switched on) the backend says why and keeps OpenVINO's own attention.

Tolerances: the kernel quantizes Q and K per token, each probability row by its maximum and V per channel to 8 bits,
so an output is within a few V steps (max|V| / 127) of float: max error <= 6 % and mean <= 0.4 % of max|V| on
random heads at a trained ViT's scale (engines/tests/test_int8_attention.cpp checks the kernel alone, on more cases).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module

from maefuse_deploy.compare import psnr
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.sample_pairs import load_pairs

require_module("openvino", "pip install -e '.[openvino]'")

import openvino as ov  # noqa: E402
import openvino.opset8 as opset8  # noqa: E402
import openvino.opset13 as ops  # noqa: E402

from maefuse_deploy.backends.cpu_kernels import cpu_flag_set, isa_caps  # noqa: E402
from maefuse_deploy.backends.openvino_attention import (  # noqa: E402
    SWITCH_ENV,
    attention_kernel,
    cpu_why_not,
    int8_attention_note,
    use_int8_attention,
    why_not,
)
from maefuse_deploy.errors import InputError  # noqa: E402

# Whether the kernel can run here at all; the tests that run it switch it on, so that a CPU with AMX (where auto
# leaves it off) tests it too.
CANNOT_RUN = why_not(cpu_flag_set(), isa_caps(), "on")
needs_vnni = pytest.mark.skipif(bool(CANNOT_RUN), reason=f"the kernel cannot run here: {CANNOT_RUN}")


@pytest.fixture
def switched_on(monkeypatch):
    monkeypatch.setenv(SWITCH_ENV, "on")


def sdpa_model(shape: tuple[int, ...], mask: float = 0.0, q_shape: tuple[int, ...] | None = None) -> ov.Model:
    """One ScaledDotProductAttention (the op OpenVINO's PyTorch frontend makes of softmax attention), scale 1/8."""
    q = ops.parameter(list(q_shape or shape), np.float32)
    k = ops.parameter(list(shape), np.float32)
    v = ops.parameter(list(shape), np.float32)
    attention = ops.scaled_dot_product_attention(q, k, v, ops.constant(np.float32(mask)),
                                                 ops.constant(np.float32(0.125)), causal=False)
    return ov.Model([attention], [q, k, v])


def float_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    scores = np.einsum("bhnd,bhmd->bhnm", q.astype(np.float64), k.astype(np.float64)) * scale
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bhnm,bhmd->bhnd", weights / weights.sum(-1, keepdims=True), v.astype(np.float64))


@needs_vnni
def test_the_op_computes_attention_within_a_few_value_steps(switched_on):
    kernel = attention_kernel(ov)
    assert kernel.library is not None and kernel.library.is_file(), kernel.why_not
    shape = (2, 3, 301, 64)  # 301 tokens: not a multiple of the kernel's 6-row or 64-key tiles
    model = sdpa_model(shape)
    assert use_int8_attention(model, kernel.library) == (1, 1)
    assert [op.get_type_name() for op in model.get_ordered_ops()].count("Int8Attention") == 1
    core = ov.Core()
    core.add_extension(str(kernel.library))
    request = core.compile_model(model, "CPU").create_infer_request()
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(0, 2, shape).astype(np.float32) for _ in range(3))
    out = request.infer([q, k, v])[0]
    error = np.abs(out - float_attention(q, k, v, 0.125))
    value_range = np.abs(v).max()
    assert out.shape == shape and out.dtype == np.float32
    assert error.max() <= 0.06 * value_range, (error.max(), value_range)
    assert error.mean() <= 0.004 * value_range, (error.mean(), value_range)


def vit_attention_model(batch: int, tokens: int, heads: int, unbind: str) -> ov.Model:
    """model/vit.py's attention as OpenVINO's frontends convert it: qkv [B, N, 3C] -> reshape [B, N, 3, H, 64] ->
    Transpose(2, 0, 3, 1, 4) -> Split + Squeeze and ScaledDotProductAttention (PyTorch frontend), Slice + Squeeze
    and MatMul(Softmax(MatMul(Q, Transpose(K))), V) (ONNX), or Gather -> Q x 1/8 -> Transpose(0, 2, 1, 3) ->
    [B, N, C]."""
    qkv = ops.parameter([batch, tokens, 3 * heads * 64], np.float32)
    split = ops.transpose(ops.reshape(qkv, ops.constant(np.array([batch, tokens, 3, heads, 64])), False),
                          ops.constant(np.array([2, 0, 3, 1, 4])))
    axis0 = ops.constant(np.array([0]))
    if unbind == "split":
        parts = ops.split(split, ops.constant(np.int64(0)), 3)
        q, k, v = (ops.squeeze(parts.output(i), axis0) for i in range(3))
    elif unbind == "slice":
        step = ops.broadcast(ops.constant(np.int64(1)), ops.constant(np.array([1])))
        q, k, v = (ops.squeeze(opset8.slice(split, ops.constant(np.array([i])), ops.constant(np.array([i + 1])),
                                            step, axis0), axis0) for i in range(3))
    else:
        q, k, v = (ops.gather(split, ops.constant(np.int64(i)), ops.constant(np.int64(0))) for i in range(3))
    q = ops.multiply(q, ops.constant(np.float32(0.125)))
    if unbind == "split":
        attention = ops.scaled_dot_product_attention(q, k, v, ops.constant(np.float32(0.0)),
                                                     ops.constant(np.float32(1.0)), causal=False)
    else:
        key = ops.transpose(k, ops.constant(np.array([0, 1, 3, 2]))) if unbind == "slice" else k
        attention = ops.matmul(ops.softmax(ops.matmul(q, key, False, unbind != "slice"), -1), v, False, False)
    merged = ops.reshape(ops.transpose(attention, ops.constant(np.array([0, 2, 1, 3]))),
                         ops.constant(np.array([batch, tokens, heads * 64])), False)
    return ov.Model([merged], [qkv])


@needs_vnni
@pytest.mark.parametrize("unbind", ["split", "slice", "gather"])
def test_the_op_reads_qkv_in_place_and_writes_tokens_first(switched_on, unbind):
    """Where Q, K and V are the qkv projection's output split into heads, the op reads that output and writes the
    tokens-first result itself: no head transposes left, the same numbers to the bit as the op on transposed copies
    (``in_place=False``), within a few V steps of float64."""
    kernel = attention_kernel(ov)
    assert kernel.library is not None, kernel.why_not
    batch, tokens, heads = 2, 77, 3
    model = vit_attention_model(batch, tokens, heads, unbind)
    assert use_int8_attention(model, kernel.library) == (1, 1)
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "Transpose" not in kinds and "Int8Attention" in kinds, kinds
    (op,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "Int8Attention"]
    assert op.get_attributes()["layout"] == "packed_qkv" and op.get_attributes()["output"] == "tokens_first"
    assert op.get_attributes()["scale"] == pytest.approx(0.125)

    copies = vit_attention_model(batch, tokens, heads, unbind)
    assert use_int8_attention(copies, kernel.library, in_place=False) == (1, 1)
    (op,) = [op for op in copies.get_ordered_ops() if op.get_type_name() == "Int8Attention"]
    assert op.get_attributes()["layout"] == "heads_first" and op.get_attributes()["output"] == "heads_first"
    assert "Transpose" in [op.get_type_name() for op in copies.get_ordered_ops()]

    core = ov.Core()
    core.add_extension(str(kernel.library))
    qkv = np.random.default_rng(1).normal(0, 2, (batch, tokens, 3 * heads * 64)).astype(np.float32)
    out = core.compile_model(model, "CPU").create_infer_request().infer([qkv])[0]
    on_copies = core.compile_model(copies, "CPU").create_infer_request().infer([qkv])[0]
    assert out.shape == on_copies.shape == (batch, tokens, heads * 64)
    np.testing.assert_array_equal(out, on_copies)
    split = qkv.reshape(batch, tokens, 3, heads, 64).transpose(2, 0, 3, 1, 4)
    reference = float_attention(*split, 0.125).transpose(0, 2, 1, 3).reshape(out.shape)
    assert np.abs(out - reference).max() <= 0.06 * np.abs(split[2]).max()


@needs_vnni
def test_only_the_attention_it_computes_is_replaced(switched_on):
    kernel = attention_kernel(ov)
    assert kernel.library is not None, kernel.why_not
    narrow = sdpa_model((1, 2, 16, 32))  # maefuse-l640's decoder heads are 32 wide
    masked = sdpa_model((1, 2, 16, 64), mask=-1.0)
    cross = sdpa_model((1, 2, 16, 64), q_shape=(1, 2, 8, 64))
    for model in (narrow, masked, cross):
        assert use_int8_attention(model, kernel.library) == (0, 1)
    # A graph without softmax attention (maefuse-rt-linear's linear block attention) says so, not "0 of 0".
    x = ops.parameter([1, 16, 64], np.float32)
    linear = ov.Model([ops.matmul(x, ops.constant(np.ones((64, 64), np.float32)), False, False)], [x])
    assert int8_attention_note(kernel, linear) == "int8 attention kernel unused: no softmax attention"


def test_switched_off_it_says_why_and_builds_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(SWITCH_ENV, "off")
    kernel = attention_kernel(ov)
    assert kernel.library is None
    assert kernel.why_not == f"{SWITCH_ENV}=off" and kernel.identity == f"off: {SWITCH_ENV}=off"


def test_the_switch_and_the_cpu_decide_where_it_runs():
    vnni = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16"})
    amx = vnni | {"amx_tile", "amx_int8", "amx_bf16"}
    assert why_not(vnni, {}, "") == "" and why_not(vnni, {}, "auto") == ""
    assert why_not(vnni, {}, "off") == f"{SWITCH_ENV}=off"
    assert why_not(vnni - {"avx512_vnni"}, {}, "on") == "the CPU has no avx512_vnni"
    assert why_not(vnni, {"ONEDNN_MAX_CPU_ISA": "avx2"}, "on") == "ONEDNN_MAX_CPU_ISA=avx2 leaves VNNI out"
    assert why_not(None, {}, "") == "/proc/cpuinfo unreadable"
    # AMX: OpenVINO's own attention runs on the tiles; the kernel only where asked for, or where a cap hides AMX.
    assert why_not(amx, {}, "").startswith("the CPU has AMX") and f"{SWITCH_ENV}=on" in why_not(amx, {}, "")
    assert why_not(amx, {}, "on") == ""
    assert why_not(amx, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "") == ""
    assert why_not(amx, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "").startswith("the CPU has AMX")
    with pytest.raises(InputError, match=f"{SWITCH_ENV}='maybe' is not a setting: use off, on or auto"):
        why_not(vnni, {}, "maybe")


def test_a_compiler_that_fails_leaves_the_kernel_off_with_its_error(monkeypatch, tmp_path, switched_on):
    compiler = tmp_path / "c++"
    compiler.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "broken-c++ 1.0"; exit 0; fi\n'
                        'echo "In file included from x.hpp:1," >&2; echo "x.cpp:3:1: error: broken" >&2; exit 1\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    kernel = attention_kernel(ov)
    assert kernel.library is None
    if cpu_why_not():
        assert kernel.why_not == cpu_why_not()
    else:
        assert kernel.why_not == "the int8 attention kernel did not build: x.cpp:3:1: error: broken"


@pytest.fixture(scope="module")
def pair(ivif):
    import cv2

    sample = load_pairs(ivif / "MSRS6", 1)[0]
    # 128x96: 48 tokens, enough for both tiles to be partial, and a quick NNCF calibration.
    return cv2.resize(sample.ir, (128, 96)), cv2.resize(sample.vis, (128, 96))


@needs_vnni
def test_openvino_weights_int8_runs_the_kernel_keeps_the_image_and_caches_it(pair, tmp_path, monkeypatch,
                                                                             switched_on):
    ir, vis = pair
    with Fuser.open("maefuse-tiny", "torch", device="cpu", policy="native") as fuser:
        reference = fuser.fuse(ir, vis)

    def run() -> tuple[np.ndarray, str]:
        with Fuser.open("maefuse-tiny", "openvino-weights", device="cpu", dtype="int8", policy="native",
                        cache_dir=tmp_path) as fuser:
            return fuser.fuse(ir, vis), fuser.backend.events[-1]

    fused, line = run()
    # maefuse-tiny: 12 encoder blocks and the fusion layer's attention have 64-wide heads; the decoder's are 32.
    assert "int8 attention kernel on " in line and "cache built" in line, line
    replaced, total = (int(word) for word in line.split("int8 attention kernel on ")[1].split(" attention ops")[0]
                       .split(" of "))
    assert 0 < replaced < total, line
    assert psnr(fused, reference) >= 40.0
    again, line_again = run()
    assert "cache hit" in line_again, line_again
    assert psnr(again, fused) >= 60.0  # the same graph, read back with the extension

    monkeypatch.setenv(SWITCH_ENV, "off")
    stock, line_off = run()
    assert f"int8 attention kernel off: {SWITCH_ENV}=off" in line_off and "cache built" in line_off, line_off
    assert psnr(stock, reference) >= 40.0
