"""``ENGINE.json``: what an engine was built from and for, and the decision whether it may run here.

A TensorRT plan only runs on the TensorRT version and GPU architecture that built it (unless it was built version-
or hardware-compatible), and only means something for the ONNX it came from. The sidecar records those facts at
build time; :func:`check_compatibility` compares them with this machine before the plan is deserialised, so the
user gets one line naming both sides instead of a TensorRT deserialisation failure.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..contract import BatchProfile, GraphInfo, parse_json
from ..errors import InputError
from ..hashing import file_sha256
from .errors import EngineCompatibilityError

SIDECAR_FORMAT = 1
# Hardware-compatible plans (HardwareCompatibilityLevel.AMPERE_PLUS) run on compute capability 8.0 and newer.
AMPERE = (8, 0)


@dataclass(frozen=True)
class RuntimeFacts:
    """The machine an engine is about to run on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class Sidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    onnx_path: str  # as given at build time; used to print the rebuild command
    onnx_sha256: str
    profiles: tuple[BatchProfile, ...]
    input_shapes: dict[str, list[list[int]]]  # per input: [min, opt, max] shapes of the first profile
    precision: str  # fp16 | fp32: what the user asked the builder for
    io: str  # float | uint8
    graph_metadata: dict[str, str]  # GraphInfo.to_metadata() of the ONNX
    build_time: str  # ISO 8601, UTC
    build_seconds: float
    hardware_compat: bool
    version_compat: bool
    external_data_sha256: dict[str, str] = field(default_factory=dict)  # file name beside the ONNX -> SHA-256
    typing: str = ""  # how precision was set: strongly-typed | fp16-flag | fp32
    attention_fused: str = "unknown"  # see layers.attention_report
    toolkit_version: str = ""
    format: int = SIDECAR_FORMAT

    @property
    def max_batch(self) -> int:
        return max(p.max for p in self.profiles)

    @property
    def min_batch(self) -> int:
        return min(p.min for p in self.profiles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "onnx_path": self.onnx_path,
            "onnx_sha256": self.onnx_sha256,
            "external_data_sha256": dict(self.external_data_sha256),
            "profiles": [p.to_dict() for p in self.profiles],
            "input_shapes": self.input_shapes,
            "precision": self.precision,
            "typing": self.typing,
            "io": self.io,
            "graph_metadata": dict(self.graph_metadata),
            "build_time": self.build_time,
            "build_seconds": self.build_seconds,
            "hardware_compat": self.hardware_compat,
            "version_compat": self.version_compat,
            "attention_fused": self.attention_fused,
            "toolkit_version": self.toolkit_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        cc = data["compute_capability"]
        return cls(
            format=int(data["format"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=(int(cc[0]), int(cc[1])),
            onnx_path=str(data["onnx_path"]),
            onnx_sha256=str(data["onnx_sha256"]),
            external_data_sha256={str(k): str(v) for k, v in data.get("external_data_sha256", {}).items()},
            profiles=tuple(BatchProfile.from_dict(p) for p in data["profiles"]),
            input_shapes={str(k): [list(map(int, s)) for s in v] for k, v in data["input_shapes"].items()},
            precision=str(data["precision"]),
            typing=str(data.get("typing", "")),
            io=str(data["io"]),
            graph_metadata={str(k): str(v) for k, v in data["graph_metadata"].items()},
            build_time=str(data["build_time"]),
            build_seconds=float(data["build_seconds"]),
            hardware_compat=bool(data["hardware_compat"]),
            version_compat=bool(data["version_compat"]),
            attention_fused=str(data.get("attention_fused", "unknown")),
            toolkit_version=str(data.get("toolkit_version", "")),
        )


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    return Path(f"{os.fspath(engine_path)}.json")


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: Sidecar) -> Path:
    """Write the sidecar beside ``engine_path`` atomically; return its path."""
    target = sidecar_path(engine_path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def read_sidecar(engine_path: str | os.PathLike[str]) -> Sidecar:
    """Read the sidecar of ``engine_path``; an engine without a readable sidecar is refused."""
    path = sidecar_path(engine_path)
    rebuild = f"rebuild the engine with maefuse-build-engine MODEL.onnx -o {os.fspath(engine_path)}"
    if not Path(engine_path).is_file():
        raise InputError(f"engine {os.fspath(engine_path)} does not exist", fix=rebuild)
    if not path.is_file():
        raise InputError(
            f"engine {os.fspath(engine_path)} has no sidecar {path}, so nothing says which GPU and TensorRT it "
            "was built for",
            fix=f"keep the .json written by maefuse-build-engine beside the engine, or {rebuild}",
        )
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"cannot read engine sidecar {path}: {exc}", fix=rebuild) from exc
    if not isinstance(data, dict):
        raise InputError(f"engine sidecar {path} is not a JSON object", fix=rebuild)
    if isinstance(data.get("format"), int) and data["format"] > SIDECAR_FORMAT:
        raise InputError(
            f"engine sidecar {path} has format {data['format']}, newer than this toolkit reads ({SIDECAR_FORMAT})",
            fix="upgrade maefuse-deploy",
        )
    try:
        return Sidecar.from_dict(data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise InputError(f"engine sidecar {path} is incomplete or malformed ({exc!r})", fix=rebuild) from exc


def graph_info_of(sidecar: Sidecar, engine_path: str | os.PathLike[str]) -> GraphInfo:
    """The :class:`GraphInfo` of the graph ``engine_path`` was built from, as its sidecar recorded it: the one
    place an engine's model size, io mode and config are read (the backend, the benchmark, the Triton repository).
    A sidecar whose copy of the metadata is unusable is refused naming the sidecar file."""
    return GraphInfo.from_metadata(sidecar.graph_metadata, source=str(sidecar_path(engine_path)))


def version_parts(version: str) -> tuple[int, int, int, int]:
    """``"10.3.0.26"`` -> (10, 3, 0, 26): major, minor, patch, build; missing parts count as 0 (``"11.1"``)."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:4]]
    numbers += [0] * (4 - len(numbers))
    return numbers[0], numbers[1], numbers[2], numbers[3]


def check_compatibility(
    sidecar: Sidecar,
    runtime: RuntimeFacts,
    onnx_path: str | os.PathLike[str] | None = None,
    allow_incompatible: bool = False,
    *,
    engine_path: str | os.PathLike[str] = "ENGINE",
) -> list[str]:
    """Decide whether the engine may run on ``runtime``; return notes for the user, raise if it may not.

    - other TensorRT version (major.minor.patch.build, as TensorRT's own check): refused, unless the engine was
      built version-compatible, the override is asked for, and this TensorRT is not older than the builder
      (TensorRT never loads plans from a newer version);
    - other GPU architecture (compute capability): refused, unless the engine was built hardware-compatible
      (Ampere and newer), this GPU is compute capability 8.0 or newer, and the override is asked for;
    - same architecture, other GPU model: runs, with a note that the tactics were timed on the other model;
    - ``onnx_path`` given and its SHA-256 (or that of its external data) differs from the one built from:
      refused, naming both hashes; no override, since the engine would not compute the graph the user holds.
    """
    engine = os.fspath(engine_path)
    rebuild = f"rebuild with maefuse-build-engine {sidecar.onnx_path} -o {engine} on this machine"
    notes: list[str] = []
    problems: list[str] = []

    # All four parts, build number included: TensorRT's own plan check refuses a plan from another build.
    built, here = version_parts(sidecar.tensorrt_version), version_parts(runtime.tensorrt_version)
    if built != here:
        what = (
            f"engine {engine} was built with TensorRT {sidecar.tensorrt_version} but this machine has TensorRT "
            f"{runtime.tensorrt_version}"
        )
        if not sidecar.version_compat:
            problems.append(f"{what}, and it was not built with --version-compat")
        elif here < built:
            problems.append(f"{what}, which is older; TensorRT cannot load plans from a newer version")
        elif not allow_incompatible:
            problems.append(f"{what}; it was built with --version-compat, so allow_incompatible can override this")
        else:
            notes.append(f"{what}; running it as a version-compatible engine, as asked")

    cc_built, cc_here = sidecar.compute_capability, runtime.compute_capability
    arch = (
        f"engine {engine} was built for {sidecar.gpu_name} (compute capability {_cc(cc_built)}) but this GPU is "
        f"{runtime.gpu_name} (compute capability {_cc(cc_here)})"
    )
    if cc_built != cc_here:
        if not sidecar.hardware_compat:
            problems.append(f"{arch}, and it was not built with --hardware-compat")
        elif cc_here < AMPERE:
            problems.append(f"{arch}; hardware-compatible engines need compute capability 8.0 or newer")
        elif not allow_incompatible:
            problems.append(f"{arch}; it was built with --hardware-compat, so allow_incompatible can override this")
        else:
            notes.append(f"{arch}; running it as a hardware-compatible (Ampere+) engine, as asked")
    elif sidecar.gpu_name != runtime.gpu_name:
        notes.append(
            f"{arch}: same architecture, so it runs, but its tactics were timed on the other GPU; "
            f"{rebuild} for the best speed"
        )

    if onnx_path is not None:
        problems.extend(_onnx_changes(sidecar, Path(onnx_path), engine))

    if problems:
        raise EngineCompatibilityError("; ".join(problems), fix=rebuild)
    return notes


def _onnx_changes(sidecar: Sidecar, onnx_path: Path, engine: str) -> list[str]:
    if not onnx_path.is_file():
        return [f"ONNX file {onnx_path} (to check engine {engine} against) does not exist"]
    now = file_sha256(onnx_path)
    if now != sidecar.onnx_sha256:
        return [
            f"{onnx_path} has changed since engine {engine} was built from it "
            f"(SHA-256 then {sidecar.onnx_sha256}, now {now})"
        ]
    changed = []
    for name, then in sorted(sidecar.external_data_sha256.items()):
        data_path = onnx_path.parent / name
        now = file_sha256(data_path) if data_path.is_file() else "missing"
        if now != then:
            changed.append(
                f"external data {data_path} of {onnx_path} has changed since engine {engine} was built "
                f"(SHA-256 then {then}, now {now})"
            )
    return changed


def _cc(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"
