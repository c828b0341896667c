"""One ``maefuse-export`` run, in the order its checks must happen: outputs and options before the model loads, the
graph's spec once the model's configuration is known.

1. :func:`check_outputs`: the one output rule (atomic.check_output) for every path the run writes -- the ``--onnx``
   graph and its external-data file, the ``--aoti`` package, the ``--triton`` repository folder.
2. :meth:`ExportRequest.read`: the preset merged, sizes and batch parsed, the ``--size-from`` frame read.
3. :meth:`ReadRequest.spec`: the :class:`ExportSpec` for a model configuration (a native-policy model's grid follows
   the camera; a native model without a size is refused, export/sizing.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import check_output, check_writable
from ..contract import check_frame_pixels, parse_batch_profile, parse_frame_size
from ..errors import InputError
from ..model.config import MaeFuseConfig
from .aoti import check_package_name
from .presets import load_preset
from .sizing import check_graph_size, frame_size, grid_for
from .spec import ExportSpec

DEFAULT_OPSET = 18


def external_data_path(graph: str | os.PathLike[str]) -> Path:
    """Where a graph over the protobuf limit keeps its weights: ``<graph>.data`` beside it."""
    return Path(f"{os.fspath(graph)}.data")


def check_outputs(
    *,
    onnx: Path | None = None,
    aoti: Path | None = None,
    triton: Path | None = None,
    triton_name: str = "maefuse",
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
) -> None:
    """Refuse, before anything loads, every output of the run that would destroy an input, replace a file without
    ``overwrite``, or cannot be written. An existing ``<graph>.data`` counts as the graph's: a new graph could
    replace it. A ``--triton`` repository that holds anything needs ``overwrite`` (the model folder is added beside
    what is there); a model folder of the same name is never replaced."""
    inputs = [source for source in inputs if source is not None]
    if onnx is not None:
        check_output(onnx, inputs=inputs, overwrite=overwrite, what="--onnx")
        if onnx.suffix.lower() != ".onnx":
            raise InputError(f"--onnx {onnx} must end in .onnx (runtimes open a graph by its suffix)",
                             fix=f"e.g. --onnx {onnx.with_suffix('.onnx').name}")
        data = external_data_path(onnx)
        if data.exists() or data.is_symlink():
            check_output(data, inputs=inputs, overwrite=overwrite, what="--onnx")
    if aoti is not None:
        check_output(aoti, inputs=inputs, overwrite=overwrite, what="--aoti")
        check_package_name(aoti)
    if triton is not None:
        _check_repository(triton, triton_name, overwrite)


def _check_repository(repository: Path, name: str, overwrite: bool) -> None:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise InputError(f"model name {name!r} cannot be a folder name", fix="e.g. --triton-name maefuse")
    if repository.exists() and not repository.is_dir():
        raise InputError(f"--triton {repository} is not a folder", fix="name a folder for the model repository")
    if not repository.exists():
        check_writable(repository, "--triton")
        return
    if (repository / name).exists():
        raise InputError(f"{repository / name} already exists",
                         fix="remove it, or pick another --triton-name (a model folder is never replaced)")
    if any(repository.iterdir()) and not overwrite:
        raise InputError(f"--triton {repository} is not empty",
                         fix=f"pass --overwrite to add the {name} model beside what is there, or choose an empty "
                         "or new folder")
    if not os.access(repository, os.W_OK | os.X_OK):
        raise InputError(f"cannot write --triton {repository}: it is not writable", fix="choose a writable folder")


@dataclass(frozen=True)
class ExportRequest:
    """The size, batch, precision and io options of one export as given; None: the preset's value, else the
    default."""

    height: int | None = None
    width: int | None = None
    batch: str | None = None  # "N" or "MIN:OPT:MAX"
    precision: str | None = None
    io: str | None = None
    camera_size: str | None = None  # "WxH"
    size_from: Path | None = None  # a sample camera frame
    opset: int = DEFAULT_OPSET
    preset: str | None = None

    def read(self) -> ReadRequest:
        """Merge the preset, parse every value and read the sample frame: the checks that need no model."""
        for value, option in ((self.height, "--height"), (self.width, "--width")):
            if value is not None and value < 1:  # 0 used to fall through to the default size unsaid
                raise InputError(f"{option} {value} is not a size in pixels",
                                 fix="give a positive multiple of the patch size, e.g. 480")
        recipe: dict[str, Any] = load_preset(self.preset) if self.preset else {}
        io = self.io or recipe.get("io", "float")
        camera: tuple[int, int] | None = None
        frames_text = self.camera_size
        if self.size_from is not None:
            camera = frame_size(self.size_from)
            if not frames_text and io == "uint8":
                frames_text = f"{camera[1]}x{camera[0]}"
        elif self.camera_size:
            camera = parse_frame_size(self.camera_size, "--camera-size").hw
        frames_text = frames_text or recipe.get("camera_size")
        batch = self.batch or str(recipe.get("batch", "1"))
        return ReadRequest(
            height=self.height, width=self.width, preset_height=recipe.get("height"),
            preset_width=recipe.get("width"), batch_text=batch, batch=parse_batch_profile(batch).as_tuple(),
            precision=self.precision or recipe.get("precision", "fp32"), io=io, camera=camera,
            camera_size=parse_frame_size(frames_text, "camera size").hw if frames_text else None,
            from_frame=self.size_from is not None,
            opset=self.opset,
        )


@dataclass(frozen=True)
class ReadRequest:
    """An :class:`ExportRequest` with its preset merged and its values parsed."""

    height: int | None  # the grid given on the command line (before the preset's and the camera's)
    width: int | None
    preset_height: int | None
    preset_width: int | None
    batch_text: str
    batch: tuple[int, int, int]
    precision: str
    io: str
    camera: tuple[int, int] | None  # (H, W) of the camera's frames: --camera-size or --size-from
    camera_size: tuple[int, int] | None  # (H, W) of a uint8 graph's frames
    from_frame: bool  # the camera size came from --size-from
    opset: int

    def spec(self, config: MaeFuseConfig) -> ExportSpec:
        """The graph for ``config``: a given grid, else the camera's (rounded to the patch size) for a native model
        or a --size-from frame, else the preset's, else the config's own size."""
        height, width = self.height, self.width
        if self.camera is not None and not (height or width) and (self.from_frame or config.policy == "native"):
            # The grid is the camera frame itself (rounded to the patch size): no resize for a native model.
            height, width = grid_for(self.camera, config.patch_size)
        given = bool(height or width or self.preset_height or self.preset_width)
        check_graph_size(config.policy, config.name, given)
        default_h, default_w = config.img_size
        height, width = height or self.preset_height or default_h, width or self.preset_width or default_w
        check_frame_pixels(width, height, "the graph's grid")
        return ExportSpec(
            height=height,
            width=width,
            batch=self.batch, precision=self.precision, io=self.io, camera_size=self.camera_size, opset=self.opset,
        )
