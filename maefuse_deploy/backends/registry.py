"""Every backend by name: the model files it opens, its devices, dtypes and options, and how to open it.

Fuser, the CLIs' choices and defaults, and ``maefuse-bench`` all read this table; there is no other list of
backends. Variants (``torch-bf16``, ``torch-compile``, ...) are entries with preset options. Adding a backend is one
:class:`BackendEntry` line here and a small class on :class:`~maefuse_deploy.backends.base.BackendBase` (see its
docstring). Openers are ``"module:Class"`` strings imported on use, so an optional library (TensorRT, OpenVINO) is
only needed by the backend that uses it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..contract import RANDOM_PREFIX, read_graph_info
from ..errors import InputError
from .base import BackendBase
from .devices import resolve_device

if TYPE_CHECKING:  # torch is imported by the backends that need it, on use
    from ..model.maefuse import MaeFuse

Needs = Literal["weights", "graph", "engine"]


@dataclass(frozen=True)
class BackendEntry:
    name: str
    needs: Needs  # what the backend opens: torch weights (checkpoint/config name), an ONNX graph, an engine
    suffixes: tuple[str, ...]  # model-file suffixes that pick this backend by default (first entry wins)
    devices: tuple[str, ...]  # device types it runs on ("cpu", "cuda")
    dtypes: tuple[str, ...]  # compute dtypes of a weights backend (first = default); (): the file decides
    options: tuple[str, ...]  # keyword options its opener accepts besides device/dtype/config
    opener: str  # "module:Class" with a classmethod ``open(source, *, device, dtype, config, **options)``
    preset: dict[str, Any] = field(default_factory=dict)  # options fixed by a variant entry
    summary: str = ""
    graph_precisions: tuple[str, ...] = ()  # graph backends that lower the precision themselves: the graphs they take

    def load(self) -> type[BackendBase]:
        module, _, attribute = self.opener.partition(":")
        return getattr(importlib.import_module(module, __package__), attribute)


_TORCH_OPTIONS = ("cuda_graph",)
_OPENVINO_OPTIONS = ("threads", "calibration", "calibration_pairs")
REGISTRY: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry("torch", "weights", (), ("cpu", "cuda"), ("float32", "float16", "bfloat16"),
                     (*_TORCH_OPTIONS, "compile"), ".torch:TorchBackend", summary="PyTorch eager SDPA"),
        BackendEntry("torch-bf16", "weights", (), ("cpu", "cuda"), ("bfloat16",), _TORCH_OPTIONS,
                     ".torch:TorchBackend", summary="PyTorch in bfloat16"),
        BackendEntry("torch-fp16", "weights", (), ("cuda", "cpu"), ("float16",), _TORCH_OPTIONS,
                     ".torch:TorchBackend", summary="PyTorch in float16"),
        BackendEntry("torch-compile", "weights", (), ("cpu", "cuda"), ("float32",), (), ".torch:TorchBackend",
                     preset={"compile": True}, summary="torch.compile (compiles on each shape's first call)"),
        BackendEntry("release-style", "weights", (), ("cpu", "cuda"), ("float32",), (),
                     ".release_style:ReleaseStyleBackend", summary="the released inference code's forward pass"),
        BackendEntry("onnxruntime", "graph", (".onnx",), ("cpu", "cuda"), (),
                     ("threads", "optimization_level", "allow_fallback", "io_binding"),
                     ".onnxruntime:OnnxRuntimeBackend", summary="an exported graph in onnxruntime"),
        BackendEntry("onnxruntime-int8", "graph", (), ("cpu",), ("int8",), ("threads",),
                     ".onnxruntime_int8:OnnxRuntimeInt8Backend", graph_precisions=("fp32",),
                     summary="onnxruntime on the graph's dynamic int8 quantization"),
        BackendEntry("openvino", "graph", (), ("cpu",), ("float32", "bfloat16", "int8", "int8-bf16"), _OPENVINO_OPTIONS,
                     ".openvino:OpenVinoBackend", graph_precisions=("fp32",), summary="OpenVINO on the CPU"),
        BackendEntry("openvino-bf16", "graph", (), ("cpu",), ("bfloat16",), _OPENVINO_OPTIONS,
                     ".openvino:OpenVinoBackend", graph_precisions=("fp32",), summary="OpenVINO, bf16 hint"),
        BackendEntry("openvino-int8", "graph", (), ("cpu",), ("int8",), _OPENVINO_OPTIONS,
                     ".openvino:OpenVinoBackend", graph_precisions=("fp32",),
                     summary="OpenVINO on NNCF int8 (calibrated on real pairs)"),
        BackendEntry("openvino-int8-bf16", "graph", (), ("cpu",), ("int8-bf16",), _OPENVINO_OPTIONS,
                     ".openvino:OpenVinoBackend", graph_precisions=("fp32",),
                     summary="OpenVINO on NNCF int8, the layers left in float in bf16 (BF16 CPUs)"),
        BackendEntry("openvino-weights", "weights", (), ("cpu",), ("auto", "int8-bf16", "int8", "bfloat16", "float32"),
                     ("threads", "calibration", "calibration_pairs", "cache_dir", "min_psnr"),
                     ".openvino_weights:OpenVinoWeightsBackend",
                     summary="OpenVINO from torch weights: each frame size converted, the fastest precision within "
                             "40 dB of float32, cached on disk"),
        BackendEntry("tensorrt", "engine", (".engine", ".plan", ".trt"), ("cuda",), (),
                     ("cuda_graph", "allow_incompatible", "pool_size", "onnx_path"),
                     ".tensorrt:TensorRTBackend", summary="TensorRT engines"),
    )
}
AUTO = "auto"
# What --backend offers; the others are bench variants.
FUSER_BACKENDS = (AUTO, "torch", "onnxruntime", "openvino", "openvino-weights", "tensorrt")


def backend_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_entry(name: str) -> BackendEntry:
    if name not in REGISTRY:
        raise InputError(f"unknown backend {name!r}", fix=f"use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def entry_for(source: str | os.PathLike[str] | None) -> BackendEntry:
    """The backend a model file opens with by default: by suffix, else torch (checkpoints, config names)."""
    suffix = Path(source).suffix.lower() if source is not None else ""
    for entry in REGISTRY.values():
        if suffix and suffix in entry.suffixes:
            return entry
    return REGISTRY["torch"]


def choose_backend(
    source: str | os.PathLike[str] | None,
    device: str | None = AUTO,
    dtype: str | None = None,
    options: tuple[str, ...] = (),
) -> tuple[str, str]:
    """``backend="auto"``: the fastest backend installed for ``source`` on ``device`` -> (entry name, why).

    An engine runs in TensorRT. On a GPU: a graph in onnxruntime, weights in torch. On a CPU: a graph in OpenVINO
    when it is installed (else onnxruntime); trained weights in OpenVINO converted per frame size (openvino-weights:
    int8, bf16 or float32, whichever is fastest within 40 dB of float32, cached on disk) when it is installed, else
    torch; random weights (``random:CONFIG``, tests and demos) in torch. A ``dtype`` or option the faster backend
    does not take (``float16``, ``cuda_graph``) keeps the file's own backend, which then checks them.
    """
    path = None if source is None else Path(source)
    entry = entry_for(path)
    if entry.needs == "engine":
        return entry.name, "a TensorRT engine"
    kind = default_device(entry.name, path) if device in (None, AUTO) else resolve_device(device)
    if kind.startswith("cuda"):
        return entry.name, f"{'graph' if entry.needs == 'graph' else 'weights'} on a GPU"
    if entry.needs == "weights" and str(source or "").startswith(RANDOM_PREFIX):
        return entry.name, "random weights: nothing worth compiling or quantizing"
    if not _installed("openvino"):
        return entry.name, "on the CPU; OpenVINO is not installed (pip install 'maefuse-deploy[openvino]')"
    faster = REGISTRY["openvino" if entry.needs == "graph" else "openvino-weights"]
    if entry.needs == "graph" and path is not None:
        precision = read_graph_info(path)[0].precision
        if precision not in faster.graph_precisions:
            return entry.name, f"on the CPU; {faster.name} lowers fp32 graphs itself, this one is {precision}"
    if dtype is not None and faster.dtypes and dtype not in faster.dtypes:
        return entry.name, f"on the CPU; {faster.name} does not compute in {dtype}"
    unknown = sorted(set(options) - set(faster.options))
    if unknown:
        return entry.name, f"on the CPU; {faster.name} has no option {unknown[0]}"
    return faster.name, "on the CPU, OpenVINO installed"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: its import is blocked
        return False


def default_device(backend: str | None, source: str | os.PathLike[str] | None) -> str:
    """``auto`` resolved for a backend: a CUDA-only backend asks for cuda (and says so where there is none)."""
    entry = get_entry(backend) if backend else entry_for(source)
    return "cuda" if entry.devices == ("cuda",) else resolve_device("auto")


def open_backend(
    name: str | None,
    source: str | os.PathLike[str] | MaeFuse | None,
    *,
    device: str | None = "auto",
    dtype: str | None = None,
    config: str | None = None,
    **options: Any,
) -> BackendBase:
    """Open backend ``name`` (None: the one ``source``'s suffix calls for) on ``device`` in ``dtype``.

    Checks the device type, dtype and option names against the entry first, so a wrong combination is a one-line
    error before any weights load. ``dtype`` applies to weights backends; graphs and engines carry their own.
    ``source`` may also be a loaded :class:`MaeFuse` for a weights backend (export verification compares a graph
    with the module it came from, which may exist only in memory): the backend computes with that module, moved to
    ``device`` and ``dtype`` in place.
    """
    if source is None or isinstance(source, str | os.PathLike):
        path, loaded = source, None
    else:
        path, loaded = None, source
    chosen_because = None
    if name == AUTO:
        if loaded is not None:
            raise InputError("backend auto opens a model source, not a loaded module", fix="name the backend")
        name, chosen_because = choose_backend(path, device, dtype, tuple(options))
    entry = get_entry(name) if name else entry_for(path)
    device = default_device(entry.name, path) if device in (None, "auto") else resolve_device(device)
    kind = device.partition(":")[0]
    if kind not in entry.devices:
        raise InputError(f"the {entry.name} backend runs on {' or '.join(entry.devices)}, not {device}",
                         fix=f"pass --device {entry.devices[0]}")
    if entry.dtypes:
        dtype = dtype or entry.dtypes[0]
        if dtype not in entry.dtypes:
            raise InputError(f"the {entry.name} backend computes in {', '.join(entry.dtypes)}, not {dtype}",
                             fix=f"use --dtype {entry.dtypes[0]}")
    else:
        dtype = None  # a graph or engine computes in the precision it was exported or built in
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise InputError(f"the {entry.name} backend has no option {unknown[0]!r}",
                         fix=f"its options are {', '.join(entry.options) or 'none'}")
    if entry.needs != "weights" and path is None:
        raise InputError(f"the {entry.name} backend needs a model file ({entry.needs})",
                         fix=f"pass a {'/'.join(entry.suffixes)} file")
    if loaded is not None:
        if config is not None:
            raise InputError(f"config {config!r} given with a loaded model", fix="leave config out: the module "
                             "carries its own")
        # What ``open`` does after loading weights. A class that computes in float32 only takes no dtype.
        precision = {} if entry.dtypes == ("float32",) else {"dtype": dtype}
        backend = entry.load()(loaded, device, **precision, **entry.preset, **options)  # type: ignore[call-arg]
    else:
        backend = entry.load().open(path, device=device, dtype=dtype, config=config, **entry.preset, **options)
    backend.name = entry.name
    if chosen_because is not None:
        backend.chosen = f"backend auto: {entry.name} ({chosen_because})"
    return backend
