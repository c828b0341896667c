"""Build a TensorRT engine from an exported maefuse graph.

Two steps: :func:`prepare_build` checks everything a CPU can check (the ONNX, its metadata and layouts, the batch
profile, writable outputs) so that input mistakes are reported before anyone looks for a GPU; :func:`build_engine`
then does the TensorRT work, which is kept thin: parse from the file path (so external weight data beside the
graph is found), the optimisation profiles over the batch axis (one per context that may run at once: see
:func:`add_profiles`), precision, timing cache, build, inspect, write.

Precision, by TensorRT version (docs/architecture.md §6):

- FP16 graph (metadata precision fp16, from ``maefuse-export --precision fp16``): strongly typed network on every
  version; the graph's casts decide, LayerNorm/Softmax stay FP32 as exported.
- FP32 graph, ``--precision fp16``, TensorRT 10.0-10.11: the FP16 builder flag, with the Softmax and Reduce layers
  whose outputs are float constrained to FP32 (preferred, so a missing FP32 kernel cannot fail the build).
  Normalization layers are left alone: they already compute in FP32, and constraining them only adds casts; shape
  and integer reductions are left alone too (constraining them logs errors).
- FP32 graph, ``--precision fp16``, TensorRT 10.12+ and 11+: refused with the fix (export the FP16 graph): 10.12
  deprecates the per-layer precision calls the flag path needs, and 11 has no FP16 flag at all.
- ``--precision fp32``: FP32 graph only, TF32 off, so "fp32" means FP32 arithmetic.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from ..atomic import atomic_path, check_writable
from ..contract import BatchProfile, parse_batch_profile, require_graph_file
from ..errors import InputError
from ..hashing import file_sha256
from ..version import __version__
from . import availability
from .cuda import checked
from .errors import EngineError
from .layers import AttentionReport, attention_report
from .onnx_info import OnnxGraph, profile_shapes, read_graph
from .pool import DEFAULT_POOL_SIZE
from .progress import ProgressLine, Spinner
from .sidecar import AMPERE, RuntimeFacts, Sidecar, sidecar_path, version_parts, write_sidecar

if TYPE_CHECKING:  # checked against tensorrt-stubs (.ci/typecheck); imported for real only in build_engine
    import tensorrt

# For a dynamic-batch graph that does not record its range: latency first (OPT 1), batches up to 8 accepted.
DEFAULT_DYNAMIC_BATCH = BatchProfile(1, 1, 8)
PRECISIONS = ("fp16", "fp32")
TYPING_STRONG = "strongly-typed"
TYPING_FP16_FLAG = "fp16-flag"
TYPING_FP32 = "fp32"
# Layer types kept in FP32 under the TensorRT 10 FP16 flag: FP16 overflows in their reductions on ViT-L.
_FP32_LAYER_TYPES = ("SOFTMAX", "REDUCE")
LAST_FP16_FLAG_VERSION = (10, 11)  # 10.12 deprecates ILayer.precision / set_output_type


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    batch: str | BatchProfile | None = None  # None: the graph's fixed batch or recorded range, else the default
    workspace_gib: float | None = None
    timing_cache: Path | None = None
    opt_level: int | None = None  # TensorRT builder optimisation level 0..5 (TensorRT's default: 3)
    hardware_compat: bool = False
    version_compat: bool = False
    # Optimization profiles (all over the same batch range), one per execution context that may run at once.
    # None: DEFAULT_POOL_SIZE for a dynamic-batch graph (the backend's default pool), 1 for a fixed-batch one.
    profiles: int | None = None


@dataclass(frozen=True)
class BuildPlan:
    """A checked build request: everything :func:`build_engine` needs, nothing that needs a GPU."""

    onnx_path: Path
    engine_path: Path
    graph: OnnxGraph
    profile: BatchProfile
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    options: BuildOptions
    profile_count: int = 1  # identical optimization profiles of ``profile`` (see add_profiles)

    @property
    def profiles(self) -> tuple[BatchProfile, ...]:
        """Every optimization profile the engine gets, in TensorRT's order (what the sidecar records)."""
        return (self.profile,) * self.profile_count

    @property
    def profiles_text(self) -> str:
        """``2 optimization profiles`` (the build's progress line)."""
        return f"{self.profile_count} optimization profile{'s' if self.profile_count != 1 else ''}"

    @property
    def profiles_summary(self) -> str:
        """The profiles and what they allow at run time, for the build report."""
        if self.graph.static_batch is not None:
            return f"{self.profile} in {self.profiles_text}, shared by every context (static shapes)"
        return f"{self.profile} in {self.profiles_text}, so up to {self.profile_count} calls at once per backend"

    @property
    def layers_path(self) -> Path:
        return Path(f"{self.engine_path}.layers.json")

    @property
    def log_path(self) -> Path:
        return Path(f"{self.engine_path}.build.log")


@dataclass
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    layers_path: Path
    log_path: Path
    sidecar: Sidecar
    attention: AttentionReport
    engine_bytes: int
    notes: list[str] = field(default_factory=list)


def prepare_build(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], options: BuildOptions | None = None
) -> BuildPlan:
    """Check the request on the CPU; raise :class:`InputError` naming the problem and the fix."""
    options = options or BuildOptions()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if options.precision not in PRECISIONS:
        raise InputError(f"unknown precision {options.precision!r}", fix="use --precision fp16 or fp32")
    if options.workspace_gib is not None and not options.workspace_gib > 0:
        raise InputError(f"--workspace {options.workspace_gib} GiB is not positive", fix="give a size in GiB, e.g. 4")
    if options.opt_level is not None and not 0 <= options.opt_level <= 5:
        raise InputError(f"--opt-level {options.opt_level} is outside 0..5", fix="use 0 (fastest build) to 5")
    require_graph_file(onnx_path)
    check_writable(engine_path, "engine")
    if options.timing_cache is not None:
        check_writable(options.timing_cache, "timing cache")

    graph = read_graph(onnx_path)
    if graph.info.precision == "fp16" and options.precision == "fp32":
        raise InputError(
            f"{onnx_path} is the FP16 graph; an fp32 engine needs the FP32 graph",
            fix="build from the FP32 export, or use --precision fp16",
        )
    profile = _resolve_profile(graph, options.batch)
    count = _resolve_profile_count(graph, options.profiles)
    return BuildPlan(onnx_path, engine_path, graph, profile, profile_shapes(graph, profile), options, count)


def choose_typing(tensorrt_version: str, has_fp16_flag: bool, precision: str, plan: BuildPlan) -> str:
    """How precision is set for this TensorRT: strongly typed, the FP16 flag, or plain FP32."""
    if plan.graph.info.precision == "fp16":
        return TYPING_STRONG
    if precision == "fp32":
        return TYPING_FP32
    if has_fp16_flag and version_parts(tensorrt_version)[:2] <= LAST_FP16_FLAG_VERSION:
        return TYPING_FP16_FLAG
    raise InputError(
        f"TensorRT {tensorrt_version} builds --precision fp16 from the FP16 graph (metadata precision fp16): its "
        f"FP16 flag path is deprecated or gone; {plan.onnx_path} is an FP32 graph",
        fix=f"export it with maefuse-export --onnx OUT.onnx --precision fp16 (same --config/--io as "
        f"{plan.onnx_path.name}) and build from that, or use --precision fp32",
    )


def build_engine(plan: BuildPlan, *, device: int = 0, stream: TextIO | None = None) -> BuildResult:
    """Build, inspect and write the engine, its layer information and its sidecar (needs TensorRT and a GPU)."""
    stream = stream if stream is not None else sys.stderr
    trt, cudart, gpu = availability.require(device)
    options = plan.options
    typing_mode = choose_typing(trt.__version__, hasattr(trt.BuilderFlag, "FP16"), options.precision, plan)
    if options.hardware_compat and gpu.compute_capability < AMPERE:
        raise InputError(
            f"--hardware-compat needs an Ampere or newer GPU to build on; {gpu.name} is compute capability "
            f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
            fix="build without --hardware-compat, or on an Ampere or newer GPU",
        )
    checked(cudart, cudart.cudaSetDevice(device), f"selecting CUDA device {device}")
    notes: list[str] = []
    try:
        plan.engine_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create {plan.engine_path.parent}: {exc.strerror or exc}", fix="choose a writable output folder"
        ) from exc

    logger = availability.shared_logger(trt)
    build_log = BuildLog(trt)
    with open(plan.log_path, "w", encoding="utf-8") as log_file, logger.router.attached(build_log.sink(log_file)):
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt, typing_mode))
        parser = trt.OnnxParser(network, logger)
        # From the path, not from bytes: the parser then finds external weight data beside the graph.
        if not parser.parse_from_file(str(plan.onnx_path)):
            errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(
                f"TensorRT's ONNX parser rejected {plan.onnx_path}: {errors or 'no detail'}",
                fix=f"check it with maefuse-export --check-trt {plan.onnx_path}; the log is {plan.log_path}",
            )
        onnx_sha256 = file_sha256(plan.onnx_path)
        external = {name: file_sha256(plan.onnx_path.parent / name) for name in plan.graph.external_files}

        config = builder.create_builder_config()
        if options.workspace_gib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
        if options.opt_level is not None:
            config.builder_optimization_level = options.opt_level
        if typing_mode == TYPING_FP16_FLAG:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            kept = _keep_fp32(trt, network)
            notes.append(f"FP16 builder flag; {kept} Softmax/Reduce layers constrained to FP32")
        elif typing_mode == TYPING_FP32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # "fp32" means FP32 products, not TF32
        if options.hardware_compat:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if options.version_compat:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        # Detailed verbosity puts layer types and tactics into the inspector output (the attention report).
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        add_profiles(builder, config, plan)
        _attach_timing_cache(config, options.timing_cache, notes)

        line = ProgressLine(stream, f"building {plan.engine_path.name}")
        monitor = None
        if hasattr(trt, "IProgressMonitor") and hasattr(config, "progress_monitor"):
            monitor = _make_monitor(trt, line)
            config.progress_monitor = monitor
        started = time.monotonic()
        with contextlib.nullcontext() if monitor is not None else Spinner(line):
            serialized = builder.build_serialized_network(network, config)
        build_seconds = time.monotonic() - started
        if serialized is None:
            line.close("build failed")
            detail = "; ".join(build_log.errors[-3:]) or "no error reported"
            raise EngineError(
                f"TensorRT could not build an engine from {plan.onnx_path}: {detail}",
                fix=f"read {plan.log_path}; a larger --workspace or a lower --opt-level can help",
            )
        line.close(f"built {plan.engine_path.name} with {plan.profiles_text}")

        if options.timing_cache is not None:
            save_timing_cache(config, options.timing_cache)
        info_json = _layer_information(trt, logger, serialized, options.version_compat)

    report = attention_report(info_json)
    sidecar = engine_sidecar(
        plan,
        availability.runtime_facts(trt, gpu),
        typing=typing_mode,
        onnx_sha256=onnx_sha256,
        external_data_sha256=external,
        build_seconds=build_seconds,
        attention_fused=report.status,
    )
    with atomic_path(plan.layers_path) as tmp:
        tmp.write_text(_pretty(info_json), encoding="utf-8")
    # A stale sidecar must never describe the new engine: drop it, replace the engine, then write the new one.
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(plan.engine_path).unlink()
    with atomic_path(plan.engine_path) as tmp, open(tmp, "wb") as handle:
        handle.write(memoryview(serialized))
    written = write_sidecar(plan.engine_path, sidecar)
    return BuildResult(
        plan.engine_path,
        written,
        plan.layers_path,
        plan.log_path,
        sidecar,
        report,
        plan.engine_path.stat().st_size,
        notes,
    )


def engine_sidecar(
    plan: BuildPlan,
    built_on: RuntimeFacts,
    *,
    typing: str,
    onnx_sha256: str,
    external_data_sha256: dict[str, str],
    build_seconds: float,
    attention_fused: str,
) -> Sidecar:
    """The sidecar of the engine built from ``plan`` on ``built_on``: every profile the plan adds (the backend sizes
    its pool from the engine's profile count), the shapes, and how the engine was built."""
    options = plan.options
    return Sidecar(
        tensorrt_version=built_on.tensorrt_version,
        gpu_name=built_on.gpu_name,
        compute_capability=built_on.compute_capability,
        onnx_path=str(plan.onnx_path),
        onnx_sha256=onnx_sha256,
        external_data_sha256=external_data_sha256,
        profiles=plan.profiles,
        input_shapes={name: [list(s) for s in shapes] for name, shapes in plan.shapes.items()},
        precision=options.precision,
        typing=typing,
        io=plan.graph.info.io,
        graph_metadata=plan.graph.info.to_metadata(),
        build_time=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(build_seconds, 3),
        hardware_compat=options.hardware_compat,
        version_compat=options.version_compat,
        attention_fused=attention_fused,
        toolkit_version=__version__,
    )


def _resolve_profile(graph: OnnxGraph, batch: str | BatchProfile | None) -> BatchProfile:
    requested = parse_batch_profile(batch) if isinstance(batch, str) else batch
    static = graph.static_batch
    if static is None:
        return requested or _declared_range(graph) or DEFAULT_DYNAMIC_BATCH
    if requested is not None and (requested.min, requested.max) != (static, static):
        raise InputError(
            f"{graph.path} has a fixed batch of {static}, so --batch-range {requested} cannot be built",
            fix=f"use --batch-range {static}, or export with maefuse-export --batch-range {requested}",
        )
    return BatchProfile(static, static, static)


def _resolve_profile_count(graph: OnnxGraph, requested: int | None) -> int:
    """How many optimization profiles to build: TensorRT lets each execution context of a dynamic-shape engine in
    concurrent use run only on a profile of its own, so the backend's pool holds at most this many contexts."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise InputError(f"--profiles {requested!r} is not a whole number of at least 1", fix="use e.g. --profiles 2")
    static = graph.static_batch
    if static is not None:
        # Static shapes: every context shares the one profile, so more would only lengthen the build.
        if requested is not None and requested > 1:
            raise InputError(
                f"{graph.path} has a fixed batch of {static}, so its engine's contexts share one optimization "
                f"profile and --profiles {requested} cannot be built",
                fix="leave out --profiles, or export with maefuse-export --batch-range MIN:OPT:MAX for a dynamic batch",
            )
        return 1
    return DEFAULT_POOL_SIZE if requested is None else requested


def _declared_range(graph: OnnxGraph) -> BatchProfile | None:
    """The MIN:OPT:MAX the exporter recorded for a dynamic batch (``maefuse-export --dynamic-batch``), if any."""
    return None if graph.info.batch.is_static else graph.info.batch


def _network_flags(trt: ModuleType, typing_mode: str) -> int:
    # TensorRT 11 is always strongly typed (the flag is deprecated and ignored); 10.x needs the flag.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if typing_mode == TYPING_STRONG and flag is not None and version_parts(trt.__version__)[0] < 11:
        return 1 << int(flag)
    return 0


def _keep_fp32(trt: ModuleType, network: tensorrt.INetworkDefinition) -> int:
    kinds = {getattr(trt.LayerType, name) for name in _FP32_LAYER_TYPES if hasattr(trt.LayerType, name)}
    kept = 0
    floats = {trt.float32, trt.float16}
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type not in kinds:
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in floats or getattr(o, "is_shape_tensor", False) for o in outputs):
            continue  # shape or integer reductions: a float constraint on them is an error in TensorRT's log
        layer.precision = trt.float32
        for output in range(layer.num_outputs):
            layer.set_output_type(output, trt.float32)
        kept += 1
    return kept


def save_timing_cache(config: tensorrt.IBuilderConfig, path: Path) -> None:
    """Write the cache the build used and filled: ``config.get_timing_cache()``, not the object passed in.

    A file written meanwhile (another build sharing the cache) is merged in with ``combine(ignore_mismatch=True)``,
    which keeps what fits this TensorRT and GPU and drops the rest instead of failing.
    """
    cache = config.get_timing_cache()
    previous = path.read_bytes() if path.is_file() else b""
    if previous:
        try:
            older = config.create_timing_cache(previous)
        except (RuntimeError, TypeError, ValueError):
            older = None  # unreadable: this build's cache replaces it
        if older is not None:
            cache.combine(older, ignore_mismatch=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(memoryview(cache.serialize()))


def _attach_timing_cache(config: tensorrt.IBuilderConfig, path: Path | None, notes: list[str]) -> None:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except (RuntimeError, TypeError, ValueError):
            cache = None
        if cache is not None and config.set_timing_cache(cache, False):
            notes.append(f"timing cache {path} loaded")
            return
        notes.append(f"timing cache {path} was written by another TensorRT or GPU; started an empty one")
    elif path is not None:
        notes.append(f"timing cache {path} did not exist; it is created now")
    config.set_timing_cache(config.create_timing_cache(b""), False)


def _layer_information(trt: ModuleType, logger: Any, serialized: Any, version_compat: bool) -> str:
    runtime = trt.Runtime(logger)
    if version_compat:
        # Version-compatible plans embed a lean runtime (host code); we built this one ourselves.
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise EngineError("TensorRT could not load the engine it just built", fix="read the build log")
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


class BuildLog:
    """One build's sink on the shared TensorRT logger: INFO and above to the build log, errors kept for messages."""

    def __init__(self, trt: ModuleType) -> None:
        self.info_level = int(trt.ILogger.Severity.INFO)
        self.error_levels = {int(trt.ILogger.Severity.ERROR), int(trt.ILogger.Severity.INTERNAL_ERROR)}
        self.errors: list[str] = []
        self._lock = threading.Lock()  # the builder logs from several threads

    def sink(self, log_file: TextIO) -> Callable[[int, str, str], None]:
        def write(level: int, name: str, message: str) -> None:
            # TensorRT objects may still log from their destructors after the build log is closed.
            if level > self.info_level or log_file.closed:
                return
            with self._lock:
                log_file.write(f"[{name}] {message}\n")
                if level in self.error_levels:
                    self.errors.append(" ".join(message.split()))

        return write


def add_profiles(builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, plan: BuildPlan) -> None:
    """``plan.profile_count`` identical batch profiles on ``config``, in order: the backend's pool puts context N on
    profile N, since TensorRT lets each context of a dynamic-shape engine in concurrent use run only on its own."""
    for index in range(plan.profile_count):
        add_profile(builder, config, plan, index=index)


def add_profile(
    builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, plan: BuildPlan, *, index: int = 0
) -> None:
    """The batch profile of ``plan`` on ``config`` as profile ``index``; TensorRT's refusals become one-line errors
    with the fix, naming the profile."""
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.shapes.items():
        try:
            profile.set_shape(name, lo, opt, hi)  # type: ignore[arg-type]  # the bindings take tuples as Dims
        except (RuntimeError, TypeError, ValueError) as exc:  # the bindings raise for shapes the input rejects
            raise EngineError(
                f"TensorRT refused the shapes {lo} / {opt} / {hi} for input {name!r} of {plan.onnx_path} in "
                f"optimization profile {index} ({' '.join(str(exc).split()) or type(exc).__name__})",
                fix="re-export the graph with maefuse-export --onnx, or pick another --batch",
            ) from exc
    if config.add_optimization_profile(profile) < 0:
        raise EngineError(
            f"TensorRT rejected optimization profile {index} (batch {plan.profile}) for {plan.onnx_path} "
            "(add_optimization_profile returned -1: the shapes do not fit the network's inputs)",
            fix=f"pick a --batch range the graph accepts (its batch axis: {plan.graph.static_batch or 'dynamic'})",
        )


def _make_monitor(trt: ModuleType, line: ProgressLine) -> Any:
    class BuildMonitor(trt.IProgressMonitor):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            line.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            line.step(phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            line.phase_finish(phase_name)

    return BuildMonitor()


def _parser_error(error: Any) -> str:
    try:
        return f"{error.desc()} (node {error.node()})"
    except AttributeError:
        return str(error)


def _pretty(info_json: str) -> str:
    try:
        return json.dumps(json.loads(info_json), indent=1) + "\n"
    except (TypeError, ValueError):
        return str(info_json)
