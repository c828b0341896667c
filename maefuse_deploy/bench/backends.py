"""The model under test and each benchmark row's backend, built from it.

``--model`` may be a torch source (checkpoint or config name), an .onnx graph or a TensorRT engine; it is
inspected before anything runs so that an unreadable file is a one-line error. A backend that cannot run here
(no TensorRT, no GPU, no exporter, no torch weights for a graph) raises :class:`Skipped` with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..contract import GraphInfo
from ..errors import InputError
from ..model.config import MaeFuseConfig, get_config
from ..model.maefuse import MaeFuse
from ..runtime.backend import Backend
from ..runtime.sources import ENGINE_SUFFIXES, GRAPH_SUFFIXES, resolve_torch_model
from ..runtime.torch_backend import TorchBackend
from .release_style import ReleaseStyleBackend
from .settings import BenchSettings

TORCH_DTYPES = {"torch": "float32", "torch-bf16": "bfloat16", "torch-fp16": "float16", "torch-compile": "float32",
                "release-style": "float32"}
OPENVINO_PRECISIONS = {"openvino": ("fp32", "float32"), "openvino-bf16": ("bf16", "bfloat16"),
                       "openvino-int8": ("int8", "int8")}
GRAPH_PRECISIONS = {"fp32": "float32", "fp16": "float16"}


class Skipped(Exception):
    """A row that cannot run here (missing library, device or file kind); the message says why."""


@dataclass
class ModelUnderTest:
    kind: Literal["torch", "onnx", "engine"]
    description: str
    path: str | None  # the graph or engine file
    torch_source: str | None  # what torch rows load: the model itself, or --reference for graphs and engines
    config: MaeFuseConfig | None
    graph: GraphInfo | None
    max_batch: int | None = None


def _kind(source: str | None) -> Literal["torch", "onnx", "engine"]:
    suffix = Path(source).suffix.lower() if source else ""
    if suffix in GRAPH_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    return "torch"


def _graph_info(path: str) -> tuple[GraphInfo, int | None]:
    import onnx

    file = Path(path)
    if not file.is_file():
        raise InputError(f"ONNX graph not found: {file}", fix="export one with maefuse-export --onnx")
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others for a damaged file
        raise InputError(f"{file} is not a readable ONNX graph ({type(exc).__name__})",
                         fix="re-export it with maefuse-export --onnx") from exc
    info = GraphInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, source=str(file))
    dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
    static_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    return info, static_batch or int(info.batch.split(":")[-1])


def _engine_info(path: str) -> tuple[GraphInfo, int]:
    from ..engine.sidecar import read_sidecar, sidecar_path

    sidecar = read_sidecar(path)
    return GraphInfo.from_metadata(sidecar.graph_metadata, source=str(sidecar_path(path))), sidecar.max_batch


def inspect_model(settings: BenchSettings) -> tuple[ModelUnderTest, MaeFuse | None]:
    """Check the model before anything runs, so an unreadable one is a one-line error, not a table of failures.

    Returns the loaded float32 module for a torch source (it becomes the reference, then is dropped).
    """
    source = settings.model or settings.config
    kind = _kind(source)
    if kind == "torch":
        resolved = resolve_torch_model(source, settings.config)
        model = resolved.model
        assert model is not None
        return ModelUnderTest("torch", resolved.description, None, source, model.config, None), model
    assert source is not None
    info, max_batch = _graph_info(source) if kind == "onnx" else _engine_info(source)
    config = MaeFuseConfig.from_dict(info.config)
    if settings.config:
        config = get_config(settings.config)
    model = None
    if settings.reference:
        resolved = resolve_torch_model(settings.reference, settings.config)
        model = resolved.model
    description = f"{kind}: {source} ({info.precision}, io {info.io}, {info.width}x{info.height}, batch {info.batch})"
    return ModelUnderTest(kind, description, source, settings.reference, config, info, max_batch), model


def row_precision(name: str, mut: ModelUnderTest) -> str:
    if name in TORCH_DTYPES:
        return TORCH_DTYPES[name]
    if name in OPENVINO_PRECISIONS:
        return OPENVINO_PRECISIONS[name][1]
    if name == "onnxruntime-int8":
        return "int8"
    if name == "onnxruntime":
        precision = mut.graph.precision if mut.kind == "onnx" and mut.graph else "fp32"
        return GRAPH_PRECISIONS.get(precision, precision)
    if name == "tensorrt" and mut.kind == "engine" and mut.graph:
        return GRAPH_PRECISIONS.get(mut.graph.precision, mut.graph.precision)
    return "float16"


class BackendFactory:
    """Builds each row's backend from the model under test; raises :class:`Skipped` where one cannot run here.

    Torch rows load their own copy of the weights: a backend casts its module in place, so rows cannot share one.
    """

    def __init__(self, mut: ModelUnderTest, settings: BenchSettings, workdir: Path,
                 model_size: tuple[int, int], calibration_dir: Path) -> None:
        self.calibration_dir = calibration_dir
        self.mut = mut
        self.settings = settings
        self.workdir = workdir
        self.model_size = model_size
        self._exported: Path | None = None

    def _torch_model(self) -> MaeFuse:
        if self.mut.torch_source is None and self.mut.kind != "torch":
            raise Skipped(f"--model is an {self.mut.kind} file: torch rows need weights (pass --reference CHECKPOINT)")
        model = resolve_torch_model(self.mut.torch_source, self.settings.config).model
        assert model is not None
        return model

    def build(self, name: str) -> tuple[Backend, list[str]]:
        device = self.settings.device
        if name in ("torch", "torch-bf16", "torch-fp16", "torch-compile"):
            cuda_graph = self.settings.cuda_graph and torch.device(device).type == "cuda" and name != "torch-compile"
            backend = TorchBackend(self._torch_model(), device=device, dtype=TORCH_DTYPES[name], cuda_graph=cuda_graph)
            notes = ["CUDA graphs"] if cuda_graph else []
            if name == "torch-compile":
                # Compilation itself happens on the first call of each input shape: it shows in first_call_s.
                backend.model = torch.compile(backend.model)  # type: ignore[assignment]
            return backend, notes
        if name == "release-style":
            return ReleaseStyleBackend(self._torch_model(), device=device), []
        if name == "onnxruntime":
            return self._onnxruntime()
        if name == "onnxruntime-int8":
            return self._onnxruntime_int8()
        if name in OPENVINO_PRECISIONS:
            return self._openvino(OPENVINO_PRECISIONS[name][0])
        return self._tensorrt()

    def _graph(self, runtime: str) -> tuple[str, list[str]]:
        """The .onnx these rows run: the given graph, or one temporary fp32 export shared by every graph row."""
        if self.mut.kind == "engine":
            raise Skipped(f"--model is a TensorRT engine; {runtime} needs an .onnx graph")
        if self.mut.kind == "torch":
            fresh = self._exported is None
            seconds = self._export()
            return str(self._exported), [f"temporary fp32 ONNX exported in {seconds:.1f} s"] if fresh else []
        assert self.mut.path is not None
        return self.mut.path, []

    def _onnxruntime(self) -> tuple[Backend, list[str]]:
        from ..runtime.fuser import Fuser

        path, notes = self._graph("onnxruntime")
        options: dict[str, Any] = {"threads": self.settings.threads} if self.settings.threads else {}
        fuser = Fuser.from_checkpoint(path, "onnxruntime", device=self.settings.device, **options)
        return fuser.backend, notes

    def _fp32_graph(self, runtime: str) -> tuple[str, list[str]]:
        path, notes = self._graph(runtime)
        if self.mut.kind == "onnx" and self.mut.graph is not None and self.mut.graph.precision != "fp32":
            raise Skipped(f"{runtime} lowers the precision itself from the fp32 graph; --model is "
                          f"{self.mut.graph.precision}")
        return path, notes

    def _onnxruntime_int8(self) -> tuple[Backend, list[str]]:
        from ..backends.onnxruntime_int8 import quantize_dynamic_int8
        from ..runtime.fuser import Fuser

        if torch.device(self.settings.device).type != "cpu":
            raise Skipped("dynamic int8 (MatMulInteger) runs on onnxruntime's CPU provider: pass --device cpu")
        path, notes = self._fp32_graph("onnxruntime int8")
        quantized = self.workdir / "model-int8.onnx"
        seconds = quantize_dynamic_int8(path, quantized)
        notes.append(f"dynamic int8 quantization (weights per channel) in {seconds:.1f} s")
        options: dict[str, Any] = {"threads": self.settings.threads} if self.settings.threads else {}
        fuser = Fuser.from_checkpoint(str(quantized), "onnxruntime", device="cpu", **options)
        return fuser.backend, notes

    def _openvino(self, precision: str) -> tuple[Backend, list[str]]:
        from ..backends.openvino import OpenVinoBackend, import_openvino

        if torch.device(self.settings.device).type != "cpu":
            raise Skipped("OpenVINO runs on the CPU here: pass --device cpu")
        import_openvino()  # UnavailableError (a skipped row) before any export where the package is missing
        path, notes = self._fp32_graph("openvino")
        calibration = None
        if precision == "int8":
            calibration = self.calibration_dir
            notes.append(f"NNCF int8, calibrated on up to {self.settings.calibration_pairs} real pairs from "
                         f"{calibration}")
        backend = OpenVinoBackend(path, precision=precision, threads=self.settings.threads, calibration=calibration,
                                  calibration_pairs=self.settings.calibration_pairs)
        if backend.quantize_s is not None:
            notes[-1] += f" in {backend.quantize_s:.1f} s"
        return backend, notes

    def _export(self) -> float:
        """Export the torch model once to a temporary fp32 graph with a batch axis covering every row."""
        try:
            from ..export import ExportSpec, export_onnx
        except ImportError as exc:
            raise Skipped(f"the ONNX exporter is not available ({exc}); export with maefuse-export --onnx and "
                          "pass the .onnx as --model") from exc
        start = time.perf_counter()
        if self._exported is None:
            batches = self.settings.batches
            spec = ExportSpec(height=self.model_size[0], width=self.model_size[1],
                              batch=(min(batches), min(batches), max(batches)))
            target = self.workdir / "model.onnx"
            # The bench measures this graph's accuracy itself on real pairs, so the exporter's own check is skipped.
            export_onnx(self._torch_model(), target, spec, verify=False)
            self._exported = target
        return time.perf_counter() - start

    def _tensorrt(self) -> tuple[Backend, list[str]]:
        from ..engine import availability

        availability.import_tensorrt()  # UnavailableError with the reason where TensorRT is missing
        if torch.device(self.settings.device).type != "cuda":
            raise Skipped("TensorRT runs on a CUDA GPU: pass --device cuda")
        if self.mut.kind != "engine":
            raise Skipped("tensorrt needs an engine: build one with maefuse-build-engine and pass it as --model")
        from ..runtime.fuser import Fuser

        fuser = Fuser.from_checkpoint(self.mut.path, "tensorrt", device=self.settings.device,
                                      cuda_graph=self.settings.cuda_graph)
        return fuser.backend, []
