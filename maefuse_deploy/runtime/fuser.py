"""Fuser: the one runtime API that camera pipelines embed, whatever the backend."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import cv2
import numpy as np

from ..backends import AUTO, BackendBase, is_tensor, open_backend
from ..checks import check_finite
from ..contract import DEFAULT_BATCH_SIZE, batch_slices
from ..errors import InputError
from ..processing import (
    POLICIES,
    PairContext,
    Policy,
    check_pair,
    check_pair_tensor,
    finish_pair,
    finish_pair_tensor,
    ir_to_grey8,
    ir_to_grey8_tensor,
    prepare_pair,
    prepare_pair_tensor,
    vis_to_bgr8,
    vis_to_bgr8_tensor,
)
from .limits import check_native_pass

Image = Any  # numpy array (OpenCV layout), torch tensor or other DLPack object of the same layout
FusePath = Literal["device", "host"]
_DLPACK_CPU, _DLPACK_CUDA = 1, 2  # DLDeviceType codes (dlpack.h)


def _to_numpy(image: Image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    return _as_tensor_input(image).detach().cpu().numpy()


def _as_tensor_input(image: Image) -> Any:
    """A torch tensor as is; another DLPack object (CuPy, JAX, ...) as a tensor sharing its memory."""
    if is_tensor(image):
        return image
    if hasattr(image, "__dlpack__"):
        import torch

        return torch.from_dlpack(image)
    raise InputError(f"expected a numpy array, torch tensor or DLPack object, got {type(image).__name__}")


def image_device(image: Image) -> Any:
    """The torch device an image lives on; None for numpy arrays (DLPack objects are not converted to ask)."""
    if isinstance(image, np.ndarray):
        return None
    if is_tensor(image):
        return image.device
    if hasattr(image, "__dlpack_device__"):
        import torch

        kind, index = image.__dlpack_device__()
        return torch.device("cuda", int(index)) if int(kind) == _DLPACK_CUDA else torch.device("cpu")
    raise InputError(f"expected a numpy array, torch tensor or DLPack object, got {type(image).__name__}")


def fuse_path(ir_device: Any, vis_device: Any, backend_device: Any) -> FusePath:
    """Where a pair is processed: ``"device"`` when both images are on the CUDA GPU the backend computes on
    (pre/post-processing and network stay there, no copy through the host), else ``"host"`` (numpy processing,
    the result moved to the caller's device). Devices are torch devices, None for numpy images or a backend
    without a tensor device (onnxruntime, OpenVINO)."""
    devices = (ir_device, vis_device, backend_device)
    if any(device is None or device.type != "cuda" for device in devices):
        return "host"
    return "device" if len({_cuda_index(device) for device in devices}) == 1 else "host"


def _cuda_index(device: Any) -> int:
    if device.index is not None:
        return int(device.index)
    import torch  # "cuda" without an index is the current device

    return int(torch.cuda.current_device()) if torch.cuda.is_available() else 0


def _result_device(ir: Image, vis: Image) -> Any:
    """Where a pair's result goes: None for numpy callers, else the device of the caller's tensor or DLPack object
    (VIS first)."""
    for image in (vis, ir):
        if not isinstance(image, np.ndarray):
            return image_device(image)
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
        backend: str | None = AUTO,
        *,
        device: str | None = "auto",
        dtype: str | None = None,
        policy: Policy | None = None,
        config: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **options: Any,
    ) -> Fuser:
        """A Fuser over any model: a checkpoint, a config name (random weights), an .onnx graph or an engine.

        ``source=None`` takes the built-in default model. ``backend="auto"`` takes the fastest one installed for
        the source on the device (:func:`maefuse_deploy.backends.choose_backend`; ``backend.chosen`` says which
        and why); None takes what the file is (.onnx -> onnxruntime, .engine/.plan -> tensorrt, else torch).
        ``device="auto"`` is cuda when a GPU is visible, else cpu (TensorRT: cuda). ``dtype`` applies to torch
        weights (default float32) and openvino-weights (default: the fastest within 40 dB); graphs and engines run in
        the precision they were made in. ``policy=None`` takes the one the weights were trained for (graphs and
        engines have a fixed size: official). ``options`` go to the backend (its registry entry lists them: torch
        cuda_graph; onnxruntime threads, allow_fallback, ...; tensorrt cuda_graph, pool_size, ...).
        """
        runner = open_backend(backend, source, device=device, dtype=dtype, config=config, **options)
        return cls(runner, policy=policy, batch_size=batch_size)

    from_checkpoint = open  # the earlier name, kept for existing callers

    def fuse(self, ir: Image, vis: Image) -> Image:
        """Fuse one pair. See the class docstring for layouts."""
        return self.fuse_batch([(ir, vis)])[0]

    def fuse_batch(self, pairs: Sequence[tuple[Image, Image]], names: Sequence[str] | None = None) -> list[Image]:
        """Fuse many pairs, ``batch_size`` at a time; each result equals what :meth:`fuse` gives for the pair.

        Pairs of CUDA tensors (or CUDA DLPack objects) on the GPU a torch or TensorRT backend runs on take the
        device path (:func:`fuse_path`): processing on that GPU, results returned there, no host round trip.
        """
        labels = list(names) if names is not None else [f"pair {i}" for i in range(len(pairs))]
        target = self.backend.tensor_device
        paths = [fuse_path(image_device(ir), image_device(vis), target) for ir, vis in pairs]
        results: list[Image] = [None] * len(pairs)
        host = [i for i, path in enumerate(paths) if path == "host"]
        if host:
            arrays = [(_to_numpy(pairs[i][0]), _to_numpy(pairs[i][1])) for i in host]
            run = self._run_in_graph if self.backend.io == "uint8" else self._run_float
            for index, result in zip(host, run(arrays, [labels[i] for i in host]), strict=True):
                device = _result_device(*pairs[index])
                results[index] = result if device is None else _as_tensor(result, device)
        device_pairs = [i for i, path in enumerate(paths) if path == "device"]
        if device_pairs:
            tensors = [(_as_tensor_input(pairs[i][0]), _as_tensor_input(pairs[i][1])) for i in device_pairs]
            for index, result in zip(device_pairs, self.run_on_device(tensors, [labels[i] for i in device_pairs]),
                                     strict=True):
                results[index] = result
        return results

    def run_on_device(self, pairs: list[tuple[Any, Any]], labels: list[str]) -> list[Any]:
        """The device path: torch tensor pairs (all on one device) processed and fused there, tensors back.

        Also runs on CPU tensors (the same steps, e.g. to compare with the host path); :meth:`fuse_batch` takes it
        for CUDA pairs on the backend's GPU only.
        """
        if self.backend.io == "uint8":
            return self._run_in_graph(pairs, labels, _TENSOR_OPS)
        return self._run_float(pairs, labels, _TENSOR_OPS)

    def _run_float(self, pairs: list[tuple[Any, Any]], labels: list[str], ops: _Ops | None = None) -> list[Any]:
        ops = ops or _NUMPY_OPS
        model_size = self.model_size or (0, 0)
        if self.backend.input_size is not None and self._graph_model_policy() != "official":
            self._warn_resize([(int(vis.shape[0]), int(vis.shape[1])) for _, vis in pairs])
        prepared: list[tuple[Any, Any, PairContext]] = [
            ops.prepare(ir, vis, self.policy, model_size, self.backend.patch_size, name=label)
            for (ir, vis), label in zip(pairs, labels, strict=True)
        ]
        # Native-policy pairs of different sizes make different token grids: batch each grid separately.
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (_, _, context) in enumerate(prepared):
            by_shape[context.network_size].append(index)
        results: list[Any] = [None] * len(prepared)
        for indices in by_shape.values():
            for part in batch_slices(len(indices), self.batch_size):
                chunk = indices[part]
                ir_batch = ops.stack([prepared[i][0] for i in chunk])
                vis_batch = ops.stack([prepared[i][1] for i in chunk])
                config = getattr(self.backend, "config", None)
                if self.policy == "native" and config is not None:
                    height, width = (int(d) for d in ir_batch.shape[2:])
                    check_native_pass(config, getattr(self.backend, "device", "cpu"), height, width, len(chunk))
                decoded = ops.check_finite(self.backend.run(ir_batch, vis_batch), f"{self.backend.name} network output")
                for row, index in enumerate(chunk):
                    results[index] = ops.finish(decoded[row], prepared[index][2], self.policy)
        return results

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

    def _run_in_graph(self, pairs: list[tuple[Any, Any]], labels: list[str], ops: _Ops | None = None) -> list[Any]:
        ops = ops or _NUMPY_OPS
        size = self.backend.input_size
        assert size is not None
        irs, viss, colour = [], [], []
        for (ir, vis), label in zip(pairs, labels, strict=True):
            ops.check(ir, vis, label)
            # The graph takes HxW uint8 grey IR and HxWx3 uint8 BGR VIS; the conversions are the float path's
            # (processing.py): 16-bit IR stretched by its percentiles, 16-bit VIS scaled, BGRA to BGR, grey VIS
            # given as BGR and the result returned grey.
            ir = ops.ir_to_grey8(ir)
            vis = ops.vis_to_bgr8(vis)
            colour.append(vis.ndim == 3)
            if vis.ndim == 2:
                vis = ops.grey_to_bgr(vis)
            if tuple(ir.shape[:2]) != size or tuple(vis.shape[:2]) != size:
                raise InputError(
                    f"{label}: frames are {vis.shape[1]}x{vis.shape[0]} but the graph takes {size[1]}x{size[0]}",
                    fix="export a graph for this camera size (maefuse-export --camera-size WxH)",
                )
            irs.append(ir)
            viss.append(vis)
        out = []
        for part in batch_slices(len(irs), self.batch_size):
            fused = self.backend.run(ops.stack(irs[part]), ops.stack(viss[part]))
            out.extend(list(fused))
        return [image if is_colour else ops.contiguous(image[:, :, 0])
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


class _Ops:
    """The array operations of one path: numpy on the host, torch on the frames' device."""

    def __init__(self, *, check: Callable[..., None], prepare: Callable[..., Any], finish: Callable[..., Any],
                 ir_to_grey8: Callable[[Any], Any], vis_to_bgr8: Callable[[Any], Any],
                 grey_to_bgr: Callable[[Any], Any], stack: Callable[[list[Any]], Any],
                 contiguous: Callable[[Any], Any], check_finite: Callable[[Any, str], Any]) -> None:
        self.check, self.prepare, self.finish = check, prepare, finish
        self.ir_to_grey8, self.vis_to_bgr8, self.grey_to_bgr = ir_to_grey8, vis_to_bgr8, grey_to_bgr
        self.stack, self.contiguous, self.check_finite = stack, contiguous, check_finite


def _numpy_stack(items: list[np.ndarray]) -> np.ndarray:
    # A batch of one (every live pair) is a view: np.stack would copy 3.7 MB per 640x480 input, ~3 ms a pair.
    return items[0][None] if len(items) == 1 else np.stack(items)


def _torch_stack(items: list[Any]) -> Any:
    import torch

    return torch.stack(items)


def _tensor_check_finite(tensor: Any, what: str) -> Any:
    import torch

    if not bool(torch.isfinite(tensor).all()):  # one flag crosses to the host; the tensor only on failure
        check_finite(tensor.detach().cpu().numpy(), what)
    return tensor


_NUMPY_OPS = _Ops(check=check_pair, prepare=prepare_pair, finish=finish_pair, ir_to_grey8=ir_to_grey8,
                  vis_to_bgr8=vis_to_bgr8, grey_to_bgr=lambda grey: cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR),
                  stack=_numpy_stack, contiguous=np.ascontiguousarray, check_finite=check_finite)
_TENSOR_OPS = _Ops(check=check_pair_tensor, prepare=prepare_pair_tensor, finish=finish_pair_tensor,
                   ir_to_grey8=ir_to_grey8_tensor, vis_to_bgr8=vis_to_bgr8_tensor,
                   grey_to_bgr=lambda grey: grey[:, :, None].expand(*grey.shape, 3).contiguous(),
                   stack=_torch_stack, contiguous=lambda image: image.contiguous(), check_finite=_tensor_check_finite)
