"""Fuser: the one runtime API that camera pipelines embed, whatever the backend."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..backends import BackendBase, is_tensor, open_backend
from ..checks import check_finite
from ..contract import DEFAULT_BATCH_SIZE, batch_slices
from ..errors import InputError
from ..processing import (
    POLICIES,
    PairContext,
    Policy,
    check_pair,
    finish_pair,
    ir_to_grey8,
    prepare_pair,
    vis_to_bgr8,
)
from .limits import check_native_pass

Image = Any  # numpy array (OpenCV layout) or torch tensor of the same layout


def _to_numpy(image: Image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if is_tensor(image):
        return image.detach().cpu().numpy()
    raise InputError(f"expected a numpy array or torch tensor, got {type(image).__name__}")


def _result_device(ir: Image, vis: Image) -> Any:
    """Where a pair's result goes: None for numpy callers, else the device of the caller's tensor (VIS first)."""
    for image in (vis, ir):
        if is_tensor(image):
            return image.device
    return None


class Fuser:
    """Fuses registered IR/VIS pairs.

    Images in and out follow OpenCV: uint8 (or uint16) HxW grey or HxWx3 BGR numpy arrays. Torch tensors of the
    same layout are accepted: a pair with a tensor gets a tensor back, on the device of the caller's VIS tensor
    (or IR tensor when only the IR is one); an all-numpy pair gets numpy. The output has the VIS's size; it is BGR
    for a colour VIS and grey for a grey one. Pre/post-processing (``policy``) is shared by all backends; graphs
    exported with in-graph processing (``io == "uint8"``) do it on the device instead.
    """

    def __init__(
        self,
        backend: BackendBase,
        *,
        policy: Policy | None = None,
        model_size: tuple[int, int] | None = None,
        description: str | None = None,
        warnings: Sequence[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        chosen = policy or backend.default_policy
        if chosen not in POLICIES:
            raise InputError(f"unknown policy {chosen!r}", fix=f"use one of {', '.join(POLICIES)}")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.backend = backend
        self.policy: Policy = "native" if chosen == "native" else "official"
        self.model_size = model_size or backend.input_size or backend.model_size
        if self.model_size is None and self.policy == "official" and backend.io == "float":
            raise InputError("the official policy needs a model size", fix="pass model_size=(H, W)")
        if self.policy == "native" and backend.input_size is not None and backend.io == "float":
            raise InputError(
                f"{backend.name} graph has a fixed {backend.input_size[1]}x{backend.input_size[0]} grid; the native "
                "policy needs any size",
                fix="use the official policy, or export a graph at the camera size",
            )
        self.description = backend.description if description is None else description
        self.warnings = list(backend.warnings if warnings is None else warnings)
        # One backend call per batch: the backend would split a larger one anyway.
        self.batch_size = min(batch_size, backend.max_batch or batch_size)
        self._resize_warned: set[tuple[int, ...]] = set()  # frame sizes already warned about (fixed-size graphs)

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | None = None,
        backend: str | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = None,
        policy: Policy | None = None,
        config: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **options: Any,
    ) -> Fuser:
        """A Fuser over any model: a checkpoint, a config name (random weights), an .onnx graph or an engine.

        ``source=None`` takes the built-in default model. ``backend`` defaults to what the file is (the registry's
        suffixes: .onnx -> onnxruntime, .engine/.plan -> tensorrt, else torch). ``device="auto"`` is cuda when a
        GPU is visible, else cpu (TensorRT: cuda). ``dtype`` applies to torch weights (default float32); graphs and
        engines run in the precision they were made in. ``policy=None`` takes the one the weights were trained for
        (graphs and engines have a fixed size: official). ``options`` go to the backend (its registry entry lists
        them: torch cuda_graph; onnxruntime threads, allow_fallback, ...; tensorrt cuda_graph, pool_size, ...).
        """
        runner = open_backend(backend, source, device=device, dtype=dtype, config=config, **options)
        return cls(runner, policy=policy, batch_size=batch_size)

    from_checkpoint = open  # the earlier name, kept for existing callers

    def fuse(self, ir: Image, vis: Image) -> Image:
        """Fuse one pair. See the class docstring for layouts."""
        return self.fuse_batch([(ir, vis)])[0]

    def fuse_batch(self, pairs: Sequence[tuple[Image, Image]], names: Sequence[str] | None = None) -> list[Image]:
        """Fuse many pairs, ``batch_size`` at a time; each result equals what :meth:`fuse` gives for the pair."""
        arrays = [(_to_numpy(ir), _to_numpy(vis)) for ir, vis in pairs]
        devices = [_result_device(ir, vis) for ir, vis in pairs]
        labels = list(names) if names is not None else [f"pair {i}" for i in range(len(arrays))]
        run = self._run_in_graph if self.backend.io == "uint8" else self._run_float
        results = run(arrays, labels)
        return [r if device is None else _as_tensor(r, device) for r, device in zip(results, devices, strict=True)]

    def _run_float(self, pairs: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> list[np.ndarray]:
        model_size = self.model_size or (0, 0)
        if self.backend.input_size is not None and self._graph_model_policy() != "official":
            self._warn_resize([vis.shape[:2] for _, vis in pairs])
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
            for part in batch_slices(len(indices), self.batch_size):
                chunk = indices[part]
                ir_batch = np.stack([prepared[i][0] for i in chunk])
                vis_batch = np.stack([prepared[i][1] for i in chunk])
                config = getattr(self.backend, "config", None)
                if self.policy == "native" and config is not None:
                    height, width = ir_batch.shape[2:]
                    check_native_pass(config, getattr(self.backend, "device", "cpu"), height, width, len(chunk))
                decoded = check_finite(self.backend.run(ir_batch, vis_batch), f"{self.backend.name} network output")
                for row, index in enumerate(chunk):
                    results[index] = finish_pair(decoded[row], prepared[index][2], self.policy)
        return [r for r in results if r is not None]

    def _graph_model_policy(self) -> str | None:
        """The policy a graph's weights were trained for (its metadata's config), None when it does not say."""
        config = getattr(getattr(self.backend, "info", None), "config", None)
        return config.get("policy") if isinstance(config, dict) else None

    def _warn_resize(self, sizes: list[tuple[int, int]]) -> None:
        """A fixed-size graph resizes other frame sizes to its grid (and back): say so once per size. Only for
        weights not trained for that resize (native-policy models): for official ones it is the intended path."""
        graph = self.backend.input_size
        assert graph is not None, "only fixed-size graphs resize frames"
        for size in sizes:
            if tuple(size) != tuple(graph) and tuple(size) not in self._resize_warned:
                self._resize_warned.add(tuple(size))
                warnings.warn(
                    f"{size[1]}x{size[0]} frames are resized to the {self.backend.name} graph's fixed "
                    f"{graph[1]}x{graph[0]} grid and back, which loses detail (its weights were trained for the "
                    "native policy: each frame at its own size); export the graph at the camera size",
                    ResizeWarning,
                    stacklevel=4,
                )

    def _run_in_graph(self, pairs: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> list[np.ndarray]:
        size = self.backend.input_size
        assert size is not None
        irs, viss, colour = [], [], []
        for (ir, vis), label in zip(pairs, labels, strict=True):
            check_pair(ir, vis, label)
            # The graph takes HxW uint8 grey IR and HxWx3 uint8 BGR VIS; the host conversions are the float path's
            # (processing.py): 16-bit IR stretched by its percentiles, 16-bit VIS scaled, BGRA to BGR, grey VIS
            # given as BGR and the result returned grey.
            ir = ir_to_grey8(ir)
            vis = vis_to_bgr8(vis)
            colour.append(vis.ndim == 3)
            if vis.ndim == 2:
                vis = cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
            if ir.shape[:2] != size or vis.shape[:2] != size:
                raise InputError(
                    f"{label}: frames are {vis.shape[1]}x{vis.shape[0]} but the graph takes {size[1]}x{size[0]}",
                    fix="export a graph for this camera size (maefuse-export --camera-size WxH)",
                )
            irs.append(ir)
            viss.append(vis)
        out = []
        for part in batch_slices(len(irs), self.batch_size):
            fused = self.backend.run(np.stack(irs[part]), np.stack(viss[part]))
            out.extend(list(fused))
        return [image if is_colour else np.ascontiguousarray(image[:, :, 0])
                for image, is_colour in zip(out, colour, strict=True)]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Fuser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResizeWarning(UserWarning):
    """Frames were resized to fit a fixed-size graph or engine."""


def _as_tensor(image: np.ndarray, device: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).to(device)
