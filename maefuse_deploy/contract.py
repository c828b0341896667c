"""Names shared by the exporter and the graph runtimes (onnxruntime, TensorRT).

A graph's inputs are ``ir`` and ``vis`` and its output is ``fused`` (layouts: the io-mode contract in
backends/base.py); its ``metadata_props`` carry what a runtime needs to use it without extra flags. A batch range is
a :class:`BatchProfile` everywhere; it becomes text only in the metadata (``to_metadata``/``from_metadata``).
This is the bottom module: export, engine and backends import it, it imports nothing of theirs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InputError

if TYPE_CHECKING:
    import onnx

INPUT_IR = "ir"
INPUT_VIS = "vis"
OUTPUT_FUSED = "fused"

META_PREFIX = "maefuse."

_FIX = "give --batch-range as MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:1:8), or one batch size N"


@dataclass(frozen=True)
class BatchProfile:
    """One TensorRT optimisation profile over the batch axis; the engine accepts any batch in [min, max]."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise InputError(f"batch sizes must be integers, got {values}", fix=_FIX)
        if self.min < 1:
            raise InputError(f"batch sizes must be at least 1, got {self.min}:{self.opt}:{self.max}", fix=_FIX)
        if not self.min <= self.opt <= self.max:
            raise InputError(
                f"batch profile {self.min}:{self.opt}:{self.max} is not ordered MIN <= OPT <= MAX", fix=_FIX
            )

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def as_tuple(self) -> tuple[int, int, int]:
        return self.min, self.opt, self.max

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchProfile:
        return cls(int(data["min"]), int(data["opt"]), int(data["max"]))


def parse_batch_profile(text: str) -> BatchProfile:
    """``"1:4:8"`` -> BatchProfile(1, 4, 8); ``"8"`` -> a static batch of 8 (8, 8, 8). The one batch-text parser:
    command lines (export and engine ``--batch-range``), presets and graph metadata use the same form."""
    parts = text.strip().split(":")
    if len(parts) not in (1, 3):
        raise InputError(f"cannot read batch range {text!r}", fix=_FIX)
    try:
        values = [int(part, 10) for part in parts]
    except ValueError:
        raise InputError(f"batch range {text!r} holds something that is not an integer", fix=_FIX) from None
    if len(values) == 1:
        values *= 3
    return BatchProfile(*values)


@dataclass(frozen=True)
class GraphInfo:
    """What a runtime reads from an exported graph's metadata."""

    config: dict[str, Any]
    attention: str
    io: str
    precision: str
    height: int
    width: int
    camera_height: int
    camera_width: int
    policy: str
    checkpoint_sha256: str
    toolkit_version: str
    batch: BatchProfile = field(default_factory=lambda: BatchProfile(1, 1, 1))  # the range it was exported for

    def to_metadata(self) -> dict[str, str]:
        values = {
            "config": json.dumps(self.config, sort_keys=True),
            "attention": self.attention,
            "io": self.io,
            "precision": self.precision,
            "height": str(self.height),
            "width": str(self.width),
            "camera_height": str(self.camera_height),
            "camera_width": str(self.camera_width),
            "policy": self.policy,
            "checkpoint_sha256": self.checkpoint_sha256,
            "toolkit_version": self.toolkit_version,
            "batch": str(self.batch),
        }
        return {META_PREFIX + key: value for key, value in values.items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "graph") -> GraphInfo:
        try:
            get = {key[len(META_PREFIX):]: value for key, value in meta.items() if key.startswith(META_PREFIX)}
            info = cls(
                config=json.loads(get["config"]),
                attention=get["attention"],
                io=get["io"],
                precision=get["precision"],
                height=int(get["height"]),
                width=int(get["width"]),
                camera_height=int(get["camera_height"]),
                camera_width=int(get["camera_width"]),
                policy=get["policy"],
                checkpoint_sha256=get.get("checkpoint_sha256", ""),
                toolkit_version=get.get("toolkit_version", ""),
                batch=parse_batch_profile(get.get("batch", "1")),
            )
        except (KeyError, ValueError, TypeError, InputError) as exc:
            raise InputError(
                f"{source} has no maefuse metadata ({exc})", fix="export it with maefuse-export --onnx"
            ) from exc
        return info.check(source)

    def check(self, source: str = "graph") -> GraphInfo:
        """Refuse metadata whose values cannot describe a graph (a hand-edited or corrupted file). The batch range
        is advisory (the graph's own batch axis decides) and is left to its readers."""
        problems = []
        patch = self.config.get("patch_size") if isinstance(self.config, dict) else None
        if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
            problems.append(f"config patch_size {patch!r}")
        if self.io not in ("float", "uint8"):
            problems.append(f"io {self.io!r}")
        for name in ("height", "width", "camera_height", "camera_width"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)}")
        if problems:
            raise InputError(f"{source} has invalid maefuse metadata: {', '.join(problems)}",
                             fix="re-export it with maefuse-export --onnx")
        return self


class FrameSize(NamedTuple):
    """A frame size as cameras name it: width first. ``.hw`` is the (H, W) order of arrays and graphs."""

    width: int
    height: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width


_FRAME_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def parse_json(text: str) -> Any:
    """``json.loads`` with every way a text can fail to be JSON raised as ValueError: a syntax error
    (JSONDecodeError is one) or nesting deeper than the parser recurses (RecursionError, from a hostile file:
    ``[[[...]]]`` 100000 levels deep). The one JSON reader of the files a user hands the toolkit."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be a file this toolkit wrote") from None


# Largest frame (width x height) the toolkit takes by default: 100 megapixels (e.g. 10000x10000). One such pair and
# its float copies through the pipeline stay within a few GiB, so a default run fits a 24 GiB machine with room for
# a batch. Images read from files can raise it (maefuse-fuse --max-pixels); a size given as text (a graph's grid,
# a benchmark's resolution) cannot: 99999x99999 asked for 10 GB tensors and ended in an allocator's traceback.
MAX_FRAME_PIXELS = 100_000_000


def megapixels(pixels: int) -> str:
    """``pixels`` in megapixels: whole ones from 100 up, else three significant digits (a 1000-pixel limit is not
    "0 megapixels")."""
    amount = pixels / 1e6
    return f"{amount:.0f} megapixels" if amount >= 100 else f"{amount:.3g} megapixels"


def check_frame_pixels(width: int, height: int, what: str) -> None:
    """Refuse a frame size given as numbers (``what``: the option) above :data:`MAX_FRAME_PIXELS`."""
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(f"{what} {width}x{height} is {megapixels(width * height)}, over the "
                         f"{megapixels(MAX_FRAME_PIXELS)} a frame may have",
                         fix="give the camera's frame size, e.g. 640x480")


def parse_frame_size(text: str, what: str = "size") -> FrameSize:
    """The one reader of ``WIDTHxHEIGHT`` text (``--camera-size``, ``--resolution``, ``--ir-size``, presets):
    ``"640x512"`` -> FrameSize(width=640, height=512). ``what`` names the option in the one-line error."""
    match = _FRAME_SIZE.fullmatch(str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise InputError(f"{what} {text!r} is not WIDTHxHEIGHT", fix="give positive whole numbers, e.g. 640x480")
    check_frame_pixels(int(match[1]), int(match[2]), what)
    return FrameSize(int(match[1]), int(match[2]))


DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def parse_device(text: str | None) -> tuple[str, int | None]:
    """The one grammar of device names (every ``--device``, ``device=`` and the backends): ``"cuda:1"`` ->
    ("cuda", 1), ``"cpu"`` -> ("cpu", None), None -> ("auto", None). Only ``cuda`` takes an index. Text only: which
    devices exist is decided where torch is (backends.devices.resolve_device)."""
    name = "auto" if text is None else str(text).strip().lower()
    match = _DEVICE.fullmatch(name)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise InputError(f"unknown device {text!r}", fix=f"use {DEVICE_FORMS}")
    return match[1], int(match[2]) if match[2] is not None else None


# Pairs per call where the caller does not say (Fuser, maefuse-fuse, maefuse-stream, RemoteFuser): small enough to
# keep a 2-core CPU's latency per call low, large enough to amortise a call on a GPU.
RANDOM_PREFIX = "random:"  # "random:maefuse-tiny": a config's network with random weights (tests, demos)
DEFAULT_BATCH_SIZE = 4


def batch_slices(count: int, size: int) -> list[slice]:
    """The one rule for cutting ``count`` items into consecutive batches of at most ``size`` (the last one
    shorter): Fuser's calls, the files read per call, and a backend's graph-sized chunks all use it."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def require_graph_file(path: str | os.PathLike[str]) -> Path:
    """The one check that a graph file is there, with the one message every reader of graphs gives."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"ONNX graph {file} is a folder", fix="name the .onnx file in it")
    if not file.is_file():
        raise InputError(f"ONNX graph not found: {file}", fix="export one with maefuse-export --onnx")
    return file


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """A graph file's protobuf, loaded without its weights (external data stays on disk); a missing or unreadable
    file is one line. For readers of any ONNX graph (the TensorRT parser check); maefuse graphs: :func:`load_graph`."""
    import onnx

    file = require_graph_file(path)
    try:
        return onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf's DecodeError, OSError or ValueError for a damaged file
        raise InputError(f"{file} is not a readable ONNX graph ({type(exc).__name__})",
                         fix="re-export it with maefuse-export --onnx") from exc


def load_graph(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, GraphInfo]:
    """The one reader of a graph file: its protobuf (:func:`load_onnx`) and the :class:`GraphInfo` of its maefuse
    metadata.

    A missing, unreadable or metadata-less file is refused here, in one line, for every command that reads graphs;
    readers that need more of the graph (tensor specs, external files) take it from the returned protobuf.
    """
    proto = load_onnx(path)
    return proto, GraphInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, source=str(path))


def graph_input_dims(info: GraphInfo) -> dict[str, list[int]]:
    """The per-pair input dims (batch dropped) a graph with this metadata must take: float io (3, H, W) each at the
    network size; uint8 io IR (H, W) and VIS (H, W, 3) at the camera size."""
    if info.io == "uint8":
        height, width = info.camera_height, info.camera_width
        return {INPUT_IR: [height, width], INPUT_VIS: [height, width, 3]}
    return {INPUT_IR: [3, info.height, info.width], INPUT_VIS: [3, info.height, info.width]}


def check_graph_inputs(path: str | os.PathLike[str], info: GraphInfo, found: dict[str, list[Any]]) -> None:
    """A graph's own input dims (``found``: per input, batch dropped) must be what its metadata promises, else every
    run would fail deep inside the runtime: the one check of every graph backend."""
    expected = graph_input_dims(info)
    if found != expected:
        raise InputError(f"graph {path} takes inputs {found} but its metadata says {expected}",
                         fix="re-export the graph with maefuse-export --onnx")


def read_graph_info(path: str | Path) -> tuple[GraphInfo, int | None]:
    """A graph file's maefuse metadata (:func:`load_graph`) and its static batch, or None when it is dynamic; the
    graph's input dims are checked against the metadata (:func:`check_graph_inputs`)."""
    proto, info = load_graph(path)
    found = {
        value.name: [dim.dim_value if dim.HasField("dim_value") else dim.dim_param
                     for dim in value.type.tensor_type.shape.dim[1:]]
        for value in proto.graph.input
    }
    check_graph_inputs(path, info, found)
    dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
    static_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    return info, static_batch or None
