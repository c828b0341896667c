"""What to export: the graph's resolution, batch axis, precision and io mode (the first export step)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..model.maefuse import MaeFuse

OPSETS = (18, 19, 20)  # torch's dynamo exporter emits 18 and up; TensorRT 10.0 parses up to 20


@dataclass(frozen=True)
class ExportSpec:
    height: int = 640
    width: int = 640
    batch: tuple[int, int, int] = (1, 1, 1)  # (min, opt, max); min == max is a static batch
    precision: str = "fp32"  # fp32 | fp16
    io: str = "float"  # float | uint8
    camera_size: tuple[int, int] | None = None  # (H, W) frames of a uint8 graph; default: (height, width)
    opset: int = 18

    @property
    def dynamic(self) -> bool:
        return self.batch[0] != self.batch[2]

    @property
    def model_size(self) -> tuple[int, int]:
        """(H, W) of the network's input grid."""
        return self.height, self.width

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames a uint8 graph takes (the camera's), else the model size."""
        return self.camera_size or self.model_size


def validate(model: MaeFuse, spec: ExportSpec) -> None:
    """Refuse a spec the model or the exporter cannot honour, naming the fix."""
    patch = model.config.patch_size
    if spec.height % patch or spec.width % patch or spec.height <= 0 or spec.width <= 0:
        raise InputError(f"resolution {spec.width}x{spec.height} is not a multiple of the patch size {patch}",
                         fix=f"pick a size divisible by {patch}, e.g. {spec.width // patch * patch or patch}x"
                             f"{spec.height // patch * patch or patch}")
    if spec.opset not in OPSETS:
        raise InputError(f"opset {spec.opset} is not supported", fix=f"use one of {', '.join(map(str, OPSETS))}")
    if spec.precision not in ("fp32", "fp16") or spec.io not in ("float", "uint8"):
        raise InputError(f"unknown precision/io {spec.precision}/{spec.io}", fix="fp32|fp16 and float|uint8")
