"""onnxruntime backend: runs a graph exported by ``maefuse-export --onnx`` (layouts: backends/base.py)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import cuda_index
from ..contract import (
    INPUT_IR,
    INPUT_VIS,
    OUTPUT_FUSED,
    BatchProfile,
    GraphInfo,
    check_graph_inputs,
    require_graph_file,
)
from ..errors import InputError, UnavailableError
from .base import BackendBase

OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend(BackendBase):
    """An onnxruntime session over an exported graph; the graph's metadata says its size, io mode and batch.

    ``device="cuda[:N]"`` asks for the CUDA execution provider; onnxruntime silently falls back to CPU when it
    cannot load, so the providers actually in use are read back and a fallback is an error unless
    ``allow_fallback``. ``io_binding`` binds outputs on the device to skip one copy on GPU providers.
    """

    name = "onnxruntime"
    native = "numpy"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "cpu",
        *,
        threads: int | None = None,
        optimization_level: str = "all",
        allow_fallback: bool = False,
        io_binding: bool = False,
    ) -> None:
        import onnxruntime as ort

        device_id = cuda_index(device)  # a bad device string fails before the graph is read
        path = require_graph_file(path)
        if optimization_level not in OPTIMIZATION_LEVELS:
            raise InputError(f"unknown optimisation level {optimization_level!r}",
                             fix=f"use one of {', '.join(OPTIMIZATION_LEVELS)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization_level])
        if threads:
            options.intra_op_num_threads = threads
        wanted: list[Any] = ["CPUExecutionProvider"]
        if device_id is not None:
            wanted = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        try:
            with warnings.catch_warnings():
                # onnxruntime warns and carries on when a provider is missing; the check below reports it instead.
                warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
                self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"onnxruntime cannot load {path}: {first}", fix="re-export the graph") from exc
        self.providers = self.session.get_providers()
        if device_id is not None and "CUDAExecutionProvider" not in self.providers and not allow_fallback:
            raise UnavailableError(
                f"onnxruntime fell back to {', '.join(self.providers)} for {path}: the CUDA provider did not load",
                fix="install onnxruntime-gpu (pip install 'maefuse-deploy[gpu]') with a matching CUDA/cuDNN, or "
                "pass --device cpu",
            )
        self.io_binding = io_binding and "CUDAExecutionProvider" in self.providers
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = GraphInfo.from_metadata(meta, source=str(path))
        self.io = "uint8" if self.info.io == "uint8" else "float"
        self.patch_size = int(self.info.config["patch_size"])
        if self.io == "uint8":
            self.input_size = (self.info.camera_height, self.info.camera_width)
        else:
            self.input_size = (self.info.height, self.info.width)
        self._check_inputs(path)
        self.model_size = (self.info.height, self.info.width)
        batch_dim = self.session.get_inputs()[0].shape[0]
        # A static-batch graph takes exactly its batch (the base pads); a dynamic one the range it was exported for.
        self.profile = BatchProfile(batch_dim, batch_dim, batch_dim) if isinstance(batch_dim, int) else self.info.batch
        self.description = (f"onnxruntime: {path} ({self.info.precision}, io {self.io}, "
                            f"{self.info.width}x{self.info.height}, batch {self.profile})")

    def _check_inputs(self, path: Path) -> None:
        check_graph_inputs(path, self.info, {i.name: list(i.shape[1:]) for i in self.session.get_inputs()})

    def _check(self, ir_shape: tuple, vis_shape: tuple, ir_dtype: str, vis_dtype: str) -> None:
        """A uint8 graph's frames as they come from a camera, named with the fix before the layout check: its
        processing inside the graph is 8-bit (a 16-bit IR needs the host's 16-to-8-bit stretch, which the float-io
        graph's Fuser path applies) and takes VIS as BGR."""
        if self.io == "uint8":
            what = ("the onnxruntime uint8-io graph takes 8-bit frames (IR grey, VIS BGR; its processing is inside "
                    "the graph, in 8 bits)")
            if not ir_dtype.endswith("uint8"):
                raise InputError(
                    f"{what}; got a {ir_dtype.rpartition('.')[2]} IR",
                    fix="convert the IR to 8 bits first (maefuse_deploy.processing.ir_to_grey8 stretches a 16-bit "
                    "frame), or export the float-io graph (maefuse-export --io float) for 16-bit thermal",
                )
            grey = tuple(vis_shape[1:3]) == self.input_size and (len(vis_shape) == 3 or vis_shape[3:] == (1,))
            if grey:
                raise InputError(
                    f"{what}; got a grey VIS {tuple(vis_shape)}",
                    fix="give the VIS as BGR (cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)), or export the float-io graph "
                    "(maefuse-export --io float), whose Fuser path takes a grey VIS",
                )
            if not vis_dtype.endswith("uint8"):
                raise InputError(f"{what}; got a {vis_dtype.rpartition('.')[2]} VIS",
                                 fix="convert the VIS to 8-bit BGR first (maefuse_deploy.processing.vis_to_bgr8)")
        super()._check(ir_shape, vis_shape, ir_dtype, vis_dtype)

    @classmethod
    def open(cls, source: str | os.PathLike[str] | None, *, device: str = "cpu", dtype: str | None = None,
             config: str | None = None, **options: Any) -> OnnxRuntimeBackend:
        if source is None:
            raise InputError("the onnxruntime backend needs a graph", fix="pass the .onnx path")
        return cls(source, device, **options)

    def _run_impl(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise InputError(f"the {self.name} backend is closed", fix="open a new one")
        feeds = {INPUT_IR: np.ascontiguousarray(ir), INPUT_VIS: np.ascontiguousarray(vis)}
        if self.io_binding:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(OUTPUT_FUSED, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        try:
            return self.session.run([OUTPUT_FUSED], feeds)[0]
        except Exception as exc:  # onnxruntime's own exception types: a graph that cannot run these inputs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"onnxruntime cannot run the graph: {first}", fix="re-export the graph") from exc

    def close(self) -> None:
        self.session = None
