"""What the engine builder needs to know about an exported graph, read on the CPU without its weights.

The layouts are the backend contract (backends/base.py): ``float`` io takes ``ir`` and ``vis`` as (B, 3, H, W);
``uint8`` io takes ``ir`` as (B, H, W) and ``vis`` as (B, H, W, 3). Only the batch axis may be dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract import INPUT_IR, INPUT_VIS, OUTPUT_FUSED, BatchProfile, GraphInfo, load_graph
from ..errors import InputError

if TYPE_CHECKING:
    import onnx

_EXPORT_FIX = "export the graph with maefuse-export --onnx"

# ONNX TensorProto element types the contract allows at the graph boundary.
_ONNX_DTYPES = {1: "float32", 2: "uint8", 10: "float16"}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: numpy dtype name and shape, ``None`` where an axis is dynamic."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class OnnxGraph:
    path: Path
    info: GraphInfo
    metadata: dict[str, str]
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    external_files: tuple[str, ...]  # external-data files the graph reads, relative to its folder

    @property
    def static_batch(self) -> int | None:
        """The batch size baked into the graph, or None when the batch axis is dynamic."""
        return self.inputs[INPUT_IR].shape[0]

    @property
    def patch_size(self) -> int:
        return int(self.info.config.get("patch_size", 16))

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the images one run takes: the model grid for float io, the camera size for uint8 io."""
        shape = _static(self.inputs[INPUT_IR].shape)
        return (shape[2], shape[3]) if self.info.io == "float" else (shape[1], shape[2])


def read_graph(path: str | Path) -> OnnxGraph:
    """Read names, shapes, dtypes and maefuse metadata of ``path``; :class:`InputError` if it breaks the contract.

    The file and its metadata are read by :func:`~maefuse_deploy.contract.load_graph` (which also refuses an io
    other than float or uint8); the tensor specs and external files come from the protobuf it loaded.
    """
    path = Path(path)
    model, info = load_graph(path)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if info.precision not in ("fp32", "fp16"):
        raise InputError(f"{path} declares precision {info.precision!r}; expected fp32 or fp16", fix=_EXPORT_FIX)

    initializers = {init.name for init in model.graph.initializer}
    inputs = {v.name: _spec(v) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: _spec(v) for v in model.graph.output}
    if set(inputs) != {INPUT_IR, INPUT_VIS} or OUTPUT_FUSED not in outputs:
        raise InputError(
            f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; a maefuse graph has inputs "
            f"{INPUT_IR!r}, {INPUT_VIS!r} and output {OUTPUT_FUSED!r}",
            fix=_EXPORT_FIX,
        )
    _check_layout(path, info.io, inputs)

    return OnnxGraph(path, info, metadata, inputs, outputs, external_files(model))


def external_files(model: onnx.ModelProto) -> tuple[str, ...]:
    """The external-data files a loaded graph reads, relative to its folder (sorted, each once)."""
    import onnx

    return tuple(sorted(
        {
            entry.value
            for init in model.graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    ))


def profile_shapes(
    graph: OnnxGraph, profile: BatchProfile
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes of each input for one optimisation profile."""
    shapes = {}
    for name, spec in graph.inputs.items():
        rest = _static(spec.shape)[1:]
        shapes[name] = ((profile.min, *rest), (profile.opt, *rest), (profile.max, *rest))
    return shapes


def _static(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """The shape with its batch axis as 0 when dynamic; _check_layout guarantees the other axes are static."""
    return tuple(0 if d is None else d for d in shape)


def _spec(value: Any) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return TensorSpec(value.name, _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx-type-{tensor_type.elem_type}"), dims)


def _check_layout(path: Path, io: str, inputs: dict[str, TensorSpec]) -> None:
    ir, vis = inputs[INPUT_IR], inputs[INPUT_VIS]
    if io == "float":
        expected = "ir and vis (B, 3, H, W) float32 or float16"
        ok = (
            len(ir.shape) == 4
            and ir.shape[1:] == vis.shape[1:]
            and ir.shape[1] == 3
            and ir.dtype in ("float32", "float16")
            and vis.dtype == ir.dtype
        )
    else:
        expected = "ir (B, H, W) uint8 and vis (B, H, W, 3) uint8"
        ok = (
            len(ir.shape) == 3
            and len(vis.shape) == 4
            and vis.shape[1:3] == ir.shape[1:3]
            and vis.shape[3] == 3
            and ir.dtype == vis.dtype == "uint8"
        )
    if not ok:
        raise InputError(
            f"{path} declares io {io} but its inputs are ir {ir.shape} {ir.dtype}, vis {vis.shape} {vis.dtype}; "
            f"expected {expected}",
            fix=_EXPORT_FIX,
        )
    if any(d is None for d in ir.shape[1:] + vis.shape[1:]):
        raise InputError(
            f"{path} has a dynamic image size (ir {ir.shape}); only the batch axis may be dynamic",
            fix="export one static resolution per graph (maefuse-export --height H --width W)",
        )
    if ir.shape[0] != vis.shape[0]:
        raise InputError(
            f"{path}: ir and vis disagree on the batch axis ({ir.shape[0]} vs {vis.shape[0]})", fix=_EXPORT_FIX
        )
