"""backend="auto" (the default of Fuser.open and the commands) and the openvino-weights backend's on-disk cache.

Real OpenVINO, real NNCF, real weights and real pairs: the built-in model's choice on this CPU, the accuracy bound
it promises (>= 40 dB from torch float32), and the cache's four states (no entry, hit, stale, corrupt), each seen
in what the backend says and in the files it reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_module

from maefuse_deploy import Fuser
from maefuse_deploy.backends import choose_backend
from maefuse_deploy.backends.cache import ENTRY_FILE
from maefuse_deploy.backends.openvino_weights import check_order
from maefuse_deploy.compare import psnr
from maefuse_deploy.sample_pairs import as_arrays, load_pairs

require_module("openvino", "pip install 'maefuse-deploy[openvino]'")

SIZE = (160, 128)  # (W, H): small frames keep each conversion to a few seconds; 10 x 8 tokens of maefuse-tiny


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """The three shipped MSRS sample pairs at SIZE: IR HxW uint8 grey, VIS HxWx3 uint8 BGR."""
    return [(cv2.resize(ir, SIZE, interpolation=cv2.INTER_AREA), cv2.resize(vis, SIZE, interpolation=cv2.INTER_AREA))
            for ir, vis in as_arrays(load_pairs(None))]


def test_auto_on_cpu_picks_openvino_for_trained_weights_and_torch_otherwise() -> None:
    assert choose_backend(None, "cpu")[0] == "openvino-weights"  # the built-in model
    assert choose_backend("maefuse-tiny", "cpu")[0] == "openvino-weights"
    name, why = choose_backend("random:maefuse-micro", "cpu")
    assert name == "torch" and "random weights" in why
    # A precision OpenVINO does not offer keeps torch, which then takes it.
    name, why = choose_backend(None, "cpu", dtype="float16")
    assert name == "torch" and "float16" in why
    name, why = choose_backend(None, "cpu", options=("cuda_graph",))
    assert name == "torch" and "cuda_graph" in why
    assert choose_backend("model.engine", "auto")[0] == "tensorrt"


def test_auto_without_openvino_is_torch_and_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # an import of openvino now fails, as where it is absent
    name, why = choose_backend(None, "cpu")
    assert name == "torch" and "OpenVINO is not installed" in why and "pip install" in why
    fuser = Fuser.open(device="cpu")
    assert fuser.backend.name == "torch" and fuser.backend.chosen.startswith("backend auto: torch")


def test_auto_graph_on_cpu_is_openvino(tmp_path: Path) -> None:
    from maefuse_deploy.export.onnx_export import export_onnx
    from maefuse_deploy.export.spec import ExportSpec
    from maefuse_deploy.model.config import CONFIGS
    from maefuse_deploy.model.maefuse import build_model

    graph = tmp_path / "micro.onnx"
    export_onnx(build_model(CONFIGS["maefuse-micro"], seed=0), graph, ExportSpec(height=64, width=64), verify=False)
    assert choose_backend(graph, "cpu")[0] == "openvino"
    fuser = Fuser.open(graph, device="cpu")
    assert fuser.backend.name == "openvino" and "OpenVINO installed" in fuser.backend.chosen


def test_default_fuser_is_openvino_within_40_db_of_torch(pairs: list, tmp_path: Path) -> None:
    reference = Fuser.open(backend="torch", device="cpu")
    fuser = Fuser.open(device="cpu", cache_dir=tmp_path)
    assert fuser.backend.name == "openvino-weights"
    assert fuser.backend.chosen == "backend auto: openvino-weights (on the CPU, OpenVINO installed)"
    fused = fuser.fuse_batch(pairs)
    for ours, theirs in zip(fused, reference.fuse_batch(pairs), strict=True):
        assert ours.shape == theirs.shape and ours.dtype == np.uint8
        assert psnr(ours, theirs) >= 40.0
    [event] = fuser.backend.events
    assert f"{SIZE[0]}x{SIZE[1]} in " in event and "cache built (no entry)" in event
    assert "timed int8" in event  # chosen by measured speed (which wins depends on the CPU), then accuracy
    assert fuser.backend.description.startswith("openvino-weights ")  # the chosen precision replaces "auto"


def test_precisions_are_checked_fastest_first_and_int8_must_be_clearly_faster() -> None:
    # maefuse-tiny 640x480 and maefuse-l640 as measured on the Xeon with AMX (docs/backends.md)
    assert check_order({"int8-bf16": 0.0490, "int8": 0.0666, "bfloat16": 0.0434}) == ["bfloat16", "int8-bf16", "int8"]
    assert check_order({"int8-bf16": 1.61, "int8": 3.05, "bfloat16": 2.10}) == ["int8-bf16", "bfloat16", "int8"]
    # 3 % faster is within the margin: the float precision is checked first; 10 % faster is not
    assert check_order({"int8-bf16": 0.97, "bfloat16": 1.0})[0] == "bfloat16"
    assert check_order({"int8-bf16": 0.90, "bfloat16": 1.0})[0] == "int8-bf16"
    assert check_order({"int8": 0.5}) == ["int8"]  # a CPU without BF16: int8, then the float32 fallback


@pytest.mark.parametrize(("model", "calibrate_on", "check_on"),
                         [("maefuse-tiny", "N", "D"), ("maefuse-rt", "D", "N"), ("maefuse-rt-linear", "D", "N"),
                          ("maefuse-rt-linear", "N", "D")])
def test_int8_calibrated_on_other_pairs_keeps_the_image_within_40_db(msrs: Path, tmp_path: Path, model: str,
                                                                     calibrate_on: str, check_on: str) -> None:
    """A deployment calibrates on whatever pairs it has, rarely its own camera's. NNCF's SmoothQuant fitted its
    per-channel scales to the night pairs and read 33-39 dB on the day pairs (RoadScene -> MSRS at 640x480: 24-27
    dB); maefuse-rt calibrated on day pairs read 31 dB on night pairs while attention's output projections had a
    calibrated int8 range (their input's range follows how sharply the tokens attend; now quantized per frame,
    openvino.compress_projection_weights: 47 dB); maefuse-rt-linear calibrated on night pairs
    read 33-38 dB on day pairs while its Q x (scale Cov W^T) product took the fold at the scene's own scale
    (model/vit.py: LinearAttention scales it to 1). The recipe holds >= 42 dB both ways, so the bound is the
    benchmark's 40 dB."""
    calibration = tmp_path / "calibration"
    for kind in ("ir", "vi"):
        (calibration / kind).mkdir(parents=True)
        for image in sorted((msrs / kind).glob(f"*{calibrate_on}.png")):
            (calibration / kind / image.name).symlink_to(image)
    checked = [(cv2.resize(pair.ir, SIZE, interpolation=cv2.INTER_AREA),
                cv2.resize(pair.vis, SIZE, interpolation=cv2.INTER_AREA))
               for pair in load_pairs(msrs, 6) if pair.name.endswith(check_on)]
    assert len(list((calibration / "ir").iterdir())) == 3 and len(checked) == 3
    reference = Fuser.open(model, "torch", device="cpu").fuse_batch(checked)
    fuser = Fuser.open(model, "openvino-weights", device="cpu", dtype="int8", calibration=calibration,
                       calibration_pairs=3, cache_dir=tmp_path / "cache")
    for ours, theirs in zip(fuser.fuse_batch(checked), reference, strict=True):
        assert psnr(ours, theirs) >= 40.0
    assert fuser.backend.description.startswith("openvino-weights int8:")


def _open(cache: Path, model: str = "random:maefuse-micro") -> Fuser:
    # float32 and micro: the cache's behaviour without NNCF's minutes; the backend named, as auto keeps torch for
    # random weights.
    return Fuser.open(model, "openvino-weights", device="cpu", dtype="float32", cache_dir=cache, policy="native")


def _entry(cache: Path) -> Path:
    [entry] = [p for p in cache.iterdir() if p.name.startswith("openvino-") and p.name != "openvino-blobs"]
    return entry


def test_second_start_reads_the_cache_and_fuses_the_same(pairs: list, tmp_path: Path) -> None:
    first = _open(tmp_path)
    fused = first.fuse_batch(pairs)
    assert "cache built (no entry)" in first.backend.events[0]
    built = _entry(tmp_path)
    stamp = (built / "model.bin").stat().st_mtime_ns
    second = _open(tmp_path)
    again = second.fuse_batch(pairs)
    assert "cache hit" in second.backend.events[0]
    assert (built / "model.bin").stat().st_mtime_ns == stamp  # read, not rewritten
    for a, b in zip(fused, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Another frame size is another entry; the first stays.
    _open(tmp_path).fuse(*(cv2.resize(image, (96, 64)) for image in pairs[0]))
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("openvino-") and p.name != "openvino-blobs"]) == 2


def test_a_choice_made_for_other_cpu_kernels_is_not_read(pairs: list, tmp_path: Path, monkeypatch) -> None:
    """auto's choice holds for the kernels it was timed on: with AMX it took bf16, which under
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI ran emulated at seconds a pair. Another cap is another entry."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    _open(tmp_path).fuse(*pairs[0])
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    capped = _open(tmp_path)
    capped.fuse(*pairs[0])
    assert "cache built (no entry)" in capped.backend.events[0]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("openvino-") and p.name != "openvino-blobs"]) == 2


def test_stale_entry_is_rebuilt(pairs: list, tmp_path: Path) -> None:
    _open(tmp_path).fuse(*pairs[0])
    entry_file = _entry(tmp_path) / ENTRY_FILE
    entry = json.loads(entry_file.read_text())
    entry["versions"] = [[name, "0.0-old"] for name, _ in entry["versions"]]
    entry_file.write_text(json.dumps(entry))
    fuser = _open(tmp_path)
    fuser.fuse(*pairs[0])
    assert "cache rebuilt (stale: built by maefuse-deploy 0.0-old" in fuser.backend.events[0]
    assert "0.0-old" not in (_entry(tmp_path) / ENTRY_FILE).read_text()  # replaced, not patched


@pytest.mark.parametrize("damage", ["truncated weights", "garbage entry", "unreadable model, hashes updated"])
def test_corrupt_entry_is_rebuilt_never_trusted(damage: str, pairs: list, tmp_path: Path) -> None:
    good = _open(tmp_path).fuse(*pairs[0])
    folder = _entry(tmp_path)
    if damage == "truncated weights":
        (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:100])
        expected = "corrupt: model.bin changed since it was written"
    elif damage == "garbage entry":
        (folder / ENTRY_FILE).write_text("{not json")
        expected = f"corrupt: {ENTRY_FILE} unreadable"
    else:
        # Hashes that check out over a file OpenVINO cannot read: the reader's failure is what catches it.
        from maefuse_deploy.hashing import file_sha256

        (folder / "model.xml").write_text("<net>")
        entry = json.loads((folder / ENTRY_FILE).read_text())
        entry["files"]["model.xml"] = file_sha256(folder / "model.xml")
        (folder / ENTRY_FILE).write_text(json.dumps(entry))
        expected = "cache built (no entry)"  # removed as unusable, then built afresh
    fuser = _open(tmp_path)
    np.testing.assert_array_equal(fuser.fuse(*pairs[0]), good)
    assert expected in fuser.backend.events[0]
    assert _open(tmp_path).backend.prepare(SIZE[1], SIZE[0]).cache_status == "hit"  # and sound again


def test_a_killed_build_leaves_nothing_under_the_final_name(pairs: list, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".maefuse-tmp-{dead.stdout.strip()}-abc-openvino-x"
    leftover.mkdir()
    (leftover / "model.bin").write_bytes(b"half")
    live = tmp_path / f".maefuse-tmp-{os.getpid()}-abc-openvino-y"  # this process's own build in progress
    live.mkdir()
    _open(tmp_path).fuse(*pairs[0])
    assert not leftover.exists() and live.exists()
    assert all(not p.name.startswith(".maefuse-tmp-") or p == live for p in tmp_path.iterdir())


def test_a_onednn_isa_cap_without_bf16_takes_bf16_out_of_autos_candidates(monkeypatch) -> None:
    """Under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI OpenVINO's bf16 runs emulated (seconds a pair) while the plugin still
    reports BF16: auto must time int8 and float32 only, as on a CPU without BF16 units."""
    ov = pytest.importorskip("openvino")
    from maefuse_deploy.backends.openvino import bf16_units

    core = ov.Core()
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert bf16_units(core)[0] == ("BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni")
    native, why_not = bf16_units(core)
    assert not native and why_not  # the reason goes into the backend's notes
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX10_1_512_AMX")  # a cap that keeps AMX leaves the answer to the CPU
    assert bf16_units(core)[0] == ("BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def test_a_cache_folder_that_takes_no_files_is_one_line_naming_the_setting(tmp_path: Path, monkeypatch) -> None:
    """Found by a sweep of bad inputs: OpenVINO's blob cache under such a root failed as a C++ traceback."""
    from maefuse_deploy.errors import InputError

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("MAEFUSE_CACHE_DIR", str(blocker))
    with pytest.raises(InputError) as refused:
        Fuser.open("maefuse-tiny", "openvino-weights")
    assert str(refused.value) == (f"cannot write the model cache {blocker} (fix: set MAEFUSE_CACHE_DIR to a "
                                  "writable folder)")
