"""FLOP counts for one fused pair, the arithmetic floor, and a matmul probe for the peak rate (docs/model.md §6).

Counts are multiply-adds x 2 for the matrix products (linear layers, patch embedding, attention's QK^T and AV);
LayerNorm, GELU, softmax and additions are left out, as is usual for transformer FLOP counts: they are a few
per cent of the work and memory-bound, so they do not belong in a compute floor.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..model.config import MaeFuseConfig

FusionForm = Literal["deployed", "release"]


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one fused pair, by part. ``encoder`` covers both images."""

    encoder: float
    fusion: float
    decoder: float

    @property
    def total(self) -> float:
        return self.encoder + self.fusion + self.decoder

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def block_flops(tokens: int, dim: int, mlp_ratio: float, heads: int = 1, linear: bool = False) -> float:
    """One pre-norm ViT block over ``tokens``: qkv, attention, proj, fc1, fc2.

    Softmax attention is QK^T and AV (2 x 2 N^2 D); linear attention (model/vit.py: LinearAttention) is K^T V per
    head (2 N D d, d = D / heads), the output projection folded into its D x D matrix (2 D d D) and applied to
    mean(V) (2 D D), with Q x fold counted as the output projection (2 N D D)."""
    hidden = int(dim * mlp_ratio)
    projections = 2 * tokens * dim * (3 * dim + dim)
    head = dim // heads
    if linear:
        attention = 2 * tokens * dim * head + 2 * dim * head * dim + 2 * dim * dim
    else:
        attention = 2 * 2 * tokens * dim * tokens
    mlp = 2 * 2 * tokens * dim * hidden
    return float(projections + attention + mlp)


def count_flops(config: MaeFuseConfig, grid: tuple[int, int] | None = None, form: FusionForm = "deployed") -> FlopCount:
    """FLOPs of one pair at ``grid`` (rows, columns; default the config's grid).

    ``deployed`` is the least work that computes the model: an ``official`` fusion layer as the folded single
    matrix of docs/model.md §2, a ``tokens`` one as four attention calls over the tokens. ``release`` is what the
    released code executes: four ``nn.MultiheadAttention`` calls with all of Q, K, V and output projections,
    attending over a sequence of length 1 (the batch axis), whatever the config says.
    """
    rows, cols = grid or config.grid
    tokens = rows * cols
    dim, dec = config.embed_dim, config.decoder_embed_dim
    patch = 2.0 * tokens * config.patch_dim * dim
    linear = config.block_attention == "linear"
    one_image = patch + config.depth * block_flops(tokens, dim, config.mlp_ratio, config.num_heads, linear)
    decoder = (
        2.0 * tokens * dim * dec
        + config.decoder_depth * block_flops(tokens, dec, config.mlp_ratio, config.decoder_num_heads, linear)
        + 2.0 * tokens * dec * config.patch_dim
    )
    ffn = 2 * 2.0 * tokens * dim * int(dim * config.fusion_mlp_ratio)
    attention_call = 2.0 * tokens * dim * 4 * dim + 2 * 2.0 * tokens * tokens * dim
    if form == "release":
        # Each of the four calls attends over one key per token: the score and mix products are 2*N*D each.
        mixing = 4 * (2.0 * tokens * dim * 4 * dim + 2 * 2.0 * tokens * dim)
    elif config.attention == "official":
        mixing = 2.0 * tokens * dim * dim
    else:
        mixing = 4 * attention_call
    return FlopCount(encoder=2 * one_image, fusion=mixing + ffn, decoder=decoder)


def floor_seconds(flops: float, peak_flops_per_s: float) -> float:
    """The arithmetic floor: the time the FLOPs take at the peak matmul rate."""
    return flops / peak_flops_per_s


def measure_peak(device: torch.device, dtype: torch.dtype, budget_s: float = 0.5) -> tuple[float, int]:
    """Measured matmul rate in FLOP/s for ``dtype`` on ``device``, and the square size it was measured at.

    The size doubles from 256 until one product takes ~20 ms (or 4096 on a CPU / 8192 on a GPU), so a slow kind
    (float16 on a CPU without native FP16 units) is measured on a small product instead of stalling the run;
    then the best of as many repeats as fit in ``budget_s`` counts.
    """
    limit = 8192 if device.type == "cuda" else 4096
    size = 256
    while True:
        elapsed = _time_matmul(device, dtype, size)
        if elapsed >= 0.02 or size >= limit:
            break
        size *= 2
    best = elapsed
    spent = elapsed
    while spent < budget_s:
        elapsed = _time_matmul(device, dtype, size, warm=False)
        best = min(best, elapsed)
        spent += elapsed
    return 2.0 * size**3 / best, size


INT8_PROBE_SIZE = 2048


def measure_int8_peak(budget_s: float = 0.5) -> tuple[float, str] | None:
    """Measured int8 matmul rate in OP/s on the CPU, and how, or None without OpenVINO and NNCF.

    The int8 rows are OpenVINO's (NNCF-quantized linear layers on VNNI or AMX units), so the probe is the same
    toolchain on one square product: a float32 MatMul with constant weights, quantized by NNCF, compiled for the
    CPU with the latency hint (every core), best of as many calls as fit in ``budget_s``. torch's CPU int8 matmul
    (``torch._int_mm``) is not the kernel those rows run and measured a tenth of it.
    """
    import importlib.util

    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        return None
    import logging

    import nncf
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    size = INT8_PROBE_SIZE
    rng = np.random.default_rng(0)
    x = ops.parameter([size, size], np.float32, name="x")
    weights = ops.constant(rng.standard_normal((size, size)).astype(np.float32))
    model = ov.Model([ops.matmul(x, weights, False, True)], [x])
    logger = logging.getLogger("nncf")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        quantized = nncf.quantize(model, nncf.Dataset([rng.standard_normal((size, size)).astype(np.float32)]),
                                  subset_size=1)
    finally:
        logger.setLevel(saved)
    request = ov.Core().compile_model(quantized, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    a = rng.standard_normal((size, size)).astype(np.float32)
    request.infer({0: a})  # the first call pays kernel selection
    best, spent = float("inf"), 0.0
    while spent < budget_s:
        start = time.perf_counter()
        request.infer({0: a})
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2.0 * size**3 / best, f"measured: {size}x{size} OpenVINO int8 matmul (NNCF)"


def _time_matmul(device: torch.device, dtype: torch.dtype, size: int, warm: bool = True) -> float:
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    bias = torch.zeros(size, device=device, dtype=dtype)
    # The network's products are linear layers (addmm): on a CPU without FP16 units torch runs float16 addmm
    # through oneDNN at ~10x the rate of a bare float16 matmul, so probing with `a @ b` would understate the peak.
    if warm:  # the first product on a device pays library initialisation and kernel selection
        F.linear(a, b, bias)
    _sync(device)
    start = time.perf_counter()
    F.linear(a, b, bias)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
