"""maefuse-build-engine and the TensorRT backend.

CPU tests cover everything that does not need TensorRT: profiles, the ONNX contract checks, the sidecar and every
compatibility decision, the attention heuristic, the progress line, the context pool, the CLI's error paths and
import hygiene. Tests marked ``tensorrt`` build and run real engines; they skip, with the reason, where TensorRT or
a CUDA GPU is missing. No test here stands in a fake for TensorRT: where TensorRT must be absent, the test blocks
the import (``sys.modules[name] = None``), which is what a machine without it looks like.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from maefuse_deploy.cli.build_engine import main as build_engine_cli
from maefuse_deploy.contract import GraphInfo
from maefuse_deploy.engine import availability
from maefuse_deploy.engine.build import (
    DEFAULT_DYNAMIC_BATCH,
    TYPING_FP16_FLAG,
    TYPING_FP32,
    TYPING_STRONG,
    BuildOptions,
    choose_typing,
    prepare_build,
)
from maefuse_deploy.engine.errors import EngineCompatibilityError, EngineError
from maefuse_deploy.engine.layers import attention_report
from maefuse_deploy.engine.onnx_info import read_graph
from maefuse_deploy.engine.pool import ContextPool
from maefuse_deploy.engine.profiles import BatchProfile, parse_batch
from maefuse_deploy.engine.progress import ProgressLine, Spinner
from maefuse_deploy.engine.sidecar import (
    RuntimeFacts,
    Sidecar,
    check_compatibility,
    file_sha256,
    read_sidecar,
    sidecar_path,
    version_triplet,
    write_sidecar,
)
from maefuse_deploy.errors import InputError, MaeFuseError, UnavailableError

REPO = Path(__file__).resolve().parents[1]
TRT_MODULES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime")


# -- helpers -------------------------------------------------------------------------------------------------------


def graph_info(io_mode: str = "float", precision: str = "fp32", size: int = 8, batch: str = "1") -> GraphInfo:
    return GraphInfo(
        config={"name": "test", "patch_size": 4, "img_size": [size, size]},
        attention="official",
        io=io_mode,
        precision=precision,
        height=size,
        width=size,
        camera_height=size,
        camera_width=size,
        policy="official",
        checkpoint_sha256="ab" * 32,
        toolkit_version="0.1.0",
        batch=batch,
    )


def write_graph(
    path: Path,
    io_mode: str = "float",
    precision: str = "fp32",
    batch: int | str = "batch",
    size: int | str = 8,
    names: tuple[str, str, str] = ("ir", "vis", "fused"),
    metadata: bool = True,
    external: bool = False,
    declared_batch: str = "1",
) -> Path:
    """A tiny graph that keeps the maefuse contract (names, layouts, metadata); its arithmetic is irrelevant."""
    ir_name, vis_name, out_name = names
    if io_mode == "float":
        shape = [batch, 3, size, size]
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in (ir_name, vis_name)]
        output = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape)
        weight = numpy_helper.from_array(np.full([1], 0.5, np.float32), "w")  # raw data: can go external
        nodes = [helper.make_node("Add", [ir_name, vis_name], ["s"]), helper.make_node("Mul", ["s", "w"], [out_name])]
        initializers = [weight]
    else:
        inputs = [
            helper.make_tensor_value_info(ir_name, TensorProto.UINT8, [batch, size, size]),
            helper.make_tensor_value_info(vis_name, TensorProto.UINT8, [batch, size, size, 3]),
        ]
        output = helper.make_tensor_value_info(out_name, TensorProto.UINT8, [batch, size, size, 3])
        nodes = [helper.make_node("Identity", [vis_name], [out_name])]
        initializers = []
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [output], initializers))
    if metadata:
        helper.set_model_props(model, graph_info(io_mode, precision, batch=declared_batch).to_metadata())
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def make_sidecar(**changes) -> Sidecar:
    base = Sidecar(
        tensorrt_version="10.3.0.26",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        onnx_path="model.onnx",
        onnx_sha256="0" * 64,
        profiles=(BatchProfile(1, 1, 8),),
        input_shapes={
            "ir": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]],
            "vis": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]],
        },
        precision="fp16",
        io="float",
        graph_metadata=graph_info().to_metadata(),
        build_time="2026-01-01T00:00:00+00:00",
        build_seconds=12.5,
        hardware_compat=False,
        version_compat=False,
        typing="fp16-flag",
    )
    return replace(base, **changes)


H100 = RuntimeFacts("10.3.0.26", "NVIDIA H100 80GB HBM3", (9, 0))


def block_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like a machine without TensorRT and cuda-python."""
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


# -- profiles ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:4:8", (1, 4, 8)), ("8", (8, 8, 8)), (" 2:2:2 ", (2, 2, 2)), ("1:1:1", (1, 1, 1)), ("3:3:16", (3, 3, 16))],
)
def test_parse_batch(text, expected):
    profile = parse_batch(text)
    assert (profile.min, profile.opt, profile.max) == expected
    assert profile.is_static == (expected[0] == expected[2])
    assert BatchProfile.from_dict(profile.to_dict()) == profile


@pytest.mark.parametrize(
    "text", ["0", "0:1:2", "4:2:8", "1:8:4", "2:1:1", "-1:1:1", "a", "1.5", "1:2", "1:2:3:4", "", "1::8", "1:2:x"]
)
def test_parse_batch_rejects(text):
    with pytest.raises(InputError) as info:
        parse_batch(text)
    assert "MIN:OPT:MAX" in str(info.value)
    assert "\n" not in str(info.value)


def test_batch_profile_rejects_non_integers():
    with pytest.raises(InputError):
        BatchProfile(1, 2.0, 4)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        BatchProfile(True, 1, 1)  # type: ignore[arg-type]


# -- reading the ONNX contract -------------------------------------------------------------------------------------


def test_read_graph_float_dynamic(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx"))
    assert graph.info.io == "float" and graph.info.precision == "fp32"
    assert graph.static_batch is None
    assert graph.inputs["ir"].shape == (None, 3, 8, 8) and graph.inputs["ir"].dtype == "float32"
    assert graph.input_size == (8, 8)
    assert graph.patch_size == 4
    assert graph.external_files == ()


def test_read_graph_uint8_static(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx", io_mode="uint8", batch=2))
    assert graph.static_batch == 2
    assert graph.inputs["vis"].shape == (2, 8, 8, 3)
    assert graph.input_size == (8, 8)


def test_read_graph_external_data(tmp_path):
    graph = read_graph(write_graph(tmp_path / "g.onnx", external=True))
    assert graph.external_files == ("g.onnx.data",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metadata": False}, "no maefuse metadata"),
        ({"names": ("a", "vis", "fused")}, "inputs ['a', 'vis']"),
        ({"names": ("ir", "vis", "out")}, "output 'fused'"),
        ({"size": "h"}, "dynamic image size"),
    ],
)
def test_read_graph_rejects(tmp_path, kwargs, message):
    with pytest.raises(InputError) as info:
        read_graph(write_graph(tmp_path / "g.onnx", **kwargs))
    assert message in str(info.value)


def test_read_graph_rejects_wrong_layout_for_io(tmp_path):
    path = write_graph(tmp_path / "g.onnx", io_mode="uint8")
    model = onnx.load(str(path))
    helper.set_model_props(model, graph_info("float").to_metadata())  # claims float io, has uint8 HWC inputs
    onnx.save_model(model, str(path))
    with pytest.raises(InputError, match="declares io float"):
        read_graph(path)


def test_read_graph_rejects_non_onnx_and_missing(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf" * 10)
    with pytest.raises(InputError, match="cannot read"):
        read_graph(junk)
    with pytest.raises(InputError, match="does not exist"):
        read_graph(tmp_path / "nothing.onnx")


# -- build planning (CPU part of the builder) ----------------------------------------------------------------------


def test_prepare_build_defaults(tmp_path):
    plan = prepare_build(write_graph(tmp_path / "g.onnx"), tmp_path / "out" / "g.engine")
    assert plan.profile == DEFAULT_DYNAMIC_BATCH
    assert plan.shapes["ir"] == ((1, 3, 8, 8), (1, 3, 8, 8), (8, 3, 8, 8))
    assert plan.layers_path.name == "g.engine.layers.json"
    assert plan.log_path.name == "g.engine.build.log"


def test_prepare_build_uses_the_recorded_batch_range(tmp_path):
    onnx_path = write_graph(tmp_path / "g.onnx", declared_batch="2:3:6")
    assert prepare_build(onnx_path, tmp_path / "g.engine").profile == BatchProfile(2, 3, 6)
    assert prepare_build(onnx_path, tmp_path / "g.engine", BuildOptions(batch="1:1:2")).profile == BatchProfile(1, 1, 2)
    garbled = write_graph(tmp_path / "h.onnx", declared_batch="9:1:x")
    assert prepare_build(garbled, tmp_path / "h.engine").profile == DEFAULT_DYNAMIC_BATCH


def test_prepare_build_uint8_shapes(tmp_path):
    plan = prepare_build(
        write_graph(tmp_path / "g.onnx", io_mode="uint8"), tmp_path / "g.engine", BuildOptions(batch="2:4:6")
    )
    assert plan.shapes["ir"] == ((2, 8, 8), (4, 8, 8), (6, 8, 8))
    assert plan.shapes["vis"] == ((2, 8, 8, 3), (4, 8, 8, 3), (6, 8, 8, 3))


def test_prepare_build_static_batch(tmp_path):
    onnx_path = write_graph(tmp_path / "g.onnx", batch=4)
    assert prepare_build(onnx_path, tmp_path / "g.engine").profile == BatchProfile(4, 4, 4)
    assert prepare_build(onnx_path, tmp_path / "g.engine", BuildOptions(batch="4")).profile == BatchProfile(4, 4, 4)
    with pytest.raises(InputError, match="fixed batch of 4") as info:
        prepare_build(onnx_path, tmp_path / "g.engine", BuildOptions(batch="1:1:8"))
    assert "--dynamic-batch 1:1:8" in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BuildOptions(precision="int8"), "unknown precision"),
        (BuildOptions(workspace_gib=0), "not positive"),
        (BuildOptions(opt_level=7), "outside 0..5"),
        (BuildOptions(batch="8:1:1"), "not ordered"),
    ],
)
def test_prepare_build_rejects_options(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        prepare_build(write_graph(tmp_path / "g.onnx"), tmp_path / "g.engine", options)


def test_prepare_build_rejects_fp32_engine_from_fp16_graph(tmp_path):
    with pytest.raises(InputError, match="FP16 graph"):
        prepare_build(
            write_graph(tmp_path / "g.onnx", precision="fp16"), tmp_path / "g.engine", BuildOptions(precision="fp32")
        )


def test_prepare_build_rejects_unwritable_outputs(tmp_path):
    onnx_path = write_graph(tmp_path / "g.onnx")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a writable folder"):
        prepare_build(onnx_path, blocker / "g.engine")
    with pytest.raises(InputError, match="is a folder"):
        prepare_build(onnx_path, tmp_path)
    with pytest.raises(InputError, match="timing cache"):
        prepare_build(onnx_path, tmp_path / "g.engine", BuildOptions(timing_cache=blocker / "cache"))


def test_choose_typing_per_tensorrt_version(tmp_path):
    fp32_plan = prepare_build(write_graph(tmp_path / "a.onnx"), tmp_path / "a.engine")
    fp16_plan = prepare_build(write_graph(tmp_path / "b.onnx", precision="fp16"), tmp_path / "b.engine")
    # TensorRT 10.x has the FP16 flag; 11.x does not and builds strongly typed only.
    assert choose_typing("10.8.0", True, "fp16", fp32_plan) == TYPING_FP16_FLAG
    assert choose_typing("10.8.0", True, "fp16", fp16_plan) == TYPING_STRONG
    assert choose_typing("11.1.0", False, "fp16", fp16_plan) == TYPING_STRONG
    assert choose_typing("11.1.0", False, "fp32", fp32_plan) == TYPING_FP32
    assert choose_typing("10.8.0", True, "fp32", fp32_plan) == TYPING_FP32
    with pytest.raises(InputError) as info:
        choose_typing("11.1.0", False, "fp16", fp32_plan)
    text = str(info.value)
    assert "strongly typed" in text and "--precision fp16" in text and "a.onnx" in text


# -- sidecar ---------------------------------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    sidecar = make_sidecar(external_data_sha256={"m.onnx.data": "1" * 64}, attention_fused="myelin")
    written = write_sidecar(engine, sidecar)
    assert written == sidecar_path(engine) == tmp_path / "m.engine.json"
    assert read_sidecar(engine) == sidecar
    data = json.loads(written.read_text())
    for key in (
        "tensorrt_version",
        "gpu_name",
        "compute_capability",
        "onnx_sha256",
        "profiles",
        "precision",
        "io",
        "graph_metadata",
        "build_time",
        "hardware_compat",
        "version_compat",
    ):
        assert key in data
    assert data["compute_capability"] == [9, 0]
    assert GraphInfo.from_metadata(data["graph_metadata"]) == graph_info()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]  # no temporary left


def test_read_sidecar_errors(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(InputError, match="does not exist"):
        read_sidecar(engine)
    engine.write_bytes(b"plan")
    with pytest.raises(InputError, match="has no sidecar") as info:
        read_sidecar(engine)
    assert "maefuse-build-engine" in str(info.value)
    side = sidecar_path(engine)
    side.write_text("{not json")
    with pytest.raises(InputError, match="cannot read engine sidecar"):
        read_sidecar(engine)
    data = make_sidecar().to_dict()
    del data["compute_capability"]
    side.write_text(json.dumps(data))
    with pytest.raises(InputError, match="incomplete or malformed"):
        read_sidecar(engine)
    side.write_text(json.dumps({**make_sidecar().to_dict(), "format": 99}))
    with pytest.raises(InputError, match="newer than this toolkit"):
        read_sidecar(engine)


def test_file_sha256_streams(tmp_path):
    path = tmp_path / "blob"
    payload = os.urandom(10_000)
    path.write_bytes(payload)
    assert file_sha256(path, chunk_size=333) == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.3.0.26", (10, 3, 0)), ("11.1", (11, 1, 0)), ("10.13.2.6", (10, 13, 2)), ("10.0.0b6", (10, 0, 0))],
)
def test_version_triplet(text, expected):
    assert version_triplet(text) == expected


def test_compatible_engine_runs_without_notes():
    assert check_compatibility(make_sidecar(), H100) == []


def test_same_version_other_build_number_is_compatible():
    assert check_compatibility(make_sidecar(), replace(H100, tensorrt_version="10.3.0.30")) == []


def test_other_tensorrt_version_refused():
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatibility(make_sidecar(), replace(H100, tensorrt_version="10.7.0.23"), engine_path="m.engine")
    text = str(info.value)
    assert "10.3.0.26" in text and "10.7.0.23" in text and "not built with --version-compat" in text
    assert "maefuse-build-engine model.onnx -o m.engine on this machine" in text
    assert info.value.exit_code == 1 and "\n" not in text


def test_version_compatible_engine_needs_the_override():
    sidecar = make_sidecar(version_compat=True)
    newer = replace(H100, tensorrt_version="10.7.0")
    with pytest.raises(EngineCompatibilityError, match="allow_incompatible can override"):
        check_compatibility(sidecar, newer)
    notes = check_compatibility(sidecar, newer, allow_incompatible=True)
    assert len(notes) == 1 and "version-compatible" in notes[0]


def test_version_compatible_engine_never_runs_on_older_tensorrt():
    with pytest.raises(EngineCompatibilityError, match="older"):
        check_compatibility(
            make_sidecar(version_compat=True), replace(H100, tensorrt_version="10.1.0"), allow_incompatible=True
        )


def test_override_does_not_help_an_engine_built_without_compat():
    with pytest.raises(EngineCompatibilityError, match="not built with --version-compat"):
        check_compatibility(make_sidecar(), replace(H100, tensorrt_version="10.7.0"), allow_incompatible=True)
    with pytest.raises(EngineCompatibilityError, match="not built with --hardware-compat"):
        check_compatibility(make_sidecar(), RuntimeFacts("10.3.0.26", "NVIDIA L4", (8, 9)), allow_incompatible=True)


def test_other_gpu_architecture_refused():
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatibility(make_sidecar(), RuntimeFacts("10.3.0.26", "NVIDIA L4", (8, 9)))
    text = str(info.value)
    assert "NVIDIA H100 80GB HBM3" in text and "9.0" in text and "NVIDIA L4" in text and "8.9" in text
    assert "rebuild with maefuse-build-engine" in text


def test_hardware_compatible_engine_on_ampere_plus_with_override():
    sidecar = make_sidecar(hardware_compat=True)
    l4 = RuntimeFacts("10.3.0.26", "NVIDIA L4", (8, 9))
    with pytest.raises(EngineCompatibilityError, match="allow_incompatible can override"):
        check_compatibility(sidecar, l4)
    notes = check_compatibility(sidecar, l4, allow_incompatible=True)
    assert len(notes) == 1 and "hardware-compatible" in notes[0]


def test_hardware_compatible_engine_never_runs_before_ampere():
    with pytest.raises(EngineCompatibilityError, match=r"8\.0 or newer"):
        check_compatibility(
            make_sidecar(hardware_compat=True), RuntimeFacts("10.3.0.26", "Tesla T4", (7, 5)), allow_incompatible=True
        )


def test_same_architecture_other_gpu_model_runs_with_a_note():
    notes = check_compatibility(make_sidecar(), RuntimeFacts("10.3.0.26", "NVIDIA H100 PCIe", (9, 0)))
    assert len(notes) == 1
    assert "NVIDIA H100 80GB HBM3" in notes[0] and "NVIDIA H100 PCIe" in notes[0] and "same architecture" in notes[0]


def test_changed_onnx_refused_naming_both_hashes(tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"graph v1")
    built_from = file_sha256(onnx_path)
    sidecar = make_sidecar(onnx_sha256=built_from)
    assert check_compatibility(sidecar, H100, onnx_path) == []
    onnx_path.write_bytes(b"graph v2")
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatibility(sidecar, H100, onnx_path, allow_incompatible=True)  # no override for a changed graph
    assert built_from in str(info.value) and file_sha256(onnx_path) in str(info.value)


def test_changed_external_data_refused(tmp_path):
    onnx_path, data = tmp_path / "model.onnx", tmp_path / "model.onnx.data"
    onnx_path.write_bytes(b"graph")
    data.write_bytes(b"weights v1")
    sidecar = make_sidecar(onnx_sha256=file_sha256(onnx_path), external_data_sha256={data.name: file_sha256(data)})
    assert check_compatibility(sidecar, H100, onnx_path) == []
    data.write_bytes(b"weights v2")
    with pytest.raises(EngineCompatibilityError, match="external data"):
        check_compatibility(sidecar, H100, onnx_path)
    data.unlink()
    with pytest.raises(EngineCompatibilityError, match="now missing"):
        check_compatibility(sidecar, H100, onnx_path)


def test_missing_onnx_to_check_against_refused(tmp_path):
    with pytest.raises(EngineCompatibilityError, match="does not exist"):
        check_compatibility(make_sidecar(), H100, tmp_path / "gone.onnx")


def test_every_problem_in_one_line():
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatibility(make_sidecar(), RuntimeFacts("10.7.0", "NVIDIA L4", (8, 9)))
    text = str(info.value)
    assert "TensorRT 10.7.0" in text and "NVIDIA L4" in text and "\n" not in text


# -- attention report ----------------------------------------------------------------------------------------------


def inspector_json(*layers) -> str:
    return json.dumps({"Layers": list(layers), "Bindings": ["ir", "vis", "fused"]})


def test_attention_fused_kernel_names():
    report = attention_report(
        inspector_json(
            {"Name": "/blocks.0/attn/qkv", "LayerType": "CaskGemm", "TacticName": "sm90_xmma_gemm"},
            {"Name": "/blocks.0/attn/core", "LayerType": "CaskFusedMHA", "TacticName": "fmha_v2_flash_attention_fp16"},
            {"Name": "mha_block_1", "LayerType": "gemm", "TacticName": "sm80_xmma_gemm_mha_v2"},
        )
    )
    assert report.status == "fused" and len(report.fused_layers) == 2
    assert report.summary().startswith("attention fused: yes")


def test_attention_layer_type_counts_as_fused():
    assert attention_report(inspector_json({"Name": "attn0", "LayerType": "Attention"})).status == "fused"


def test_attention_not_fused_when_softmax_stands_alone():
    report = attention_report(
        inspector_json(
            {"Name": "/blocks.0/attn/MatMul", "LayerType": "MatrixMultiply"},
            {"Name": "/blocks.0/attn/Softmax", "LayerType": "Softmax"},
            {"Name": "/blocks.0/attn/MatMul_1", "LayerType": "MatrixMultiply"},
        )
    )
    assert report.status == "not-fused"
    assert "scale on Q" in report.summary()


def test_attention_partly_fused():
    report = attention_report(
        inspector_json({"Name": "a", "LayerType": "CaskFusedMHA"}, {"Name": "b", "LayerType": "Softmax"})
    )
    assert report.status == "partly-fused"


def test_attention_inside_myelin_with_names_only():
    # Names-only verbosity is a list of strings; a Myelin node's name lists the ONNX nodes inside, Softmax too.
    report = attention_report(
        inspector_json("{ForeignNode[/blocks.0/attn/MatMul.../blocks.0/attn/Softmax]}", "/head/Conv")
    )
    assert report.status == "myelin"
    assert "probably" in report.summary()


def test_attention_unknown():
    assert attention_report("").status == "unknown"
    assert "no layer information" in attention_report("not json").summary()
    report = attention_report(inspector_json({"Name": "conv", "LayerType": "Convolution"}))
    assert report.status == "unknown" and "none of 1 layers" in report.summary()
    # "multiheadattention" is a module name, not a fused kernel.
    assert attention_report(inspector_json({"Name": "/fusion/MultiheadAttention/MatMul"})).status == "unknown"


# -- progress line -------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_in_a_log():
    clock, out = FakeClock(), io.StringIO()
    line = ProgressLine(out, "building m.engine", clock=clock, heartbeat_s=30)
    line.phase_start("Building engine", None, 3)
    line.phase_start("Tactic timing", "Building engine", 40)  # nested: not printed in a log
    line.step("Tactic timing", 5)
    clock.now += 10
    line.tick()  # before the heartbeat interval: silent
    clock.now += 25
    line.tick()
    line.close("built m.engine")
    assert out.getvalue().splitlines() == [
        "building m.engine: Building engine (0 s)",
        "building m.engine: still running (35 s)",
        "built m.engine (35.0 s)",
    ]


def test_progress_line_on_a_terminal():
    clock, out = FakeClock(), TtyBuffer()
    line = ProgressLine(out, "building", clock=clock)
    line.phase_start("Building engine", None, 3)
    line.phase_start("Tactic timing", "Building engine", 40)
    line.step("Tactic timing", 4)
    clock.now += 7
    assert line.render().endswith("Building engine > Tactic timing 5/40 [7 s]")
    line.phase_finish("Tactic timing")
    assert "Building engine 0/3" in line.render()
    assert "\r" in out.getvalue()


def test_spinner_ticks_while_running():
    line = ProgressLine(TtyBuffer(), "building")
    with Spinner(line, interval_s=0.01):
        time.sleep(0.1)
    assert line.render().split()[1] in "|/-\\"
    assert line._spin > 0


# -- context pool ----------------------------------------------------------------------------------------------------


def test_pool_thread_safety():
    """8 threads x 50 loans: each item used by one thread at a time, never more items than the pool size."""
    size, created, destroyed = 3, [], []
    users: Counter = Counter()
    lock = threading.Lock()
    violations = []

    def factory() -> int:
        time.sleep(0.002)  # creating a context is slow: leave a window for races
        with lock:
            created.append(len(created))
            return created[-1]

    pool = ContextPool(factory, size, destroy=destroyed.append)

    def worker() -> None:
        for _ in range(50):
            with pool.acquire() as item:
                with lock:
                    users[item] += 1
                    if users[item] != 1:
                        violations.append(item)
                time.sleep(0.0001)
                with lock:
                    users[item] -= 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "pool deadlocked"
    assert violations == []
    assert 1 <= len(created) <= size == pool.size
    assert pool.created == len(created)
    pool.close()
    assert sorted(destroyed) == sorted(created)
    pool.close()  # idempotent
    assert sorted(destroyed) == sorted(created)
    with pytest.raises(EngineError, match="closed"), pool.acquire():
        pass


def test_pool_factory_failure_frees_the_place():
    calls = []

    def factory() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("no GPU memory")
        return "context"

    pool = ContextPool(factory, 1)
    with pytest.raises(MemoryError), pool.acquire():
        pass
    with pool.acquire() as item:
        assert item == "context"


def test_pool_waits_and_times_out():
    pool = ContextPool(object, 1)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with pool.acquire():
            taken.set()
            release.wait()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert taken.wait(5)
    try:
        with pytest.raises(TimeoutError), pool.acquire(timeout=0.05):
            pass
    finally:
        release.set()
    thread.join(5)
    with pool.acquire(timeout=1):
        pass


def test_pool_close_waits_for_lent_items():
    events = []
    pool = ContextPool(lambda: "ctx", 2, destroy=lambda item: events.append("destroyed"))
    taken = threading.Event()

    def holder() -> None:
        with pool.acquire():
            taken.set()
            time.sleep(0.1)
            events.append("returned")

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert taken.wait(5)
    pool.close(timeout=5)
    thread.join(5)
    assert events == ["returned", "destroyed"]


# -- availability, backend and CLI without TensorRT ------------------------------------------------------------------


def test_require_names_what_is_missing(monkeypatch):
    block_tensorrt(monkeypatch)
    with pytest.raises(UnavailableError) as info:
        availability.require()
    text = str(info.value)
    assert info.value.exit_code == 2
    assert "TensorRT is not available" in text and "cuda-python is not available" in text
    assert 'pip install "maefuse-deploy[trt]" on a machine with an NVIDIA GPU' in text
    assert "\n" not in text


def test_backend_without_tensorrt(monkeypatch, tmp_path):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    block_tensorrt(monkeypatch)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(InputError, match="has no sidecar"):
        TensorRTBackend(engine)
    write_sidecar(engine, make_sidecar())
    with pytest.raises(UnavailableError) as info:
        TensorRTBackend(engine)
    assert info.value.exit_code == 2
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._pool = None
    backend.close()  # close on a half-built backend is harmless


def run_cli(args: list[str]):
    return CliRunner().invoke(build_engine_cli, args)


def test_cli_missing_onnx(tmp_path):
    result = run_cli([str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ONNX file") and "does not exist" in result.output


def test_cli_input_errors_come_before_availability(monkeypatch, tmp_path):
    block_tensorrt(monkeypatch)
    onnx_path = write_graph(tmp_path / "g.onnx")
    bad_batch = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine"), "--batch", "0:1:2"])
    assert bad_batch.exit_code == 1 and "error: batch sizes must be at least 1" in bad_batch.output
    no_meta = run_cli([str(write_graph(tmp_path / "n.onnx", metadata=False)), "-o", str(tmp_path / "m.engine")])
    assert no_meta.exit_code == 1 and "no maefuse metadata" in no_meta.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = run_cli([str(onnx_path), "-o", str(blocker / "m.engine")])
    assert unwritable.exit_code == 1 and "not a writable folder" in unwritable.output
    opt = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine"), "--opt-level", "9"])
    assert opt.exit_code == 1 and "outside 0..5" in opt.output


def test_cli_without_tensorrt_exits_2(monkeypatch, tmp_path):
    block_tensorrt(monkeypatch)
    onnx_path = write_graph(tmp_path / "g.onnx")
    result = run_cli([str(onnx_path), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not available")
    assert 'pip install "maefuse-deploy[trt]"' in lines[0]
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


def test_cli_exit_code_2_in_a_real_process(tmp_path):
    onnx_path = write_graph(tmp_path / "g.onnx")
    code = (
        "import sys\n"
        f"for name in {TRT_MODULES!r}:\n"
        "    sys.modules[name] = None\n"
        "from maefuse_deploy.cli.build_engine import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(onnx_path), "-o", str(tmp_path / "m.engine")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: TensorRT is not available") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_imports_never_touch_tensorrt():
    code = (
        "import importlib.abc, sys\n"
        "tried = []\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorrt', 'cuda'):\n"
        "            tried.append(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import maefuse_deploy, maefuse_deploy.engine, maefuse_deploy.engine.trt_backend\n"
        "import maefuse_deploy.engine.build, maefuse_deploy.cli.build_engine\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported'\n"
        "assert not tried, tried\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_errors_are_maefuse_errors():
    assert issubclass(EngineCompatibilityError, EngineError)
    assert issubclass(EngineError, MaeFuseError)


# -- with TensorRT and a GPU ---------------------------------------------------------------------------------------


def _tensorrt_or_skip() -> None:
    try:
        availability.require(0)
    except UnavailableError as exc:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {exc}")


def _export_micro(folder: Path, precision: str, io_mode: str = "float") -> Path:
    """maefuse-micro (random weights, seed 0) through the real exporter, dynamic batch 1:2:4."""
    from maefuse_deploy.export import ExportSpec, export_onnx
    from maefuse_deploy.model import build_model, get_config

    path = folder / f"micro-{precision}-{io_mode}.onnx"
    spec = ExportSpec(height=64, width=64, batch=(1, 2, 4), precision=precision, io=io_mode)
    export_onnx(build_model(get_config("maefuse-micro"), seed=0), path, spec, verify=False)
    return path


def _build(onnx_path: Path, engine: Path, *args: str):
    return CliRunner().invoke(build_engine_cli, [str(onnx_path), "-o", str(engine), *args])


@pytest.fixture(scope="module")
def gpu_dir(tmp_path_factory) -> Path:
    _tensorrt_or_skip()
    return tmp_path_factory.mktemp("trt")


@pytest.fixture(scope="module")
def micro_onnx(gpu_dir) -> Path:
    # The FP16 graph builds on TensorRT 10 and 11 alike (strongly typed).
    return _export_micro(gpu_dir, "fp16")


@pytest.fixture(scope="module")
def micro_engine(gpu_dir, micro_onnx) -> Path:
    engine = gpu_dir / "micro.engine"
    result = _build(micro_onnx, engine, "--precision", "fp16", "--timing-cache", str(gpu_dir / "timing.cache"))
    assert result.exit_code == 0, result.output
    print(result.output)  # the attention report, visible with pytest -s
    return engine


def _micro_inputs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((count, 3, 64, 64)).astype(np.float32),
        rng.standard_normal((count, 3, 64, 64)).astype(np.float32),
    )


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_writes_engine_sidecar_and_layers(micro_engine, micro_onnx, gpu_dir):
    sidecar = read_sidecar(micro_engine)
    assert sidecar.onnx_sha256 == file_sha256(micro_onnx)
    assert sidecar.profiles == (BatchProfile(1, 2, 4),)  # the range the exporter recorded
    assert sidecar.io == "float" and sidecar.precision == "fp16" and sidecar.typing == TYPING_STRONG
    assert Path(f"{micro_engine}.layers.json").is_file() and Path(f"{micro_engine}.build.log").is_file()
    assert (gpu_dir / "timing.cache").is_file()
    assert sidecar.attention_fused in ("fused", "partly-fused", "myelin", "not-fused", "unknown")
    trt, _, gpu = availability.require(0)
    assert check_compatibility(sidecar, availability.runtime_facts(trt, gpu), micro_onnx) == []


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_graph_with_fp16_precision_per_tensorrt_version(gpu_dir, micro_engine):
    # micro_engine wrote the timing cache this build loads.
    trt = availability.import_tensorrt()
    onnx_path = _export_micro(gpu_dir, "fp32")
    engine = gpu_dir / "micro-fp32-graph.engine"
    result = _build(onnx_path, engine, "--precision", "fp16", "--timing-cache", str(gpu_dir / "timing.cache"))
    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10.x: the FP16 builder flag
        assert result.exit_code == 0, result.output
        assert "timing cache" in result.output and "loaded" in result.output
        assert read_sidecar(engine).typing == TYPING_FP16_FLAG
    else:  # TensorRT 11: strongly typed only
        assert result.exit_code == 1
        assert "strongly typed" in result.output and not engine.exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_uint8_io_engine(gpu_dir):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    engine = gpu_dir / "micro-uint8.engine"
    result = _build(_export_micro(gpu_dir, "fp16", "uint8"), engine)
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    vis = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with TensorRTBackend(engine) as backend:
        assert (backend.io, backend.input_size, backend.max_batch) == ("uint8", (64, 64), 4)
        fused = backend.run(ir, vis)
        assert fused.dtype == np.uint8 and fused.shape == (3, 64, 64, 3)
        assert np.array_equal(backend.run(ir[:1], vis[:1]), fused[:1])
        with pytest.raises(InputError, match="uint8"):
            backend.run(ir.astype(np.float32), vis)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fuser_tensorrt_matches_torch_float32(micro_engine):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from maefuse_deploy.io import read_image
    from maefuse_deploy.model import build_model, get_config
    from maefuse_deploy.runtime.fuser import Fuser
    from maefuse_deploy.runtime.torch_backend import TorchBackend

    model = build_model(get_config("maefuse-micro"), seed=0)
    samples = REPO / "maefuse_deploy" / "samples"
    pairs = [
        (read_image(ir, "ir"), read_image(samples / "vi" / ir.name, "vis"))
        for ir in sorted((samples / "ir").glob("*.png"))
    ]
    with (
        Fuser(TorchBackend(model, device="cuda", dtype="float32"), model_size=model.config.img_size) as reference,
        Fuser.from_checkpoint(micro_engine, backend="tensorrt") as engine,
    ):
        expected, actual = reference.fuse_batch(pairs), engine.fuse_batch(pairs)
    for want, got in zip(expected, actual, strict=True):
        mse = np.mean((want.astype(np.float64) - got.astype(np.float64)) ** 2)
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        assert psnr >= 40.0, psnr


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cuda_graph_on_and_off_identical(micro_engine):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    with TensorRTBackend(micro_engine) as plain, TensorRTBackend(micro_engine, cuda_graph=True) as graphed:
        for count in (1, 2, 3, 4, 7):  # 7 > max batch 4: split into 4 + 3
            ir, vis = _micro_inputs(count, seed=count)
            first = graphed.run(ir, vis)
            assert np.array_equal(plain.run(ir, vis), first)
            assert np.array_equal(graphed.run(ir, vis), first)  # the replayed graph


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_threads_equal_serial(micro_engine):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    inputs = [_micro_inputs(1 + i % 3, seed=i) for i in range(8 * 50)]
    with TensorRTBackend(micro_engine, pool_size=3) as backend:
        serial = [backend.run(ir, vis) for ir, vis in inputs]
        results: list = [None] * len(inputs)

        def worker(offset: int) -> None:
            for index in range(offset, len(inputs), 8):
                results[index] = backend.run(*inputs[index])

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for want, got in zip(serial, results, strict=True):
        assert np.array_equal(want, got)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_run_torch_matches_numpy(micro_engine):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    ir, vis = _micro_inputs(5, seed=3)
    with TensorRTBackend(micro_engine) as backend:
        out = backend.run_torch(torch.from_numpy(ir).cuda(), torch.from_numpy(vis).cuda())
        torch.cuda.synchronize()
        assert out.is_cuda
        assert np.array_equal(out.cpu().numpy(), backend.run(ir, vis))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.slow
def test_create_destroy_cycles_do_not_leak(micro_engine):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    cudart = availability.import_cudart()
    ir, vis = _micro_inputs(2, seed=0)

    def cycle() -> None:
        with TensorRTBackend(micro_engine, cuda_graph=True) as backend:
            backend.run(ir, vis)

    for _ in range(5):  # let lazy CUDA/TensorRT initialisation settle
        cycle()
    free_before = cudart.cudaMemGetInfo()[1]
    for _ in range(1000):
        cycle()
    free_after = cudart.cudaMemGetInfo()[1]
    assert free_before - free_after < 32 * 2**20, (free_before - free_after) / 2**20


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_for_another_gpu_is_refused(micro_engine, tmp_path):
    from maefuse_deploy.engine.trt_backend import TensorRTBackend

    engine = tmp_path / "copy.engine"
    engine.write_bytes(micro_engine.read_bytes())
    real = read_sidecar(micro_engine)
    other = (real.compute_capability[0] + 1, 0)
    write_sidecar(engine, replace(real, gpu_name="Some Other GPU", compute_capability=other))
    for allow in (False, True):  # built without --hardware-compat: the override cannot help
        with pytest.raises(EngineCompatibilityError, match="Some Other GPU"):
            TensorRTBackend(engine, allow_incompatible=allow)
