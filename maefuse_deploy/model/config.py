"""Model configurations as data.

``maefuse-l640`` is the released model (docs/model.md §1). The small configs exist for tests, demos and the shipped
``maefuse-rt-linear`` (the built-in model), ``maefuse-rt`` and ``maefuse-tiny``; any width, depth, head count, patch
and grid is allowed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import CheckpointError

Attention = Literal["official", "tokens"]
ATTENTION_MODES: tuple[str, ...] = ("official", "tokens")
BlockAttention = Literal["softmax", "linear"]
BLOCK_ATTENTION_KINDS: tuple[str, ...] = ("softmax", "linear")
TRAINED_POLICIES: tuple[str, ...] = ("official", "native")


@dataclass(frozen=True)
class MaeFuseConfig:
    """Every number that shapes a MaeFuse network.

    ``attention`` selects the fusion layer's semantics (docs/model.md §2): ``official`` reproduces the released
    checkpoint's batch-1 output for every pair (attention over one key); ``tokens`` is the paper's cross-attention
    over the token sequence.

    ``block_attention`` is the encoder's and decoder's self-attention: ``softmax`` (MAE's, every released model) or
    ``linear``, its first-order expansion about each query's mean logit, ``mean(V) + (q * scale) Cov(K, V)``
    (model/vit.py): the same tensors, cost linear in the token count instead of quadratic.

    ``policy`` is the preprocessing the weights were trained for and the runtime's default (the release: resize to
    ``img_size``; a model trained on native-resolution crops: ``native``). It shapes no tensor, so two configs
    that differ only in it describe the same network.
    """

    name: str
    img_size: tuple[int, int] = (640, 640)  # (H, W) of the released preprocessing's resize
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 4
    decoder_num_heads: int = 16
    fusion_num_heads: int = 16
    fusion_mlp_ratio: float = 4.0
    attention: Attention = "official"
    block_attention: BlockAttention = "softmax"
    norm_eps: float = 1e-6  # encoder/decoder LayerNorms (MAE)
    fusion_norm_eps: float = 1e-5  # the fusion FFN's LayerNorm (torch default in the release)
    policy: str = "official"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.block_attention not in BLOCK_ATTENTION_KINDS:
            raise ValueError(f"block_attention must be one of {BLOCK_ATTENTION_KINDS}, got {self.block_attention!r}")
        if self.policy not in TRAINED_POLICIES:
            raise ValueError(f"policy must be one of {TRAINED_POLICIES}, got {self.policy!r}")
        for dim, heads, what in (
            (self.embed_dim, self.num_heads, "embed_dim/num_heads"),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim/decoder_num_heads"),
            (self.embed_dim, self.fusion_num_heads, "embed_dim/fusion_num_heads"),
        ):
            if dim % heads:
                raise ValueError(f"{what}: {dim} is not divisible by {heads}")
        if self.embed_dim % 4 or self.decoder_embed_dim % 4:
            raise ValueError("2-D sin-cos position embeddings need widths divisible by 4")
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, columns) at ``img_size``."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.in_chans

    def same_network(self, other: MaeFuseConfig) -> bool:
        """True when both configs build the same tensors (names and the trained-for policy aside)."""
        return self.replace(name=other.name, policy=other.policy) == other

    def replace(self, **changes: Any) -> MaeFuseConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["img_size"] = list(self.img_size)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaeFuseConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"unknown model config fields {unknown}", fix="use a config of this version")
        values = dict(data)
        problems = []
        for spec in dataclasses.fields(cls):
            if spec.name not in values:
                continue
            value = values[spec.name]
            if spec.name == "img_size":
                ok = isinstance(value, list | tuple) and len(value) == 2 and all(_positive_int(v) for v in value)
                if ok:
                    values["img_size"] = tuple(value)
            elif spec.type == "int":
                ok = _positive_int(value)
            elif spec.type == "float":
                ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")
            else:
                ok = isinstance(value, str)
            if not ok:
                problems.append(f"{spec.name}={value!r}")
        if problems:
            raise CheckpointError(f"invalid model config values {', '.join(problems)}", fix="re-save the checkpoint")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid model config ({exc})", fix="re-save the checkpoint") from exc


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# Shipped demo/default size: ViT-Tiny width, 16x16 tokens at 256x256.
_TINY = MaeFuseConfig(
    name="maefuse-tiny",
    img_size=(256, 256),
    embed_dim=192,
    depth=6,
    num_heads=3,
    decoder_embed_dim=128,
    decoder_depth=2,
    decoder_num_heads=4,
    fusion_num_heads=3,
)
CONFIGS: dict[str, MaeFuseConfig] = {
    config.name: config
    for config in (
        MaeFuseConfig(name="maefuse-l640"),
        _TINY,
        # Real-time size: maefuse-tiny's tensors with one attention head in the encoder and two in the decoder. At
        # 640x480 (1200 tokens) softmax over the token rows is most of attention's time on a CPU and it scales with
        # the head count: 46 -> 32 ms per pair on OpenVINO bf16 (benchmarks/training.md). Same weight shapes, so
        # training starts from maefuse-tiny itself (model/resample.py: warm_start). The fusion layer's heads stay:
        # under official attention (one key) they cost nothing.
        _TINY.replace(name="maefuse-rt", num_heads=1, decoder_num_heads=2),
        # maefuse-rt's tensors with linear block attention (model/vit.py: LinearAttention): no N x N matrix, so on a CPU
        # without BF16 units attention stops being most of the time (benchmarks/README.md). Trained from maefuse-rt.
        _TINY.replace(name="maefuse-rt-linear", num_heads=1, decoder_num_heads=2, block_attention="linear"),
        # Unit-test size: a 4x4 token grid, milliseconds per pass on a CPU.
        MaeFuseConfig(
            name="maefuse-micro",
            img_size=(64, 64),
            embed_dim=32,
            depth=2,
            num_heads=2,
            decoder_embed_dim=32,
            decoder_depth=1,
            decoder_num_heads=2,
            fusion_num_heads=2,
        ),
    )
}


def get_config(name: str) -> MaeFuseConfig:
    """Look up a named config."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise CheckpointError(
            f"unknown model config {name!r}", fix=f"use one of {', '.join(sorted(CONFIGS))}"
        ) from None
