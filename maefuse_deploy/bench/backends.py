"""The model under test and each benchmark row's backend, opened through the backend registry.

``--model`` may be a torch source (checkpoint or config name), an .onnx graph or a TensorRT engine; it is
inspected before anything runs so that an unreadable file is a one-line error. Each row names a registry entry
(backends/registry.py); what it opens follows from what the entry needs: torch weights (the model, or
``--reference`` for graphs and engines), a graph (the model, or a temporary export of the torch model) or an
engine. A row that cannot run here (no TensorRT, no GPU, no exporter, no weights for a graph) raises
:class:`Skipped` with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..backends import BackendBase, entry_for, get_entry, open_backend
from ..contract import GraphInfo, read_graph_info
from ..errors import InputError
from ..model.config import MaeFuseConfig, get_config
from ..model.maefuse import MaeFuse
from ..model.sources import resolve_torch_model
from ..tensorrt.sidecar import graph_info_of, read_sidecar
from .settings import BenchSettings

GRAPH_PRECISIONS = {"fp32": "float32", "fp16": "float16"}


class Skipped(Exception):
    """A row that cannot run here (missing library, device or file kind); the message says why."""


@dataclass
class ModelUnderTest:
    kind: Literal["weights", "graph", "engine"]  # the registry's ``needs`` of the file given as --model
    description: str
    path: str | None  # the graph or engine file
    torch_source: str | None  # what torch rows load: the model itself, or --reference for graphs and engines
    config: MaeFuseConfig | None
    graph: GraphInfo | None
    max_batch: int | None = None


def inspect_model(settings: BenchSettings) -> tuple[ModelUnderTest, MaeFuse | None]:
    """Check the model before anything runs, so an unreadable one is a one-line error, not a table of failures.

    Returns the loaded float32 module for a torch source (it becomes the reference, then is dropped).
    """
    source = settings.model or settings.config
    kind = entry_for(source).needs
    if kind == "weights" and settings.reference:  # it would be ignored: the weights are their own reference
        raise InputError(f"--reference {settings.reference} is for a graph or engine --model, and "
                         f"{source or 'the built-in model'} is torch weights, its own reference",
                         fix="drop --reference, or pass the graph or engine as --model")
    if kind == "weights":
        resolved = resolve_torch_model(source, settings.config)
        return (ModelUnderTest("weights", resolved.description, None, source, resolved.model.config, None),
                resolved.model)
    assert source is not None
    if kind == "graph":
        info, static_batch = read_graph_info(source)
        max_batch = static_batch or info.batch.max
    else:
        sidecar = read_sidecar(source)
        info, max_batch = graph_info_of(sidecar, source), sidecar.max_batch
    config = MaeFuseConfig.from_dict(info.config)
    if settings.config:
        config = get_config(settings.config)
    model = None
    if settings.reference:
        model = resolve_torch_model(settings.reference, settings.config).model
    description = f"{kind}: {source} ({info.precision}, io {info.io}, {info.width}x{info.height}, batch {info.batch})"
    return ModelUnderTest(kind, description, source, settings.reference, config, info, max_batch), model


def row_precision(name: str, mut: ModelUnderTest) -> str:
    """The precision a row computes in: a weights entry's dtype, or what the graph or engine was made in."""
    entry = get_entry(name)
    if entry.dtypes:
        return entry.dtypes[0]
    if mut.kind == entry.needs and mut.graph is not None:
        return GRAPH_PRECISIONS.get(mut.graph.precision, mut.graph.precision)
    return "float32" if entry.needs == "graph" else "float16"  # a temporary fp32 export; engines are FP16 builds


class BackendFactory:
    """Opens each row's backend from the model under test; raises :class:`Skipped` where one cannot run here.

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

    def build(self, name: str) -> tuple[BackendBase, list[str]]:
        entry = get_entry(name)
        device = self.settings.device
        if device.partition(":")[0] not in entry.devices:
            where = " or ".join(entry.devices)
            raise Skipped(f"{entry.summary} ({name}) run on {where}: pass --device {entry.devices[0]}")
        if entry.graph_precisions and self.mut.kind == "graph" and self.mut.graph is not None \
                and self.mut.graph.precision not in entry.graph_precisions:
            raise Skipped(f"{name} lowers the precision itself from a {'/'.join(entry.graph_precisions)} graph; "
                          f"--model is {self.mut.graph.precision}")
        if entry.needs == "weights" and self.mut.config is not None:  # graphs and engines hold what they compute
            reason = entry.load().unsupported_block_attention(self.mut.config.block_attention)
            if reason:
                raise Skipped(reason)
        notes: list[str] = []
        source = self._source(entry.needs, notes)
        options: dict[str, Any] = {}
        if "cuda_graph" in entry.options and device.startswith("cuda") and self.settings.cuda_graph:
            options["cuda_graph"] = True
            notes.append("CUDA graphs")
        if "threads" in entry.options and self.settings.threads:
            options["threads"] = self.settings.threads
        if "calibration" in entry.options and entry.dtypes[0].startswith("int8"):
            options["calibration"] = self.calibration_dir
            options["calibration_pairs"] = self.settings.calibration_pairs
        config = self.settings.config if entry.needs == "weights" else None
        backend = open_backend(name, source, device=device, config=config, **options)
        notes.extend(backend.build_notes)
        return backend, notes

    def _source(self, needs: str, notes: list[str]) -> str | None:
        mut = self.mut
        if needs == "weights":
            if mut.torch_source is None and mut.kind != "weights":
                article = "an" if mut.kind == "engine" else "a"
                raise Skipped(f"--model is {article} {mut.kind} file: torch rows need weights "
                              "(pass --reference CHECKPOINT)")
            return mut.torch_source
        if needs == "engine":
            if mut.kind != "engine":
                raise Skipped("tensorrt needs an engine: build one with maefuse-build-engine and pass it as --model")
            return mut.path
        if mut.kind == "engine":
            raise Skipped("--model is a TensorRT engine; a graph backend needs an .onnx graph")
        if mut.kind == "graph":
            return mut.path
        fresh = self._exported is None
        seconds = self._export()
        if fresh:
            notes.append(f"temporary fp32 ONNX exported in {seconds:.1f} s")
        return str(self._exported)

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
            model = resolve_torch_model(self.mut.torch_source, self.settings.config).model
            assert model is not None
            # The bench measures this graph's accuracy itself on real pairs, so the exporter's own check is skipped.
            export_onnx(model, target, spec, verify=False)
            self._exported = target
        return time.perf_counter() - start
