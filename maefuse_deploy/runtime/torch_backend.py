"""PyTorch backend: eager SDPA on CPU or CUDA in float32 / float16 / bfloat16, optional CUDA graphs."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError, UnavailableError
from ..model.maefuse import MaeFuse

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError:  # torch's message lists twenty device types
        raise InputError(f"unknown device {device!r}", fix="use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(
            f"device {device} requested but torch sees no CUDA GPU", fix="use --device cpu or a machine with a GPU"
        )
    return device


class TorchBackend:
    """Runs a :class:`MaeFuse` module. ``run`` speaks numpy (Backend protocol), ``run_tensor`` torch tensors.

    Weights are cast to ``dtype`` once (a half-precision model reads half the bytes); inputs are cast on the way
    in and outputs returned as float32. With ``cuda_graph=True`` each input shape's forward is captured once into
    a CUDA graph and replayed, which removes the per-kernel launch cost that dominates at batch 1.
    """

    name = "torch"
    io = "float"
    input_size = None
    max_batch = None

    def __init__(
        self,
        model: MaeFuse,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        cuda_graph: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}", fix=f"use one of {', '.join(DTYPES)}")
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        if cuda_graph and self.device.type != "cuda":
            raise InputError("CUDA graphs need a CUDA device", fix="use --device cuda or drop --cuda-graph")
        self.cuda_graph = cuda_graph
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.patch_size = model.config.patch_size
        self.config = model.config
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def run_tensor(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
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

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        out = self.run_tensor(torch.from_numpy(ir), torch.from_numpy(vis))
        return out.cpu().numpy()

    def close(self) -> None:
        self._graphs.clear()
