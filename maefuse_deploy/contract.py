"""Names shared by the exporter and the graph runtimes (onnxruntime, TensorRT).

A graph's inputs are ``ir`` and ``vis`` and its output is ``fused`` (layouts: runtime/backend.py); its
``metadata_props`` carry what a runtime needs to use it without extra flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

INPUT_IR = "ir"
INPUT_VIS = "vis"
OUTPUT_FUSED = "fused"

META_PREFIX = "maefuse."


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
    batch: str = "1"  # static "N", or "MIN:OPT:MAX" for a dynamic batch axis

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
            "batch": self.batch,
        }
        return {META_PREFIX + key: value for key, value in values.items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "graph") -> GraphInfo:
        from .errors import InputError

        try:
            get = {key[len(META_PREFIX):]: value for key, value in meta.items() if key.startswith(META_PREFIX)}
            return cls(
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
                batch=get.get("batch", "1"),
            )
        except (KeyError, ValueError) as exc:
            raise InputError(
                f"{source} has no maefuse metadata ({exc})", fix="export it with maefuse-export --onnx"
            ) from exc
