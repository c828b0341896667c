"""Export a MaeFuse model to a verified ONNX graph: the orchestrator of the steps.

spec (spec.py: what to build) -> fold proof and trace (trace.py) -> graph checks -> save to a staging folder ->
verification (verify.py, returns its findings) -> commit (rename into place). Graph contract:
docs/architecture.md §3; deployment facts behind the choices: docs/architecture.md §6.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import InputError
from ..model.maefuse import MaeFuse
from ..sample_pairs import as_arrays, load_pairs, network_inputs
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


def _save(proto: onnx.ModelProto, path: Path) -> bool:
    """Write ``proto``; graphs over the protobuf limit keep their weights in ``<name>.data`` beside it (True)."""
    external = proto.ByteSize() > PROTOBUF_LIMIT
    if external:
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
    else:
        onnx.save(proto, str(path))
    return external


def _staging_folder(out_path: Path) -> Path:
    """A fresh hidden folder beside ``out_path``: files are written there and renamed into place at the end."""
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    except OSError as exc:
        raise InputError(f"cannot write {out_path}: {exc.strerror or exc}", fix="choose a writable folder") from exc


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
    workdir = _staging_folder(out_path)
    try:
        staged = workdir / out_path.name
        report.external_data = _save(proto, staged)
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
        for produced in workdir.iterdir():  # commit: every check passed
            os.replace(produced, out_path.parent / produced.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    report.size_bytes = out_path.stat().st_size + sum(
        p.stat().st_size for p in [out_path.parent / (out_path.name + ".data")] if p.exists())
    return report
