"""``maefuse-export --triton``: a model repository that a full Triton Inference Server loads as is.

From an exported ``.onnx`` graph (Triton's ``onnxruntime_onnx`` platform) or a built TensorRT engine
(``tensorrt_plan``), write::

    REPO_DIR/NAME/config.pbtxt
    REPO_DIR/NAME/1/model.onnx (+ its external data)   or   REPO_DIR/NAME/1/model.plan

``config.pbtxt`` names exactly the graph's tensors with their types and dims (the graph itself for ONNX; the
engine's sidecar for engines, read first, so an engine without one is refused), takes ``max_batch_size`` from the
batch profile (a dynamic batch axis: its MAX, with Triton's dynamic batching preferring OPT and MAX; a static batch:
0, the batch in the dims), and places instances on the GPUs. Tensor layouts are the graph's (backends/base.py):
``float`` graphs take/return NCHW float32 ImageNet-normalised tensors, ``uint8`` graphs take camera frames (IR
[B, H, W], VIS [B, H, W, 3] BGR) and return the fused frame [B, H, W, 3] BGR.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..backends.registry import get_entry
from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, GraphInfo, load_graph
from ..errors import InputError
from ..tensorrt.onnx_info import external_files
from ..tensorrt.sidecar import graph_info_of, read_sidecar

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto element types -> Triton data types (those an exported MaeFuse graph can carry).
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 4: "TYPE_UINT16", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16",
                  16: "TYPE_BF16"}
DEFAULT_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # Triton's TYPE_* name
    dims: tuple[int, ...]  # without the batch axis when max_batch_size > 0; -1 = any


@dataclass(frozen=True)
class RepositoryModel:
    """What config.pbtxt says about one model, read from a graph or an engine's sidecar."""

    platform: str  # onnxruntime_onnx | tensorrt_plan
    max_batch_size: int  # 0: the batch is fixed and part of dims (no dynamic batching)
    preferred_batch_sizes: tuple[int, ...]
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    info: GraphInfo
    external_files: tuple[str, ...] = ()  # a graph's external-data files, relative to it, copied beside it

    @property
    def file_name(self) -> str:
        return "model.plan" if self.platform == "tensorrt_plan" else "model.onnx"


def describe_onnx(path: str | os.PathLike[str]) -> RepositoryModel:
    """Tensors, types and batch profile of an exported graph (read by contract.load_graph, weights not loaded)."""
    path = Path(path)
    graph, info = load_graph(path)
    initialisers = {t.name for t in graph.graph.initializer}
    values = [v for v in graph.graph.input if v.name not in initialisers]
    shapes = {v.name: _onnx_dims(v) for v in [*values, *graph.graph.output]}
    types = {v.name: _onnx_type(v, path) for v in [*values, *graph.graph.output]}
    batch_dynamic = all(shape[0] == -1 for shape in shapes.values())
    low, opt, high = info.batch.min, info.batch.opt, info.batch.max
    return _model("onnxruntime_onnx", info, [v.name for v in values], [v.name for v in graph.graph.output], shapes,
                  types, batch_dynamic, (low, opt, high), str(path), external=external_files(graph))


def describe_engine(path: str | os.PathLike[str]) -> RepositoryModel:
    """Tensors and batch profile of a TensorRT engine, from its sidecar (the plan itself needs TensorRT to read)."""
    sidecar = read_sidecar(path)  # refuses an engine without a readable sidecar, naming the fix
    info = graph_info_of(sidecar, path)
    low, opt, high = sidecar.min_batch, sidecar.profiles[0].opt, sidecar.max_batch
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (smallest, _, largest) in sidecar.input_shapes.items():
        shapes[name] = tuple(-1 if a != b else a for a, b in zip(smallest, largest, strict=True))
    batch_dynamic = low != high or all(shape[0] == -1 for shape in shapes.values())
    shapes = {name: (-1, *shape[1:]) if batch_dynamic else shape for name, shape in shapes.items()}
    # The output's shape follows from the io mode the graph was exported with (backends/base.py).
    first = -1 if batch_dynamic else high
    if info.io == "uint8":
        shapes[OUTPUT_FUSED] = (first, info.camera_height, info.camera_width, 3)
        types = {INPUT_IR: "TYPE_UINT8", INPUT_VIS: "TYPE_UINT8", OUTPUT_FUSED: "TYPE_UINT8"}
    else:
        shapes[OUTPUT_FUSED] = (first, 3, info.height, info.width)
        types = {INPUT_IR: "TYPE_FP32", INPUT_VIS: "TYPE_FP32", OUTPUT_FUSED: "TYPE_FP32"}
    inputs = list(sidecar.input_shapes)
    unknown = set(inputs) - set(types)
    if unknown:
        raise InputError(f"engine {os.fspath(path)} has inputs {sorted(unknown)} that no MaeFuse graph has",
                         fix="build the engine from a graph written by maefuse-export --onnx")
    return _model("tensorrt_plan", info, inputs, [OUTPUT_FUSED], shapes, types, batch_dynamic, (low, opt, high),
                  os.fspath(path))


def describe(path: str | os.PathLike[str]) -> RepositoryModel:
    suffix = Path(path).suffix.lower()
    if suffix in get_entry("onnxruntime").suffixes:
        return describe_onnx(path)
    if suffix in get_entry("tensorrt").suffixes:
        return describe_engine(path)
    engines = ", ".join(get_entry("tensorrt").suffixes)
    raise InputError(f"{os.fspath(path)} is neither an .onnx graph nor an engine ({engines})",
                     fix="pass the graph from maefuse-export --onnx or the engine from maefuse-build-engine")


def render_config(
    model: RepositoryModel, name: str, *, instances: int = 1, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
) -> str:
    """config.pbtxt text (Triton's ModelConfig protobuf in text format)."""
    lines = [f'name: "{name}"', f'platform: "{model.platform}"', f"max_batch_size: {model.max_batch_size}"]
    for field, tensors in (("input", model.inputs), ("output", model.outputs)):
        lines.append(f"{field} [")
        entries = [f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
                   for t in tensors]
        lines.append(",\n".join(entries))
        lines.append("]")
    if model.max_batch_size > 0:
        preferred = ", ".join(map(str, model.preferred_batch_sizes))
        lines.append(f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] "
                     f"max_queue_delay_microseconds: {queue_delay_us} }}")
    # No gpus list: Triton places `count` instances on every visible GPU.
    lines.append(f"instance_group [ {{ count: {instances} kind: KIND_GPU }} ]")
    info = model.info
    provenance = {"maefuse_io": info.io, "maefuse_precision": info.precision, "maefuse_policy": info.policy,
                  "maefuse_checkpoint_sha256": info.checkpoint_sha256, "maefuse_batch": str(info.batch)}
    lines.append("parameters [")
    lines.append(",\n".join(f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
                            for key, value in provenance.items()))
    lines.append("]")
    return "\n".join(lines) + "\n"


def export_repository(
    source: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    *,
    name: str = "maefuse",
    version: int = 1,
    instances: int = 1,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> Path:
    """Write ``repository/name/`` (config.pbtxt + version folder) for ``source``; return the model folder.

    The folder is assembled under a temporary name and renamed into place, so a failed export leaves nothing; an
    existing model folder of that name is refused rather than mixed with.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise InputError(f"model name {name!r} cannot be a folder name", fix="e.g. --triton-name maefuse")
    if version < 1 or instances < 1 or queue_delay_us < 0:
        raise InputError(f"version {version} and instances {instances} must be >= 1, queue delay >= 0")
    model = describe(source)
    repository = Path(repository)
    target = repository / name
    if target.exists():
        raise InputError(f"{target} already exists", fix="remove it, or pick another --triton-name")
    try:
        repository.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    except OSError as exc:
        raise InputError(f"cannot write {repository}: {exc.strerror or exc}", fix="choose a writable folder") from exc
    try:
        (staging / str(version)).mkdir()
        for file, destination in _model_files(Path(source), model):
            shutil.copyfile(file, staging / str(version) / destination)
        (staging / "config.pbtxt").write_text(
            render_config(model, name, instances=instances, queue_delay_us=queue_delay_us), encoding="utf-8")
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return target


def _model_files(source: Path, model: RepositoryModel) -> list[tuple[Path, str]]:
    files = [(source, model.file_name)]
    for location in model.external_files:
        data = source.parent / location
        if not data.is_file():
            raise InputError(f"external data {data} of {source} is missing", fix="keep it beside the graph")
        files.append((data, location))  # the graph names it relative to itself: keep the name
    return files


def _model(platform: str, info: GraphInfo, inputs: list[str], outputs: list[str],
           shapes: dict[str, tuple[int, ...]], types: dict[str, str], batch_dynamic: bool,
           profile: tuple[int, int, int], source: str, external: tuple[str, ...] = ()) -> RepositoryModel:
    expected_inputs, expected_outputs = {INPUT_IR, INPUT_VIS}, {OUTPUT_FUSED}
    if set(inputs) != expected_inputs or set(outputs) != expected_outputs:
        raise InputError(f"{source} has inputs {inputs} and outputs {outputs}, not a MaeFuse graph's "
                         f"{sorted(expected_inputs)} -> {sorted(expected_outputs)}",
                         fix="export the graph with maefuse-export --onnx")
    _, opt, high = profile
    if batch_dynamic:
        max_batch = high
        preferred = tuple(sorted({opt, high}))
        strip = slice(1, None)
    else:
        max_batch, preferred, strip = 0, (), slice(None)

    def tensor(name: str) -> TensorConfig:
        return TensorConfig(name, types[name], tuple(shapes[name][strip]))

    return RepositoryModel(platform, max_batch, preferred, tuple(tensor(n) for n in inputs),
                           tuple(tensor(n) for n in outputs), info, external)


def _onnx_dims(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)


def _onnx_type(value: onnx.ValueInfoProto, path: Path) -> str:
    elem = value.type.tensor_type.elem_type
    if elem not in ONNX_TO_TRITON:
        raise InputError(f"{path}: tensor {value.name!r} has ONNX type {elem}, which this exporter does not map",
                         fix="export the graph with maefuse-export --onnx")
    return ONNX_TO_TRITON[elem]
