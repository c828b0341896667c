"""Engine sidecars and every compatibility decision (tensorrt/sidecar.py).

No test here stands in a fake for TensorRT: where it must be absent, the test blocks the import.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import pytest
from engine_support import (
    H100,
    graph_info,
    make_sidecar,
)

from maefuse_deploy.contract import GraphInfo
from maefuse_deploy.errors import InputError
from maefuse_deploy.hashing import file_sha256
from maefuse_deploy.tensorrt.errors import EngineCompatibilityError
from maefuse_deploy.tensorrt.sidecar import (
    RuntimeFacts,
    check_compatibility,
    read_sidecar,
    sidecar_path,
    version_parts,
    write_sidecar,
)


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
    [("10.3.0.26", (10, 3, 0, 26)), ("11.1", (11, 1, 0, 0)), ("10.13.2.6", (10, 13, 2, 6)), ("10.0", (10, 0, 0, 0))],
)
def test_version_parts(text, expected):
    assert version_parts(text) == expected


def test_compatible_engine_runs_without_notes():
    assert check_compatibility(make_sidecar(), H100) == []


def test_other_build_number_is_another_version():
    """Issue 11 4i: TensorRT's own plan check compares all four parts, so 10.3.0.26 does not load on 10.3.0.30."""
    with pytest.raises(EngineCompatibilityError, match=r"10\.3\.0\.30"):
        check_compatibility(make_sidecar(), replace(H100, tensorrt_version="10.3.0.30"))
    version_compat = make_sidecar(version_compat=True)
    assert "version-compatible" in check_compatibility(
        version_compat, replace(H100, tensorrt_version="10.3.0.30"), allow_incompatible=True
    )[0]


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
