"""The CPU part of the engine builder: plans, profiles, precision choice (tensorrt/build.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import pytest
from engine_support import (
    write_graph,
)

from maefuse_deploy.contract import BatchProfile
from maefuse_deploy.errors import InputError
from maefuse_deploy.tensorrt.build import (
    DEFAULT_DYNAMIC_BATCH,
    TYPING_FP16_FLAG,
    TYPING_FP32,
    TYPING_STRONG,
    BuildOptions,
    choose_typing,
    prepare_build,
)


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
    # A garbled range is read by the one metadata parser: a one-line error naming the graph, not a silent default.
    garbled = write_graph(tmp_path / "h.onnx", declared_batch="9:1:x")
    with pytest.raises(InputError, match=r"h\.onnx"):
        prepare_build(garbled, tmp_path / "h.engine")
    undeclared = write_graph(tmp_path / "u.onnx")
    assert prepare_build(undeclared, tmp_path / "u.engine").profile == DEFAULT_DYNAMIC_BATCH


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
    assert "maefuse-export --batch-range 1:1:8" in str(info.value)


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
    with pytest.raises(InputError, match="is not a folder"):
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
    # 10.12 deprecates the per-layer precision calls of the flag path (issue 11 4f): the FP16 graph, as on 11.
    assert choose_typing("10.11.0.33", True, "fp16", fp32_plan) == TYPING_FP16_FLAG
    assert choose_typing("10.12.0.36", True, "fp16", fp16_plan) == TYPING_STRONG
    for version, has_flag in (("11.1.0", False), ("10.12.0.36", True), ("10.16.0", True)):
        with pytest.raises(InputError) as info:
            choose_typing(version, has_flag, "fp16", fp32_plan)
        text = str(info.value)
        assert "FP16 graph" in text and "--precision fp16" in text and "a.onnx" in text and version in text
