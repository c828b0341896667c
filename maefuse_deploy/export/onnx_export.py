"""Export a MaeFuse model to a verified ONNX graph: the orchestrator of the steps.

spec (spec.py: what to build) -> fold proof and trace (trace.py) -> graph checks -> save under a temporary name
beside the output (atomic.py's ``.maefuse-tmp-<pid>-<random>-<name>``) -> verification (verify.py, returns its
findings) -> commit (rename into place). Graph contract: docs/architecture.md §3; deployment facts behind the
choices: docs/architecture.md §6.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..atomic import TEMP_PREFIX, atomic_path, move_into_place, remove_leftovers
from ..errors import InputError
from ..model.maefuse import MaeFuse
from ..sample_pairs import as_arrays, load_pairs, network_inputs
from .request import external_data_path
from .spec import ExportSpec, validate
from .trace import activation_peak, graph_checks, graph_info, op_counts, prove_folding, trace
from .verify import verify_graph

PROTOBUF_LIMIT = 2**31 - 2**24  # below 2 GiB with room for the graph itself


@dataclass
class ExportReport:
    path: Path
    seconds: float = 0.0
    size_bytes: int = 0
    external_data: bool = False
    op_counts: dict[str, int] = field(default_factory=dict)
    fold_max_error: float | None = None
    max_activation: tuple[float, str] | None = None
    checks: list[str] = field(default_factory=list)
    verification: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)


def _save(proto: onnx.ModelProto, path: Path, external: bool) -> None:
    """Write ``proto``; with ``external``, its weights go to ``<name>.data`` beside it (as the final name says)."""
    if external:
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=external_data_path(path).name)
    else:
        onnx.save(proto, str(path))


@contextlib.contextmanager
def _staged(out_path: Path, external: bool) -> Iterator[Path]:
    """A path to write the graph to; renamed onto ``out_path`` only if the block succeeds.

    A graph without external data is one file (atomic_path). A graph with external data names its data file by the
    final name (``out.onnx.data``), and the checker and onnxruntime look for it beside the graph: both are written
    under their final names into a temporary folder beside the output (same naming scheme) and moved out together.
    """
    if not external:
        with atomic_path(out_path) as staged:
            yield staged
        return
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f"-{out_path.name}",
                                       dir=out_path.parent))
    except OSError as exc:
        raise InputError(f"cannot write {out_path}: {exc.strerror or exc}", fix="choose a writable folder") from exc
    try:
        yield folder / out_path.name
        data = external_data_path(out_path)
        move_into_place(folder / data.name, data)  # the data first: the graph never points at a missing file
        move_into_place(folder / out_path.name, out_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def export_onnx(
    model: MaeFuse,
    out_path: str | os.PathLike[str],
    spec: ExportSpec,
    *,
    checkpoint_sha256: str = "",
    verify: bool = True,
    verify_pairs: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> ExportReport:
    """Trace ``model`` per ``spec``, check it, verify it with onnxruntime and write it atomically.

    ``verify_pairs``: real (IR, VIS) pairs in OpenCV layout for the verification and the FP16 activation check
    (default: the shipped samples). Nothing is left at ``out_path`` (or its external-data file) unless every check
    and verification passed.
    """
    validate(model, spec)
    out_path = Path(out_path)
    report = ExportReport(out_path)
    start = time.perf_counter()
    if model.config.attention == "official":
        report.fold_max_error = prove_folding(model, spec)
    proto = trace(model, spec, graph_info(model, spec, checkpoint_sha256))
    report.checks = graph_checks(proto, spec)
    report.op_counts = op_counts(proto)
    pairs = verify_pairs or as_arrays(load_pairs())
    remove_leftovers(out_path.parent)  # what a killed export left there
    report.external_data = proto.ByteSize() > PROTOBUF_LIMIT
    data = external_data_path(out_path)
    with _staged(out_path, report.external_data) as staged:
        _save(proto, staged, report.external_data)
        onnx.checker.check_model(str(staged), full_check=True)
        report.checks.append("onnx.checker full check passed")
        if spec.precision == "fp16":
            report.max_activation = activation_peak(model, *network_inputs(pairs, spec.model_size,
                                                                           model.config.patch_size))
        if verify:
            found = verify_graph(staged, model, spec, pairs)
            report.verification, report.not_verified = found.compared, found.not_verified
        else:
            report.not_verified.append("verification skipped (--no-verify)")
        replaced_graph = out_path.exists()
    if replaced_graph and not report.external_data:
        # The replaced graph's weights: the new graph holds its own, so nothing refers to them any more.
        with contextlib.suppress(FileNotFoundError):
            data.unlink()
    report.seconds = time.perf_counter() - start
    report.size_bytes = out_path.stat().st_size + (data.stat().st_size if report.external_data else 0)
    return report
