"""Fuser: the one runtime API that camera pipelines embed, whatever the backend."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checks import check_finite, cuda_index
from ..errors import InputError
from ..processing import POLICIES, PairContext, Policy, finish_pair, ir_to_grey8, prepare_pair
from .backend import Backend
from .sources import default_backend_for, resolve_torch_model

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
OPENVINO_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}
Image = Any  # numpy array (OpenCV layout) or torch tensor of the same layout


def _to_numpy(image: Image) -> tuple[np.ndarray, bool]:
    if isinstance(image, np.ndarray):
        return image, False
    if type(image).__module__.startswith("torch"):
        return image.detach().cpu().numpy(), True
    raise InputError(f"expected a numpy array or torch tensor, got {type(image).__name__}")


class Fuser:
    """Fuses registered IR/VIS pairs.

    Images in and out follow OpenCV: uint8 (or uint16) HxW grey or HxWx3 BGR numpy arrays (torch tensors of the
    same layout are accepted and returned as tensors). The output has the VIS's size; it is BGR for a colour VIS
    and grey for a grey one. Pre/post-processing (``policy``) is shared by all backends; graphs exported with
    in-graph processing (``io == "uint8"``) do it on the device instead.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        policy: Policy = "official",
        model_size: tuple[int, int] | None = None,
        description: str = "",
        warnings: Sequence[str] = (),
        batch_size: int = 8,
    ) -> None:
        if policy not in POLICIES:
            raise InputError(f"unknown policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.backend = backend
        self.policy: Policy = policy
        self.model_size = model_size or backend.input_size
        if self.model_size is None and policy == "official" and backend.io == "float":
            raise InputError("the official policy needs a model size", fix="pass model_size=(H, W)")
        if policy == "native" and backend.input_size is not None and backend.io == "float":
            raise InputError(
                f"{backend.name} graph has a fixed {backend.input_size[1]}x{backend.input_size[0]} grid; the native "
                "policy needs any size",
                fix="use the official policy, or export a graph at the camera size",
            )
        self.description = description
        self.warnings = list(warnings)
        self.batch_size = min(batch_size, backend.max_batch or batch_size)

    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike[str] | None = None,
        backend: str | None = None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        policy: Policy | None = None,
        config: str | None = None,
        batch_size: int = 8,
        **options: Any,
    ) -> Fuser:
        """Build a Fuser from a checkpoint, a config name (random weights), an .onnx graph or an engine.

        ``source=None`` takes the built-in default model. ``backend`` defaults to what the file is (.onnx:
        onnxruntime, .engine/.plan: tensorrt, else torch). ``policy=None`` takes the one the weights were trained
        for (their config's ``policy``; graphs and engines have a fixed size: official). ``options`` go to the
        backend (torch: cuda_graph; onnxruntime: providers, threads, ...; openvino: threads, calibration (a folder of
        real pairs for int8); tensorrt: cuda_graph, allow_incompatible, ...). ``dtype`` is the torch dtype, or for
        openvino the precision it runs the fp32 graph at (float32, bfloat16, int8).
        """
        backend = backend or default_backend_for(source)
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)}")
        if backend == "torch":
            from .torch_backend import TorchBackend

            resolved = resolve_torch_model(source, config)
            model = resolved.model
            assert model is not None
            runner: Backend = TorchBackend(model, device=device, dtype=dtype, **options)
            return cls(
                runner,
                policy=policy or model.config.policy,  # type: ignore[arg-type]
                model_size=model.config.img_size,
                description=resolved.description,
                warnings=resolved.warnings,
                batch_size=batch_size,
            )
        if source is None:
            raise InputError(f"the {backend} backend needs a model file", fix="pass the .onnx graph or engine path")
        if backend == "onnxruntime":
            from .onnxruntime_backend import OnnxRuntimeBackend

            runner = OnnxRuntimeBackend(source, device=device, **options)
        elif backend == "openvino":
            from ..backends.openvino import OpenVinoBackend

            if dtype not in OPENVINO_PRECISIONS:
                raise InputError(f"openvino runs float32, bfloat16 or int8, not {dtype}",
                                 fix="pass --dtype float32, bfloat16 or int8")
            runner = OpenVinoBackend(source, device=device, precision=OPENVINO_PRECISIONS[dtype], **options)
        else:
            from ..engine.trt_backend import TensorRTBackend

            if not device.startswith("cuda"):
                raise InputError(f"TensorRT engines run on a CUDA device, not {device!r}", fix="pass device='cuda'")
            runner = TensorRTBackend(source, device=cuda_index(device) or 0, **options)
        return cls(runner, policy=policy or "official", description=f"{backend}: {source}", batch_size=batch_size)

    def fuse(self, ir: Image, vis: Image) -> Image:
        """Fuse one pair. See the class docstring for layouts."""
        return self.fuse_batch([(ir, vis)])[0]

    def fuse_batch(self, pairs: Sequence[tuple[Image, Image]], names: Sequence[str] | None = None) -> list[Image]:
        """Fuse many pairs, ``batch_size`` at a time; each result equals what :meth:`fuse` gives for the pair."""
        arrays, as_tensor = [], []
        for ir, vis in pairs:
            ir_array, was_tensor = _to_numpy(ir)
            arrays.append((ir_array, _to_numpy(vis)[0]))
            as_tensor.append(was_tensor)
        labels = list(names) if names is not None else [f"pair {i}" for i in range(len(arrays))]
        run = self._run_in_graph if self.backend.io == "uint8" else self._run_float
        results = run(arrays, labels)
        return [_as_tensor(r) if tensor else r for r, tensor in zip(results, as_tensor, strict=True)]

    def _run_float(self, pairs: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> list[np.ndarray]:
        model_size = self.model_size or (0, 0)
        prepared: list[tuple[np.ndarray, np.ndarray, PairContext]] = [
            prepare_pair(ir, vis, self.policy, model_size, self.backend.patch_size, name=label)
            for (ir, vis), label in zip(pairs, labels, strict=True)
        ]
        # Native-policy pairs of different sizes make different token grids: batch each grid separately.
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (_, _, context) in enumerate(prepared):
            by_shape[context.network_size].append(index)
        results: list[np.ndarray | None] = [None] * len(prepared)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                ir_batch = np.stack([prepared[i][0] for i in chunk])
                vis_batch = np.stack([prepared[i][1] for i in chunk])
                decoded = check_finite(self.backend.run(ir_batch, vis_batch), f"{self.backend.name} network output")
                for row, index in enumerate(chunk):
                    results[index] = finish_pair(decoded[row], prepared[index][2], self.policy)
        return [r for r in results if r is not None]

    def _run_in_graph(self, pairs: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> list[np.ndarray]:
        size = self.backend.input_size
        assert size is not None
        irs, viss = [], []
        for (ir, vis), label in zip(pairs, labels, strict=True):
            if ir.dtype != np.uint8 or vis.dtype != np.uint8:
                raise InputError(f"{label}: the {self.backend.name} graph takes uint8 frames (in-graph processing)")
            if ir.ndim == 3:
                ir = ir_to_grey8(ir)
            if vis.ndim != 3 or vis.shape[2] != 3:
                raise InputError(f"{label}: the in-graph path takes a 3-channel BGR VIS frame, got {vis.shape}")
            if ir.shape[:2] != size or vis.shape[:2] != size:
                raise InputError(
                    f"{label}: frames are {vis.shape[1]}x{vis.shape[0]} but the graph takes {size[1]}x{size[0]}",
                    fix="export a graph for this camera size (maefuse-export --camera-size WxH)",
                )
            irs.append(ir)
            viss.append(vis)
        out = []
        for start in range(0, len(irs), self.batch_size):
            stop = start + self.batch_size
            fused = self.backend.run(np.stack(irs[start:stop]), np.stack(viss[start:stop]))
            out.extend(list(fused))
        return out

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Fuser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_tensor(image: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(image))
