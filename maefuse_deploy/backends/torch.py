"""PyTorch backend: eager SDPA on CPU or CUDA in float32 / float16 / bfloat16, optional CUDA graphs or torch.compile."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import InputError
from ..model.config import MaeFuseConfig
from ..model.maefuse import MaeFuse
from ..model.sources import resolve_torch_model
from .base import BackendBase
from .devices import resolve_device

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchBackend(BackendBase):
    """Runs a :class:`MaeFuse` module (float io; layouts: backends/base.py).

    Weights are cast to ``dtype`` once (a half-precision model reads half the bytes); inputs are cast on the way
    in and outputs returned as float32. With ``cuda_graph=True`` each input shape's forward is captured once into
    a CUDA graph and replayed, which removes the per-kernel launch cost that dominates at batch 1.
    ``compile=True`` wraps the module in ``torch.compile`` (compilation happens on each shape's first call).
    """

    name = "torch"
    native = "torch"

    def __init__(
        self,
        model: MaeFuse,
        device: str = "cpu",
        dtype: str = "float32",
        *,
        cuda_graph: bool = False,
        compile: bool = False,
        description: str = "",
        warnings: tuple[str, ...] = (),
    ) -> None:
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}", fix=f"use one of {', '.join(DTYPES)}")
        self.device = torch.device(resolve_device(device))
        self.dtype = DTYPES[dtype]
        if cuda_graph and self.device.type != "cuda":
            raise InputError("CUDA graphs need a CUDA device", fix="use --device cuda or drop --cuda-graph")
        if cuda_graph and compile:
            raise InputError("cuda_graph and compile are two ways to cut launch cost", fix="choose one of them")
        self.cuda_graph = cuda_graph
        self.model: Any = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        if compile:
            self.model = torch.compile(self.model)
        self.config: MaeFuseConfig = model.config
        self.patch_size = model.config.patch_size
        self.model_size = model.config.img_size
        self.default_policy = model.config.policy
        self.description = description or f"torch: {model.config.name}"
        self.warnings = tuple(warnings)
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | None,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        config: str | None = None,
        **options: Any,
    ) -> TorchBackend:
        """A checkpoint, a config name (random weights) or None (the built-in model) on ``device`` in ``dtype``."""
        resolved = resolve_torch_model(source, config)
        return cls(resolved.model, device, dtype or "float32", description=resolved.description,
                   warnings=tuple(resolved.warnings), **options)

    @property
    def tensor_device(self) -> torch.device:
        return self.device

    def _run_impl(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised tensors on any device -> (B, 3, H, W) float32 on this backend's device."""
        ir = ir.to(device=self.device, dtype=self.dtype, non_blocking=True)
        vis = vis.to(device=self.device, dtype=self.dtype, non_blocking=True)
        with torch.inference_mode():
            if self.cuda_graph:
                return self._replay(ir, vis).float()
            return self.model(ir, vis).float()

    def _replay(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        key = tuple(ir.shape)
        if key not in self._graphs:
            static_ir, static_vis = ir.clone(), vis.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside capture lets cuBLAS/SDPA pick and allocate their kernels
                    self.model(static_ir, static_vis)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_ir, static_vis)
            self._graphs[key] = (graph, static_ir, static_vis, static_out)
        graph, static_ir, static_vis, static_out = self._graphs[key]
        static_ir.copy_(ir)
        static_vis.copy_(vis)
        graph.replay()
        return static_out.clone()

    def close(self) -> None:
        self._graphs.clear()
