"""The latency benchmark: every requested backend x batch measured the same way, side by side.

Each row: per-pair latency percentiles (end to end and compute only, transfers apart on a GPU), throughput, peak
host and device memory, load and first-call time, accuracy against the torch float32 reference on real pairs,
the ratio to the arithmetic floor (flops.py) and the speed-up over the release-style row (release_style.py), or
over another model's torch float32 row measured in the same run (``versus``: a smaller model against the one it
replaces).

Timed calls feed real pairs, rotating through them, so the accuracy columns come from the timed outputs
themselves: no extra passes, which matters when one pass of the released model takes 15 s on a CPU.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..backends import BackendBase as Backend
from ..backends import open_backend
from ..checks import check_finite
from ..errors import InputError, MaeFuseError, NonFiniteError, UnavailableError
from ..model.config import MaeFuseConfig
from ..model.sources import resolve_torch_model
from ..processing import PairContext, finish_pair, prepare_pair
from ..runtime.fuser import Fuser
from ..sample_pairs import Pair, load_pairs
from .accuracy import AccuracyTally, Reference, compute_reference, default_pairs_dir
from .backends import BackendFactory, Skipped, inspect_model, row_precision
from .flops import count_flops, floor_seconds, measure_int8_peak, measure_peak
from .machine import cpu_flags, describe_machine
from .memory import PeakMemory
from .settings import BenchSettings, plan_backends
from .stream import StreamResult, run_stream
from .timing import LatencySummary, NetworkCall, PipelineCall, StageTimes, summarize

if TYPE_CHECKING:
    from ..backends.torch import TorchBackend

BASELINE = "release-style"
RELEASE_TOLERANCE = 1e-4  # docs/model.md §2: the release's batch-1 output, within float32 rounding
ACCURACY_CLASS_DB = 40.0  # fused-image PSNR vs float32 above which a row counts as visually identical
CallResult = tuple[np.ndarray | None, list[np.ndarray], StageTimes]  # decoder output or None, fused images, times


@dataclass
class Row:
    """One backend at one batch size. Times are milliseconds per pair (a batch's time / its size)."""

    backend: str
    batch: int
    precision: str
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    io: str = "float"
    latency_ms: LatencySummary | None = None  # end to end
    compute_ms: LatencySummary | None = None
    h2d_ms: float | None = None  # means; GPU only
    d2h_ms: float | None = None
    pre_ms: float | None = None  # host pre/post-processing means; --io uint8 through the host path only
    post_ms: float | None = None
    throughput_pairs_s: float | None = None
    peak_host_mb: float | None = None
    host_memory_scope: str = "row"
    peak_device_mb: float | None = None
    load_s: float | None = None
    first_call_s: float | None = None
    max_abs_err: float | None = None
    psnr_db: float | None = None
    accuracy_pairs: int = 0
    floor_ms: float | None = None
    floor_ratio: float | None = None
    speedup: float | None = None
    model: str | None = None  # None: the model under test; else the --versus model this row runs
    samples_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    date: str
    command: str
    machine: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    flops: dict[str, Any] | None
    peaks: dict[str, dict[str, Any]]
    rows: list[Row]
    release_check: dict[str, Any]
    stream: list[StreamResult]
    notes: list[str]
    fastest: list[dict[str, Any]] = field(default_factory=list)  # per accuracy class: see fastest_by_class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def floor_precision(precision: str) -> str:
    """The peak a row's floor is taken at: int8-bf16 rows spend most FLOPs in int8 (the linear layers)."""
    return "int8" if precision.startswith("int8") else precision


class Peaks:
    """Peak matmul rate per precision: given by the user, else measured once on first use."""

    def __init__(self, given: dict[str, float], device: str) -> None:
        self.device = torch.device(device)
        self.known: dict[str, dict[str, Any]] = {
            precision: {"flops_per_s": value, "source": "given"} for precision, value in given.items()
        }

    def rate(self, precision: str) -> float | None:
        precision = floor_precision(precision)
        if precision not in self.known:
            if self.device.type == "cuda" and not torch.cuda.is_available():
                return None
            if precision == "int8":
                # int8 rows are OpenVINO's on the CPU: their floor is that toolchain's int8 matmul rate.
                measured = measure_int8_peak() if self.device.type == "cpu" else None
                if measured is None:
                    return None
                self.known[precision] = {"flops_per_s": measured[0], "source": measured[1]}
                return measured[0]
            dtype = getattr(torch, precision, None)
            if not isinstance(dtype, torch.dtype):  # "auto": the row's precision is chosen at run time
                return None
            value, size = measure_peak(self.device, dtype)
            self.known[precision] = {"flops_per_s": value, "source": f"measured: {size}x{size} matmul"}
        return float(self.known[precision]["flops_per_s"])


def _batches_of(count: int, batch: int) -> Iterator[list[int]]:
    """Pair indices for successive calls: rotating through the pairs so every one is seen and checked."""
    start = 0
    while True:
        yield [(start + k) % count for k in range(batch)]
        start = (start + batch) % count


class Measurement:
    """Runs one row's calls and turns their stage times and outputs into a :class:`Row`."""

    def __init__(self, settings: BenchSettings, pairs: list[Pair], model_size: tuple[int, int],
                 reference: Reference | None) -> None:
        self.settings = settings
        self.pairs = pairs
        self.model_size = model_size
        self.reference = reference
        self._prepared: list[tuple[np.ndarray, np.ndarray, PairContext]] | None = None

    def _prepared_pairs(self, patch_size: int) -> list[tuple[np.ndarray, np.ndarray, PairContext]]:
        if self._prepared is None:
            self._prepared = [prepare_pair(p.ir, p.vis, "official", self.model_size, patch_size) for p in self.pairs]
        return self._prepared

    def caller(self, backend: Backend) -> Callable[[list[int]], CallResult]:
        """A function from pair indices to (decoder output or None, fused images, stage times)."""
        network = NetworkCall(backend)
        pairs = self.pairs
        if backend.io == "uint8":
            def in_graph(indices: list[int]) -> CallResult:
                ir = np.stack([pairs[i].ir for i in indices])
                vis = np.stack([pairs[i].vis for i in indices])
                fused, times = network(ir, vis)
                return None, list(fused), times

            return in_graph
        if self.settings.io == "uint8":
            pipeline = PipelineCall(network, "official", self.model_size)

            def host_processing(indices: list[int]) -> CallResult:
                return pipeline([(pairs[i].ir, pairs[i].vis) for i in indices])

            return host_processing
        prepared = self._prepared_pairs(backend.patch_size)

        def tensors(indices: list[int]) -> CallResult:
            ir = np.stack([prepared[i][0] for i in indices])
            vis = np.stack([prepared[i][1] for i in indices])
            decoded, times = network(ir, vis)
            # Post-processing for the accuracy check happens after the clock stopped.
            fused = [finish_pair(decoded[k], prepared[i][2], "official") for k, i in enumerate(indices)]
            return decoded, fused, times

        return tensors

    def measure(self, row: Row, backend: Backend, memory: PeakMemory) -> None:
        settings = self.settings
        call = self.caller(backend)
        tally = AccuracyTally(self.reference) if self.reference is not None else None
        calls = _batches_of(len(self.pairs), row.batch)

        def once() -> StageTimes:
            indices = next(calls)
            decoded, fused, times = call(indices)
            if decoded is not None and not any(note.startswith("WARNING") for note in row.notes):
                # Measured and reported, not fatal: catching FP16 overflow is what the accuracy columns are for.
                try:
                    check_finite(decoded, f"{row.backend} batch {row.batch} network output")
                except NonFiniteError as exc:
                    row.notes.append(f"WARNING: {exc}")
            if tally is not None:
                for k, index in enumerate(indices):
                    tally.add(index, fused[k], None if decoded is None else decoded[k])
            return times

        memory.reset()
        start = time.perf_counter()
        once()
        row.first_call_s = time.perf_counter() - start
        for _ in range(settings.warmup):
            once()
        timed = [once() for _ in range(settings.iterations)]
        row.peak_host_mb = memory.host_mb()
        row.host_memory_scope = memory.host_scope
        row.peak_device_mb = memory.device_mb()

        per_pair = 1e3 / row.batch
        row.samples_ms = [t.total * per_pair for t in timed]
        row.latency_ms = summarize(row.samples_ms)
        row.compute_ms = summarize([t.compute * per_pair for t in timed])
        for stage in ("h2d", "d2h", "pre", "post"):
            values = [getattr(t, stage) for t in timed]
            if all(v is not None for v in values):
                setattr(row, f"{stage}_ms", float(np.mean(values)) * per_pair)
        row.throughput_pairs_s = row.batch / float(np.mean([t.total for t in timed]))
        if tally is not None:
            row.max_abs_err = tally.max_abs_err
            row.psnr_db = tally.psnr_db
            row.accuracy_pairs = len(tally.seen)


def _release_check(rows: list[Row], config: MaeFuseConfig | None, has_reference: bool) -> dict[str, Any]:
    baseline = next((r for r in rows if r.backend == BASELINE and r.status == "ok"), None)
    if baseline is None:
        return {"status": "not run", "tolerance": RELEASE_TOLERANCE}
    if not has_reference or baseline.max_abs_err is None:
        return {"status": "no reference", "tolerance": RELEASE_TOLERANCE}
    if config is not None and config.attention != "official":
        return {"status": "not applicable: the model uses tokens attention, the release computes official",
                "tolerance": RELEASE_TOLERANCE, "max_abs_err": baseline.max_abs_err}
    passed = baseline.max_abs_err <= RELEASE_TOLERANCE
    return {"status": "passed" if passed else "FAILED", "tolerance": RELEASE_TOLERANCE,
            "max_abs_err": baseline.max_abs_err, "pairs": baseline.accuracy_pairs}


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] = lambda _: None,
                  command: str = "") -> BenchResult:
    """Measure every backend x batch of ``settings``; see the module docstring."""
    settings.validate()
    saved_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _run(settings, log, command)
    finally:
        torch.set_num_threads(saved_threads)


def _run(settings: BenchSettings, log: Callable[[str], None], command: str) -> BenchResult:
    machine = describe_machine()  # at the start: its load average says whether the run began on a quiet machine
    mut, model = inspect_model(settings)
    config = mut.config
    if mut.graph is not None:
        model_size = (mut.graph.height, mut.graph.width)
        if settings.resolution and settings.resolution != model_size:
            raise InputError(
                f"{mut.path} is fixed at {model_size[1]}x{model_size[0]}; --resolution "
                f"{settings.resolution[1]}x{settings.resolution[0]} does not match",
                fix="drop --resolution or export a graph at that size")
    else:
        assert config is not None
        model_size = settings.resolution or config.img_size
    if config is not None and (model_size[0] % config.patch_size or model_size[1] % config.patch_size):
        raise InputError(f"--resolution {model_size[1]}x{model_size[0]} is not a multiple of the patch size "
                         f"{config.patch_size}", fix=f"use multiples of {config.patch_size}, e.g. 640x640")
    camera_size = None
    if mut.graph is not None and mut.graph.io == "uint8":
        camera_size = (mut.graph.camera_height, mut.graph.camera_width)
    pairs_dir = settings.pairs_dir or default_pairs_dir()
    pairs = load_pairs(pairs_dir, settings.pairs, camera_size)
    notes = [f"real pairs: {len(pairs)} from {pairs_dir}"]
    log(f"model: {mut.description}")

    reference = None
    if model is not None and settings.latency:  # the stream checks no outputs: no reference to pay for
        ref_device = settings.device
        if torch.device(ref_device).type == "cuda" and not torch.cuda.is_available():
            ref_device = "cpu"
        log(f"reference: torch float32 on {ref_device}, {len(pairs)} real pairs at batch 1")
        # compute_reference is annotated with TorchBackend (bench/accuracy.py) though it uses only the base API.
        torch_backend = cast("TorchBackend", open_backend("torch", model, device=ref_device))
        reference = compute_reference(torch_backend, pairs, model_size)
        notes.append(f"reference: torch float32 on {ref_device}, batch 1, official processing")
    elif model is None:
        notes.append("no torch weights for a reference: accuracy columns empty (pass --reference CHECKPOINT)")
    del model
    gc.collect()

    flops = None
    if config is not None:
        grid = (model_size[0] // config.patch_size, model_size[1] // config.patch_size)
        flops = {"deployed": count_flops(config, grid).to_dict(),
                 "release": count_flops(config, grid, "release").to_dict(),
                 "config": config.name, "grid": list(grid), "attention": config.attention}
    peaks = Peaks(settings.peak_flops, settings.device)
    measurement = Measurement(settings, pairs, model_size, reference)
    memory = PeakMemory(torch.device(settings.device) if torch.cuda.is_available() else torch.device("cpu"))
    rows: list[Row] = []
    streams: list[StreamResult] = []
    calibration_dir = settings.calibration_dir or pairs_dir
    if settings.calibration_dir is None and any("int8" in name for name, why in plan_backends(
            settings.backends, settings.device, cpu_flags()) if why is None):
        notes.append("int8 rows calibrate on the pairs they are checked on: their accuracy is optimistic "
                     "(pass --calibration FOLDER with other pairs)")
    plan = plan_backends(settings.backends, settings.device, cpu_flags())
    with tempfile.TemporaryDirectory(prefix="maefuse-bench-") as workdir:
        factory = BackendFactory(mut, settings, Path(workdir), model_size, calibration_dir)
        for name, not_run in plan:
            batches = (1,) if name == BASELINE else settings.batches
            precision = row_precision(name, mut)
            group = [Row(name, batch, precision, io=settings.io) for batch in batches]
            rows.extend(group)
            if not_run is not None:
                _mark(group, "skipped", not_run, log)
                continue
            log(f"{name}: loading")
            start = time.perf_counter()
            try:
                backend, backend_notes = factory.build(name)
            except (Skipped, UnavailableError, ImportError) as exc:
                _mark(group, "skipped", str(exc) if not isinstance(exc, ImportError) else _first_line(exc), log)
                continue
            except MaeFuseError as exc:
                _mark(group, "failed", str(exc), log)
                continue
            except Exception as exc:  # a long run must still report the other rows when one backend breaks
                _mark(group, "failed", _first_line(exc), log)
                continue
            load_s = time.perf_counter() - start
            try:
                for row in group:
                    _measure_row(row, backend, load_s, backend_notes, measurement, memory, settings, log)
                if settings.stream and any(r.status == "ok" for r in group):
                    streams.append(_stream(name, backend, settings, pairs, model_size, log))
            finally:
                backend.close()
                del backend
                gc.collect()
        if settings.versus is not None:
            rows.append(_versus_row(settings, pairs, model_size, memory, log))
    if not settings.latency:  # --stream alone: rows only explain the backends that could not stream
        rows = [row for row in rows if row.status != "ok"]
    _finish_rows(rows, flops, peaks)
    return BenchResult(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command,
        machine=machine,
        model={"source": settings.model or settings.config, "kind": mut.kind, "description": mut.description,
               "config": config.to_dict() if config else None,
               "resolution": f"{model_size[1]}x{model_size[0]}"},
        settings=_settings_dict(settings),
        flops=flops,
        peaks={precision: peaks.known[precision] for precision in
               dict.fromkeys(floor_precision(row.precision) for row in rows if row.status == "ok")
               if precision in peaks.known},
        rows=rows,
        release_check=_release_check(rows, config, reference is not None),
        stream=streams,
        notes=notes,
        fastest=fastest_by_class(rows, reference is not None),
    )


def _mark(rows: list[Row], status: str, reason: str, log: Callable[[str], None]) -> None:
    for row in rows:
        row.status, row.reason = status, reason
    log(f"{rows[0].backend}: {status}: {reason}")


def _measure_row(row: Row, backend: Backend, load_s: float, notes: list[str], measurement: Measurement,
                 memory: PeakMemory, settings: BenchSettings, log: Callable[[str], None]) -> None:
    row.load_s = load_s
    row.notes.extend(notes)
    limit = backend.max_batch
    if limit is not None and row.batch > limit:
        row.status, row.reason = "skipped", f"the graph takes at most {limit} pairs per call"
        return
    if backend.io == "uint8":
        row.io = "uint8"
        row.notes.append("processing inside the graph: timed from uint8 frames")
    if settings.latency:
        log(f"{row.backend} batch {row.batch}: 1 first call + {settings.warmup} warm-up + "
            f"{settings.iterations} timed")
        try:
            measurement.measure(row, backend, memory)
        except MaeFuseError as exc:
            row.status, row.reason = "failed", str(exc)
        except Exception as exc:  # see run_benchmark: one broken row must not lose the others
            row.status, row.reason = "failed", _first_line(exc)
        if row.status != "ok":
            log(f"{row.backend} batch {row.batch}: {row.status}: {row.reason}")


def _versus_row(settings: BenchSettings, pairs: list[Pair], model_size: tuple[int, int], memory: PeakMemory,
                log: Callable[[str], None]) -> Row:
    """The --versus model in torch float32, timed like every row (its accuracy columns stay empty: the reference
    is the model under test's)."""
    assert settings.versus is not None
    log(f"torch ({settings.versus}, --versus): loading")
    start = time.perf_counter()
    resolved = resolve_torch_model(settings.versus)
    row = Row("torch", 1, "float32", io=settings.io, model=resolved.model.config.name)
    row.notes.append(f"--versus: {resolved.description}")
    backend = open_backend("torch", resolved.model, device=settings.device)
    try:
        _measure_row(row, backend, time.perf_counter() - start, [], Measurement(settings, pairs, model_size, None),
                     memory, settings, log)
    finally:
        backend.close()
    return row


def _stream(name: str, backend: Backend, settings: BenchSettings, pairs: list[Pair], model_size: tuple[int, int],
            log: Callable[[str], None]) -> StreamResult:
    batch = 1 if name == BASELINE else max(settings.batches)
    fuser = Fuser(backend, model_size=model_size, batch_size=batch)
    log(f"{name}: stream at {settings.fps:g} fps for {settings.duration:g} s (micro-batches up to {batch})")
    return run_stream(name, fuser, [(p.ir, p.vis) for p in pairs], fps=settings.fps, duration=settings.duration,
                      queue_size=settings.queue)


def _versus_of(rows: list[Row]) -> Row | None:
    """The measured --versus row, if any: the speed-up baseline."""
    return next((r for r in rows if r.model is not None and r.status == "ok"), None)


def _finish_rows(rows: list[Row], flops: dict[str, Any] | None, peaks: Peaks) -> None:
    """The columns that compare rows: floor ratio (needs the peak rate) and speed-up over the baseline: the
    --versus row where there is one, else the release-style row."""
    versus = _versus_of(rows)
    baseline = versus or next((r for r in rows if r.backend == BASELINE and r.status == "ok"), None)
    for row in rows:
        if row.status != "ok" or row.compute_ms is None:
            continue
        if flops is not None and row.model is None:  # the FLOPs are the model under test's
            rate = peaks.rate(row.precision)
            if rate is not None:
                row.floor_ms = floor_seconds(flops["deployed"]["total"], rate) * 1e3
                row.floor_ratio = row.compute_ms["p50"] / row.floor_ms
        if baseline is not None and baseline.throughput_pairs_s and row.throughput_pairs_s:
            row.speedup = row.throughput_pairs_s / baseline.throughput_pairs_s


def fastest_by_class(rows: list[Row], has_reference: bool) -> list[dict[str, Any]]:
    """The fastest measured row (lowest p50 per pair) within each accuracy class: fused PSNR vs float32 at least
    ACCURACY_CLASS_DB, or below it; without a reference, one class of every row.
    """
    measured = [r for r in rows if r.status == "ok" and r.latency_ms is not None and r.model is None]
    versus = _versus_of(rows)
    over = f"{versus.backend} {versus.precision} {versus.model}" if versus is not None else BASELINE
    if has_reference:
        classes = [(f">= {ACCURACY_CLASS_DB:g} dB", [r for r in measured if (r.psnr_db or 0.0) >= ACCURACY_CLASS_DB]),
                   (f"< {ACCURACY_CLASS_DB:g} dB", [r for r in measured if (r.psnr_db or 0.0) < ACCURACY_CLASS_DB])]
    else:
        classes = [("accuracy unknown (no reference)", measured)]
    fastest = []
    for label, members in classes:
        if not members:
            continue
        best = min(members, key=lambda r: r.latency_ms["p50"] if r.latency_ms else math.inf)
        assert best.latency_ms is not None
        fastest.append({"class": label, "backend": best.backend, "batch": best.batch, "precision": best.precision,
                        "p50_ms": best.latency_ms["p50"], "psnr_db": best.psnr_db, "floor_ratio": best.floor_ratio,
                        "speedup": best.speedup, "speedup_over": over})
    return fastest


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    data = asdict(settings)
    data["pairs_dir"] = str(settings.pairs_dir) if settings.pairs_dir else None
    data["calibration_dir"] = str(settings.calibration_dir) if settings.calibration_dir else None
    data["resolution"] = f"{settings.resolution[1]}x{settings.resolution[0]}" if settings.resolution else None
    data["peak_flops"] = dict(settings.peak_flops)
    data["torch_threads"] = torch.get_num_threads()
    data["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return data
