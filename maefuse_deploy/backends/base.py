"""The one base class of every inference backend (torch, onnxruntime, tensorrt, release-style, ...).

A backend runs the network only; :class:`maefuse_deploy.Fuser` owns the one pre/post-processing path.

The io-mode contract (what ``run`` takes and returns; the exported graphs use the same layouts):

``float``  ``run(ir, vis)`` takes two floating-point batches (B, 3, H, W), NCHW, ImageNet-normalised
           (processing.py), with (H, W) = ``input_size`` or, where ``input_size`` is None, any multiple of
           ``patch_size``; it returns the unpatchified decoder output (B, 3, H, W) float32 in the same normalised
           space.
``uint8``  pre/post-processing are inside the graph: ``run(ir, vis)`` takes ir (B, H, W) uint8 grey and vis
           (B, H, W, 3) uint8 BGR at the camera size ``input_size`` and returns the fused (B, H, W, 3) uint8 BGR.

What :meth:`BackendBase.run` does for every backend, in this order:

1. Checks the inputs against the contract above (one-line :class:`~maefuse_deploy.errors.InputError`).
2. numpy in -> numpy out; torch tensors in -> torch tensors out on the caller's device. Each backend computes on
   one kind (``native``: ``"numpy"`` or ``"torch"``); the other kind is converted on the way in and out. A backend
   that can also take device memory directly (TensorRT with CUDA tensors) overrides :meth:`_run_tensor_impl`,
   the one name of the tensor path.
3. Splits a batch above its ``profile``'s maximum and pads a chunk below the minimum with copies of its last pair
   (every pair is computed independently, so padding cannot change the others); the padding is dropped.
4. Calls :meth:`_run_impl` with a batch inside the profile.

Adding a backend (e.g. OpenVINO):

1. A module ``maefuse_deploy/backends/NAME.py`` with a subclass of :class:`BackendBase`: set ``name``, ``native``,
   ``io``, ``patch_size``, ``input_size``, ``profile`` (or None for any batch) and ``model_size`` /
   ``default_policy`` / ``description`` in ``__init__``; implement ``_run_impl`` (a batch inside the profile, of
   the ``native`` kind, already checked) and ``close``. Graph backends read size, io mode and batch from the
   graph's metadata with :func:`maefuse_deploy.contract.read_graph_info`.
2. One :class:`~maefuse_deploy.backends.registry.BackendEntry` line in ``registry.py``: its name, the model files
   it opens (``needs`` and ``suffixes``), devices, dtypes, options and ``"module:Class"`` opener. Fuser, the CLIs
   and ``maefuse-bench`` pick it up from there.
3. The conformance test (tests/test_backends.py) runs it on real pairs once it is available on the machine.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from ..contract import BatchProfile, batch_slices
from ..errors import InputError

IoMode = Literal["float", "uint8"]
Native = Literal["numpy", "torch"]


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch for numpy callers."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


class BackendBase(abc.ABC):
    """Shared checks, batching and numpy/torch conversion; subclasses implement :meth:`_run_impl`."""

    name: str  # the registry entry's name (open_backend sets a variant's, e.g. torch-bf16)
    native: ClassVar[Native] = "numpy"
    io: IoMode = "float"
    patch_size: int = 16
    input_size: tuple[int, int] | None = None  # (H, W) the graph was built for; None: any multiple of patch_size
    profile: BatchProfile | None = None  # batches one _run_impl call accepts; None: any batch
    model_size: tuple[int, int] | None = None  # the size the official policy resizes to (float io)
    default_policy: str = "official"  # what the weights were trained for; graphs and engines: official
    description: str = ""
    warnings: tuple[str, ...] = ()
    chosen: str = ""  # with backend "auto": which backend it picked and why (one line the CLIs print)
    events: Sequence[str] = ()  # what it did on an input shape's first use (a compile, a cache hit); CLIs print it
    build_notes: tuple[str, ...] = ()  # what opening it did that a benchmark row should mention (quantization, ...)
    # The block attentions (a model config's ``block_attention``) it computes; None: every kind. A backend that
    # re-implements the network instead of running the model's own modules lists the kinds it implements.
    block_attentions: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def unsupported_block_attention(cls, block_attention: str) -> str:
        """Why this backend cannot compute ``block_attention`` ('' when it can): the one rule behind a backend's
        refusal and the benchmark's skipped row."""
        if cls.block_attentions is None or block_attention in cls.block_attentions:
            return ""
        return f"it computes {' or '.join(cls.block_attentions)} block attention only, not {block_attention}"

    @property
    def max_batch(self) -> int | None:
        """Largest batch one ``_run_impl`` call takes (``run`` splits above it); None: unbounded."""
        return self.profile.max if self.profile else None

    @property
    def min_batch(self) -> int:
        return self.profile.min if self.profile else 1

    @property
    def tensor_device(self) -> Any:
        """The torch device a torch-native backend computes on (the bench times transfers to it); else None."""
        return None

    @classmethod
    @abc.abstractmethod
    def open(
        cls, source: Any, *, device: str = "cpu", dtype: str | None = None, config: str | None = None, **options: Any
    ) -> BackendBase:
        """The registry's opener: a model source (weights, graph or engine path) on ``device``."""

    # -- the public entry ----------------------------------------------------------------------------------------

    def run(self, ir: Any, vis: Any) -> Any:
        """Run one batch; layouts are the io-mode contract above. numpy in -> numpy out, torch in -> torch out."""
        if is_tensor(ir) != is_tensor(vis):
            raise InputError(
                f"{self.name}: ir and vis must both be numpy arrays or both torch tensors, got "
                f"{type(ir).__name__} and {type(vis).__name__}",
                fix="convert one of them",
            )
        if is_tensor(ir):
            self._check(tuple(ir.shape), tuple(vis.shape), str(ir.dtype), str(vis.dtype))
            out = self._batched(ir, vis, self._run_tensor_impl, _torch_ops)
            return out.to(ir.device)
        ir, vis = np.asarray(ir), np.asarray(vis)
        self._check(ir.shape, vis.shape, str(ir.dtype), str(vis.dtype))
        return self._batched(ir, vis, self._run_numpy_impl, _numpy_ops)

    @abc.abstractmethod
    def close(self) -> None:
        """Free what the backend holds (sessions, contexts, GPU memory). Idempotent."""

    def __enter__(self) -> BackendBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hooks -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _run_impl(self, ir: Any, vis: Any) -> Any:
        """A checked batch inside ``profile``, of the ``native`` kind -> the output of the same kind.

        torch-native backends get tensors on any device and may return them on their own device.
        """

    def _run_tensor_impl(self, ir: Any, vis: Any) -> Any:
        """The tensor path: torch tensors on any device in, a tensor out (``run`` moves it to the caller's device)."""
        if self.native == "torch":
            return self._run_impl(ir, vis)
        import torch

        out = self._run_impl(ir.detach().cpu().numpy(), vis.detach().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(out))

    def _run_numpy_impl(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self.native == "numpy":
            return np.asarray(self._run_impl(ir, vis))
        import torch

        return self._run_impl(torch.from_numpy(ir), torch.from_numpy(vis)).detach().cpu().numpy()

    # -- shared mechanics ----------------------------------------------------------------------------------------

    def _output_dtype(self) -> str:
        return "float32" if self.io == "float" else "uint8"

    def _check(self, ir_shape: tuple, vis_shape: tuple, ir_dtype: str, vis_dtype: str) -> None:
        ir_shape, vis_shape = tuple(int(d) for d in ir_shape), tuple(int(d) for d in vis_shape)
        size = self.input_size
        patch = self.patch_size
        if self.io == "float":
            where = f"{size[0]}, {size[1]}" if size else f"H, W (multiples of {self.patch_size})"
            expected = f"ir and vis (B, 3, {where}) floating point"
            ok = (
                len(ir_shape) == 4
                and ir_shape == vis_shape
                and ir_shape[1] == 3
                and "float" in ir_dtype
                and "float" in vis_dtype
                and (ir_shape[2:] == size if size else not (ir_shape[2] % patch or ir_shape[3] % patch))
            )
        else:
            assert size is not None, "a uint8-io backend has a fixed camera size"
            expected = f"ir (B, {size[0]}, {size[1]}) uint8 grey and vis (B, {size[0]}, {size[1]}, 3) uint8 BGR"
            ok = (
                ir_shape[1:] == size
                and vis_shape[1:] == (*size, 3)
                and ir_shape[:1] == vis_shape[:1]
                and ir_dtype.endswith("uint8")
                and vis_dtype.endswith("uint8")
            )
        if not ok:
            raise InputError(
                f"{self.name} ({self.io} io) takes {expected} with the same B; got ir {ir_shape} {ir_dtype} and "
                f"vis {vis_shape} {vis_dtype}",
                fix="let Fuser prepare the images, or resize them to the backend's input size",
            )

    def _batched(self, ir: Any, vis: Any, run: Any, ops: Any) -> Any:
        count = int(ir.shape[0])
        if count == 0:
            shape = (0, *ir.shape[1:]) if self.io == "float" else (0, *vis.shape[1:])
            return ops.empty(shape, self._output_dtype(), like=ir)
        results = []
        for part in batch_slices(count, self.max_batch or count):
            a, b = ir[part], vis[part]
            rows = int(a.shape[0])
            if rows < self.min_batch:
                a, b = ops.pad(a, self.min_batch), ops.pad(b, self.min_batch)
            out = run(a, b)
            if int(out.shape[0]) != a.shape[0]:
                raise RuntimeError(f"{self.name} returned {out.shape[0]} results for a batch of {a.shape[0]}")
            results.append(ops.cast(out[:rows], self._output_dtype()))
        return results[0] if len(results) == 1 else ops.cat(results)


class _numpy_ops:
    @staticmethod
    def pad(batch: np.ndarray, minimum: int) -> np.ndarray:
        return np.concatenate([batch, np.repeat(batch[-1:], minimum - batch.shape[0], axis=0)])

    @staticmethod
    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    @staticmethod
    def cast(array: np.ndarray, dtype: str) -> np.ndarray:
        return array.astype(dtype, copy=False)

    @staticmethod
    def empty(shape: tuple, dtype: str, like: np.ndarray) -> np.ndarray:
        return np.empty(shape, dtype=dtype)


class _torch_ops:
    @staticmethod
    def pad(batch: Any, minimum: int) -> Any:
        import torch

        return torch.cat([batch, batch[-1:].expand(minimum - batch.shape[0], *batch.shape[1:])])

    @staticmethod
    def cat(parts: list[Any]) -> Any:
        import torch

        return torch.cat(parts)

    @staticmethod
    def cast(tensor: Any, dtype: str) -> Any:
        import torch

        return tensor.to(getattr(torch, dtype))

    @staticmethod
    def empty(shape: tuple, dtype: str, like: Any) -> Any:
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
