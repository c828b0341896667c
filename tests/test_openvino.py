"""OpenVINO backend conformance: the same real MSRS pairs through torch float32 and through the exported graph on
OpenVINO at each precision, compared with explicit tolerances; the Fuser and maefuse-fuse on top; one-line errors.

Tolerances (maefuse-micro, random weights, 64x64): fp32 is the same arithmetic in another order (decoder output
within 1e-4); bf16 rounds matmul inputs to 8 mantissa bits and int8 quantizes weights and activations (fused image
>= 40 dB for both, the benchmark's accuracy class).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module

from maefuse_deploy.backends.base import BackendBase as Backend
from maefuse_deploy.compare import psnr
from maefuse_deploy.errors import InputError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.io import read_image
from maefuse_deploy.model.sources import resolve_torch_model
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.sample_pairs import load_pairs

require_module("openvino", "pip install -e '.[openvino]'")

from maefuse_deploy.backends.openvino import OpenVinoBackend  # noqa: E402

MIN_PSNR = {"fp32": 80.0, "bf16": 40.0, "int8": 40.0}
MAX_DECODER_ERR = {"fp32": 1e-4, "bf16": 0.05, "int8": 1.0}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """maefuse-micro (random weights, seed 0) exported at 64x64 with a dynamic batch of 1..2."""
    model = resolve_torch_model("random:maefuse-micro", None).model
    path = tmp_path_factory.mktemp("ov") / "micro.onnx"
    export_onnx(model, path, ExportSpec(height=64, width=64, batch=(1, 1, 2)), verify=False)
    return path


@pytest.fixture(scope="module")
def pairs(ivif):
    return [(p.ir, p.vis) for p in load_pairs(ivif / "MSRS6", 3)]


@pytest.fixture(scope="module")
def reference(pairs):
    with Fuser.from_checkpoint("random:maefuse-micro", "torch", policy="official") as fuser:
        return fuser.fuse_batch(pairs)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_matches_torch_float32_on_real_pairs(graph, pairs, reference, ivif, precision):
    backend = OpenVinoBackend(graph, precision=precision, calibration=ivif / "MSRS6", calibration_pairs=6)
    assert isinstance(backend, Backend)
    assert (backend.io, backend.input_size, backend.max_batch, backend.patch_size) == ("float", (64, 64), 2, 16)
    with Fuser(backend, batch_size=2) as fuser:
        fused = fuser.fuse_batch(pairs)  # batches of 2 then 1: both batch sizes the graph takes
        alone = [fuser.fuse(ir, vis) for ir, vis in pairs[:1]]
    worst = min(psnr(ours, ref) for ours, ref in zip(fused, reference, strict=True))
    assert worst >= MIN_PSNR[precision], f"{precision}: worst fused PSNR {worst:.1f} dB"
    # A pair's result does not depend on what it was batched with.
    assert psnr(alone[0], fused[0]) >= 50.0
    for (ir, _), out in zip(pairs, fused, strict=True):
        assert out.shape == (*ir.shape[:2], 3) and out.dtype == np.uint8


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_decoder_output_within_tolerance(graph, pairs, precision):
    from maefuse_deploy.backends.torch import TorchBackend
    from maefuse_deploy.processing import prepare_pair

    prepared = [prepare_pair(ir, vis, "official", (64, 64), 16) for ir, vis in pairs[:2]]
    ir = np.stack([p[0] for p in prepared])
    vis = np.stack([p[1] for p in prepared])
    expected = TorchBackend(resolve_torch_model("random:maefuse-micro", None).model).run(ir, vis)
    backend = OpenVinoBackend(graph, precision=precision)
    first = backend.run(ir, vis)
    again = backend.run(ir[:1], vis[:1])
    assert first.shape == expected.shape and first.dtype == np.float32
    assert float(np.abs(first - expected).max()) <= MAX_DECODER_ERR[precision]
    # The returned array is the caller's: a later call does not overwrite an earlier result.
    np.testing.assert_array_equal(backend.run(ir, vis), first)
    assert float(np.abs(again[0] - first[0]).max()) <= MAX_DECODER_ERR[precision]


def test_maefuse_fuse_with_openvino_bf16(graph, ivif, tmp_path):
    from maefuse_deploy.cli.fuse import main as fuse_main

    msrs = ivif / "MSRS6"
    result = CliRunner().invoke(fuse_main, ["--ir", str(msrs / "ir"), "--vis", str(msrs / "vi"), "--out",
                                            str(tmp_path / "out"), "-c", str(graph), "--backend", "openvino",
                                            "--dtype", "bfloat16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == 6
    image = read_image(written[0])
    assert image.shape == (480, 640, 3)


def test_bad_inputs_are_one_line_errors(graph, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a graph")
    cases = [
        (lambda: OpenVinoBackend(tmp_path / "missing.onnx"), "ONNX graph not found"),
        (lambda: OpenVinoBackend(corrupt), "not a readable ONNX graph"),
        (lambda: OpenVinoBackend(graph, precision="fp8"), "unknown OpenVINO precision"),
        (lambda: OpenVinoBackend(graph, precision="int8"), "needs real calibration pairs"),
        (lambda: OpenVinoBackend(graph, precision="int8", calibration=tmp_path), "has no ir/ and vi/"),
        (lambda: OpenVinoBackend(graph, device="cuda"), "runs on the CPU"),
        (lambda: Fuser.from_checkpoint(str(graph), "openvino", dtype="float16"), "not float16"),
    ]
    for build, expect in cases:
        with pytest.raises(InputError) as info:
            build()
        assert expect in str(info.value) and "\n" not in str(info.value)


def test_uint8_graph_matches_onnxruntime(pairs, tmp_path):
    """A graph with the processing inside (camera frames in, fused BGR out) runs the same in OpenVINO."""
    from maefuse_deploy.backends.onnxruntime import OnnxRuntimeBackend

    model = resolve_torch_model("random:maefuse-micro", None).model
    path = tmp_path / "micro-uint8.onnx"
    export_onnx(model, path, ExportSpec(height=64, width=64, io="uint8", camera_size=(480, 640)), verify=False)
    backend = OpenVinoBackend(path)
    assert backend.io == "uint8" and backend.input_size == (480, 640)
    reference = OnnxRuntimeBackend(path)
    with Fuser(backend) as fuser, Fuser(reference) as expected:
        for ir, vis in pairs[:2]:
            ours, theirs = fuser.fuse(ir, vis), expected.fuse(ir, vis)
            assert ours.dtype == np.uint8 and ours.shape == (480, 640, 3)
            assert int(np.abs(ours.astype(int) - theirs).max()) <= 1


def _calibration_feeds() -> list[dict[int, np.ndarray]]:
    """Two calls' inputs for quantize_int8 on the 64x64 micro graph: IR and VIS (1, 3, 64, 64) float32, seeded noise."""
    return [{0: np.random.default_rng(seed).standard_normal((1, 3, 64, 64)).astype(np.float32),
             1: np.random.default_rng(seed + 9).standard_normal((1, 3, 64, 64)).astype(np.float32)}
            for seed in range(2)]


def _quantized_attention_inputs(model, names) -> int:
    """How many inputs of the MatMuls ``names`` come from a FakeQuantize (through layout ops): int8 attention."""
    from maefuse_deploy.backends.openvino import _through_layout_ops

    wanted, count = set(names), 0
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and op.get_friendly_name() in wanted:
            count += sum(_through_layout_ops(op.input_value(i).get_node()).get_type_name() == "FakeQuantize"
                         for i in range(2))
    return count


def test_int8_quantizes_attention_where_its_calibration_fits_the_budget(pairs, reference, ivif, tmp_path, monkeypatch):
    """For both int8 precisions, attention's activation x activation matmuls go to NNCF when calibrating them holds
    little memory (a static-batch graph), which makes every Q K^T int8 (NNCF's transformer preset leaves softmax x V
    in float):
    maefuse-rt at 640x480 from an ONNX graph then runs int8 in 45.5 instead of 70.8 ms at the same dB. They stay float
    where calibrating would hold too much or cannot be known (a dynamic batch). What counts is what NNCF is given,
    Q and K: softmax x V never goes to it, and its heads x N x N input (maefuse-l640: 9 GB) kept l640's Q K^T float
    (625 MiB) until it was left out of the count."""
    import openvino as ov

    from maefuse_deploy.backends import openvino as ov_backend

    model = resolve_torch_model("random:maefuse-micro", None).model
    path = tmp_path / "static.onnx"
    export_onnx(model, path, ExportSpec(height=64, width=64), verify=False)
    dynamic = tmp_path / "dynamic.onnx"
    export_onnx(model, dynamic, ExportSpec(height=64, width=64, batch=(1, 1, 2)), verify=False)
    graph = ov.Core().read_model(str(path))
    attention = ov_backend.activation_matmuls(graph)
    assert len(attention) == 2 * (model.config.depth + model.config.decoder_depth)  # Q K^T and softmax x V
    assert 0 < ov_backend.calibration_bytes(graph, attention) < ov_backend.ATTENTION_CALIBRATION_BUDGET
    dynamic_graph = ov.Core().read_model(str(dynamic))
    assert ov_backend.calibration_bytes(dynamic_graph, ov_backend.activation_matmuls(dynamic_graph)) == float("inf")
    feeds = _calibration_feeds()
    # Both inputs of each block's Q K^T (half of the names) come quantized.
    quantized = ov_backend.quantize_int8(graph, feeds)
    assert _quantized_attention_inputs(quantized, attention) >= len(attention)
    # The same graph through the backend at int8 still fuses the real pairs within the accuracy class.
    with Fuser(OpenVinoBackend(path, precision="int8", calibration=ivif / "MSRS6", calibration_pairs=6)) as fuser:
        fused = fuser.fuse_batch(pairs)
    assert min(psnr(ours, ref) for ours, ref in zip(fused, reference, strict=True)) >= MIN_PSNR["int8"]
    # Over the budget: float.
    monkeypatch.setattr(ov_backend, "ATTENTION_CALIBRATION_BUDGET", 0)
    assert _quantized_attention_inputs(ov_backend.quantize_int8(ov.Core().read_model(str(path)), feeds),
                                       attention) == 0
    # A budget that holds Q and K but not the softmax output: Q K^T int8, softmax x V float.
    products = ov_backend.softmax_products(graph, attention)
    scores = [name for name in attention if name not in products]
    assert len(products) == len(scores) == len(attention) // 2
    monkeypatch.setattr(ov_backend, "ATTENTION_CALIBRATION_BUDGET", ov_backend.calibration_bytes(graph, scores))
    assert ov_backend.calibration_bytes(graph, attention) > ov_backend.ATTENTION_CALIBRATION_BUDGET
    quantized = ov_backend.quantize_int8(ov.Core().read_model(str(path)), feeds)
    assert _quantized_attention_inputs(quantized, scores) == 2 * len(scores)
    assert _quantized_attention_inputs(quantized, products) == 0


def test_int8_output_projections_get_int8_weights_and_no_calibrated_range(graph, pairs, reference, ivif):
    """Attention's output projections read an average of value vectors whose range follows the scene (maefuse-rt
    calibrated on day pairs read 31 dB on night pairs with a calibrated range there), so quantize_int8 gives them
    no FakeQuantize: int8 weights, symmetric per output channel (an int8 Constant, a Convert, a Multiply by the
    scales), whose input the CPU plugin quantizes per frame. Each weight is within half a step of the float one."""
    import openvino as ov

    from maefuse_deploy.backends import openvino as ov_backend

    model = ov.Core().read_model(str(graph))
    activations = ov_backend.activation_matmuls(model)
    projections = ov_backend.attention_projections(model, activations)
    config = resolve_torch_model("random:maefuse-micro", None).model.config
    assert len(projections) == config.depth + config.decoder_depth
    floats = {op.get_friendly_name(): op.input_value(1).get_node().get_data().copy()
              for op in model.get_ordered_ops() if op.get_friendly_name() in projections}
    feeds = _calibration_feeds()
    quantized = ov_backend.quantize_int8(model, feeds)
    assert _quantized_attention_inputs(quantized, projections) == 0
    for op in quantized.get_ordered_ops():
        if op.get_friendly_name() not in projections:
            continue
        scaling = op.input_value(1).get_node()
        assert scaling.get_type_name() == "Multiply"
        convert, scales = (scaling.input_value(index).get_node() for index in range(2))
        assert convert.get_type_name() == "Convert"
        stored = convert.input_value(0).get_node()
        assert stored.get_type_name() == "Constant" and stored.get_element_type() == ov.Type.i8
        step = scales.get_data()  # one per output channel, broadcast along the K inputs
        assert np.all(np.abs(stored.get_data() * step - floats[op.get_friendly_name()]) <= step / 2 + 1e-7)
    assert ov_backend.compile_config("int8")["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 32
    with Fuser(OpenVinoBackend(graph, precision="int8", calibration=ivif / "MSRS6", calibration_pairs=6)) as fuser:
        fused = fuser.fuse_batch(pairs)
    assert min(psnr(ours, ref) for ours, ref in zip(fused, reference, strict=True)) >= MIN_PSNR["int8"]
