"""Property-based fuzzing of everything the toolkit reads from a file: image bytes (PNG, JPEG), safetensors
headers, ONNX protobufs and their metadata, engine sidecars.

The property: every input ends in a result or in one MaeFuseError whose message is one line -- never another
exception (a traceback for the user), never a file left behind. Examples are bounded (and derandomized, so CI
runs the same ones every time); the whole file takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maefuse_deploy.errors import MaeFuseError
from maefuse_deploy.export import ExportSpec, export_onnx
from maefuse_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from maefuse_deploy.model.config import CONFIGS
from maefuse_deploy.model.maefuse import build_model
from maefuse_deploy.runtime.files import fuse_pairs, plan_fuse_job
from maefuse_deploy.runtime.fuser import Fuser
from maefuse_deploy.tensorrt.sidecar import RuntimeFacts, check_compatibility, read_sidecar

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(FUZZ, max_examples=25)


class Blob(bytes):
    """Fixture bytes that print short in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


def one_line_or_result(action):
    """Run ``action``; a MaeFuseError must be one non-empty line. Any other exception fails the test."""
    try:
        return action()
    except MaeFuseError as exc:
        text = str(exc)
        assert text and "\n" not in text, repr(text)
        return None


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Mutations: (position as a fraction of the file, replacement bytes), then an optional truncation.
mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=6)
truncation = st.one_of(st.none(), st.floats(0, 1))


def mutate(data: bytes, edits: list[tuple[float, bytes]], cut: float | None, protect: int = 0) -> bytes:
    """Overwrite bytes at the given positions (after the first ``protect`` bytes), then cut the file short."""
    buffer = bytearray(data)
    for where, replacement in edits:
        start = protect + int(where * (len(buffer) - protect))
        buffer[start : start + len(replacement)] = replacement
    if cut is not None:
        buffer = buffer[: int(cut * len(buffer))]
    return bytes(buffer)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(0)
    vis = cv2.GaussianBlur(rng.integers(0, 255, (40, 56, 3), np.uint8), (5, 5), 2)
    ir = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    return {
        "png": cv2.imencode(".png", ir)[1].tobytes(),
        "png16": cv2.imencode(".png", ir.astype(np.uint16) * 257)[1].tobytes(),
        "jpg": cv2.imencode(".jpg", vis)[1].tobytes(),
        "vis": vis,
    }


@pytest.fixture(scope="module")
def fuser():
    with Fuser.from_checkpoint("random:maefuse-micro", batch_size=2) as micro:
        yield micro


@FUZZ
@given(kind=st.sampled_from(["png", "png16", "jpg"]), edits=mutations, cut=truncation)
@pytest.mark.filterwarnings("ignore::maefuse_deploy.io.DecodeWarning")  # a damaged file that decodes says so: expected
def test_mutated_images_fuse_or_fail_in_one_line_and_leave_nothing(sources, fuser, kind, edits, cut):
    data = mutate(sources[kind], edits, cut)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for side in ("ir", "vi"):
            (root / side).mkdir()
        (root / "ir" / f"a.{kind[:3]}").write_bytes(data)
        cv2.imwrite(str(root / "vi" / "a.png"), sources["vis"])
        out = root / "out"

        def run():
            job = plan_fuse_job(root / "ir", root / "vi", out, with_side_by_side=True)
            return fuse_pairs(fuser, job, resize=True)

        written = one_line_or_result(run)
        if written is None:
            assert not out.exists() or files_in(out) == []
        else:
            assert files_in(out) == ["a.png", "a_sbs.png"]


@FUZZ
@given(width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1), depth=st.sampled_from([1, 2, 8, 16, 3]),
       colour=st.sampled_from([0, 2, 3, 4, 6, 7]))
def test_png_headers_declaring_any_size_are_refused_or_read(sources, width, height, depth, colour):
    """IHDR rewritten (with a valid CRC, so the decoder believes it) to any size, depth and colour type."""
    data = sources["png"]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    forged = data[:8] + png_chunk(b"IHDR", ihdr) + data[8 + 25 :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forged.png"
        path.write_bytes(forged)
        from maefuse_deploy.io import read_image

        image = one_line_or_result(lambda: read_image(path, "IR", max_pixels=4_000_000))
        if image is not None:
            assert image.shape[0] * image.shape[1] <= 4_000_000


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
    save_checkpoint(build_model(CONFIGS["maefuse-micro"], seed=0), path)
    return Blob(path.read_bytes())


@FUZZ
@given(edits=mutations, cut=truncation, header_length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_mutated_safetensors_headers_load_or_fail_in_one_line(checkpoint_bytes, edits, cut, header_length):
    (length,) = struct.unpack("<Q", checkpoint_bytes[:8])
    header = checkpoint_bytes[8 : 8 + length]
    # Mutate inside the JSON header (where a parser can be confused), keep the tensor bytes.
    data = checkpoint_bytes[:8] + mutate(header, edits, None) + checkpoint_bytes[8 + length :]
    if header_length is not None:
        data = struct.pack("<Q", header_length) + data[8:]
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        one_line_or_result(lambda: load_checkpoint(path))
        assert files_in(Path(tmp)) == ["model.safetensors"]


@FEW
@given(field=st.sampled_from(["config", "metadata", "tensors"]), key=st.text(max_size=12),
       value=st.one_of(st.text(max_size=20), st.integers(-(2**40), 2**40).map(str), st.none()))
def test_safetensors_with_forged_json_header_load_or_fail_in_one_line(checkpoint_bytes, field, key, value):
    """A well-formed header whose content lies: config fields, metadata entries, tensor dtype/shape/offsets."""
    (length,) = struct.unpack("<Q", checkpoint_bytes[:8])
    header = json.loads(checkpoint_bytes[8 : 8 + length])
    meta = header["__metadata__"]
    config = json.loads(meta["maefuse.config"])
    if field == "config":
        target = key if key else "embed_dim"
        if value is None:
            config.pop(target, None)
        else:
            config[target] = int(value) if value.lstrip("-").isdigit() else value
        meta["maefuse.config"] = json.dumps(config)
    elif field == "metadata":
        if value is None:
            meta.pop("maefuse.config", None)
        else:
            meta[key or "maefuse.config"] = value
    else:
        name = sorted(k for k in header if k != "__metadata__")[len(key) % (len(header) - 1)]
        entry = header[name]
        if value is None:
            entry["dtype"] = "F16"
        elif value.lstrip("-").isdigit():
            entry["shape"] = [int(value)]
        else:
            entry["data_offsets"] = [0, len(value)]
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    data = struct.pack("<Q", len(encoded)) + encoded + checkpoint_bytes[8 + length :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        one_line_or_result(lambda: load_checkpoint(path))


@pytest.fixture(scope="module")
def graph_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "micro.onnx"
    export_onnx(build_model(CONFIGS["maefuse-micro"], seed=0), path, ExportSpec(height=64, width=64), verify=False)
    return Blob(path.read_bytes())


def run_graph(path: Path, sources) -> None:
    def action():
        with Fuser.from_checkpoint(path) as graph:
            fused = graph.fuse(sources["vis"], sources["vis"])
            assert fused.shape == sources["vis"].shape
    one_line_or_result(action)


@FEW
@given(edits=mutations, cut=truncation)
def test_mutated_onnx_protobufs_fuse_or_fail_in_one_line(graph_bytes, sources, edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(mutate(graph_bytes, edits, cut))
        run_graph(path, sources)
        assert files_in(Path(tmp)) == ["model.onnx"]


@FEW
@given(key=st.sampled_from(["config", "io", "height", "width", "camera_height", "camera_width", "batch", "policy",
                            "precision", "attention"]),
       value=st.one_of(st.none(), st.text(max_size=16), st.integers(-5, 10**6).map(str),
                       st.sampled_from(['{"patch_size": 0}', '{"patch_size": 16}', "[]", "uint8", "1:2:1", "0"])))
def test_onnx_metadata_that_lies_fails_in_one_line(graph_bytes, sources, key, value):
    model = onnx.load_from_string(graph_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    full = f"maefuse.{key}"
    assert full in props
    if value is None:
        props.pop(full)
    else:
        props[full] = value
    del model.metadata_props[:]
    for name, text in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = name, text
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        run_graph(path, sources)


@pytest.fixture(scope="module")
def sidecar_text():
    from maefuse_deploy.contract import BatchProfile, GraphInfo
    from maefuse_deploy.tensorrt.sidecar import Sidecar

    info = GraphInfo(config={"name": "t", "patch_size": 4, "img_size": [8, 8]}, attention="official", io="float",
                     precision="fp16", height=8, width=8, camera_height=8, camera_width=8, policy="official",
                     checkpoint_sha256="ab" * 32, toolkit_version="0.1.0", batch="1:1:8")
    sidecar = Sidecar(
        tensorrt_version="10.3.0.26", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
        onnx_path="model.onnx", onnx_sha256="0" * 64, profiles=(BatchProfile(1, 1, 8),),
        input_shapes={"ir": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]], "vis": [[1, 3, 8, 8], [1, 3, 8, 8],
                                                                                [8, 3, 8, 8]]},
        precision="fp16", io="float", graph_metadata=info.to_metadata(), build_time="2026-01-01T00:00:00+00:00",
        build_seconds=1.0, hardware_compat=False, version_compat=False, typing="fp16-flag",
    )
    return json.dumps(sidecar.to_dict())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8,
)


@FUZZ
@given(data=st.data())
def test_forged_engine_sidecars_are_read_or_refused_in_one_line(sidecar_text, data):
    sidecar = json.loads(sidecar_text)
    mode = data.draw(st.sampled_from(["replace", "drop", "bytes"]))
    if mode == "bytes":
        text = mutate(sidecar_text.encode(), data.draw(mutations), data.draw(truncation))
    else:
        key = data.draw(st.sampled_from(sorted(sidecar)))
        if mode == "drop":
            sidecar.pop(key)
        else:
            sidecar[key] = data.draw(json_values)
        text = json.dumps(sidecar).encode()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "model.engine"
        engine.write_bytes(b"plan")
        Path(f"{engine}.json").write_bytes(text)

        def read_and_decide():
            facts = RuntimeFacts("10.3.0.26", "NVIDIA H100 80GB HBM3", (9, 0))
            return check_compatibility(read_sidecar(engine), facts, engine_path=engine)

        one_line_or_result(read_and_decide)
        assert files_in(Path(tmp)) == ["model.engine", "model.engine.json"]
