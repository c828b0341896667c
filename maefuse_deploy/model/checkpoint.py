"""Loading and saving MaeFuse weights.

Formats read (docs/model.md §3):
* ``maefuse``: our safetensors file; the model config is stored in its metadata.
* ``released-fused``: the authors' fusion checkpoint, ``{'model': {model1.*, model2.*}}``.
* ``released-mae``: the authors' MAE + 4-block decoder ("resume") file, ``{'model': {...}}`` without prefix,
  possibly with optimiser state and an ``argparse.Namespace`` under 'args'.
* ``upstream-mae``: facebookresearch/mae files (class token, 14x14 tables, optionally an 8-block decoder).

Pickled files are read with ``torch.load(weights_only=True)``: tensors and containers only, plus
``argparse.Namespace`` through torch's safe-globals list, never arbitrary code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..errors import CheckpointError
from ..version import __version__
from .config import CONFIGS, MaeFuseConfig, get_config
from .maefuse import MaeFuse, build_model
from .resample import warm_start

FORMAT_KEY = "maefuse.format"
CONFIG_KEY = "maefuse.config"
FORMAT_VERSION = "1"

StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What a load took from the file and what the model still lacks."""

    path: str
    layout: str
    loaded: int = 0
    missing_parts: list[str] = field(default_factory=list)  # human-readable, e.g. "fusion layer"
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing_parts

    def summary(self) -> str:
        text = f"{self.path}: {self.layout} layout, {self.loaded} tensors loaded"
        if self.missing_parts:
            text += f"; missing: {', '.join(self.missing_parts)}"
        if self.notes:
            text += f"; {'; '.join(self.notes)}"
        return text


TIMM_PREFIX = "timm:"


def read_timm_state(name: str) -> StateDict:
    """The encoder weights of timm model ``name`` (e.g. ``vit_large_patch16_224.mae``, timm's upstream MAE-Large).

    timm downloads the pretrained weights where its hub is reachable (else its own error, in one line). Its ViT
    keys are the MAE release's (``patch_embed``, ``blocks``, ``norm``, ``cls_token``, ``pos_embed``), so the
    result loads as an upstream MAE file; the classifier head is not created (``num_classes=0``).
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # timm raises RuntimeError for unknown names, others for failed downloads
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(
            f"timm cannot create {name!r} with pretrained weights ({first[:200]})",
            fix="check the name (timm.list_models('*mae*')) and that the Hugging Face hub is reachable, "
            "or pass a downloaded checkpoint file",
        ) from exc
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def read_state(path: str | os.PathLike[str], trust_pickle: bool = False) -> tuple[StateDict, dict[str, str]]:
    """Read every tensor of a checkpoint file, or of ``timm:MODEL`` (see :func:`read_timm_state`).

    Returns (state dict, safetensors metadata or {}).
    """
    if str(path).startswith(TIMM_PREFIX):
        return read_timm_state(str(path)[len(TIMM_PREFIX):]), {}
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder", fix="name the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", fix="check the path or name a config")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(
                f"checkpoint {path} is not a readable safetensors file ({exc})", fix="re-download or re-convert it"
            ) from exc
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        # torch words a blocked class as "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y".
        lines = [line for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        reason = (lines or str(exc).splitlines() or [type(exc).__name__])[0].strip()
        if "GLOBAL" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds pickled objects other than tensors ({reason})",
                fix="convert it with maefuse-convert --trust-pickle on a file you trust",
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} is not a readable torch checkpoint ({reason})", fix="check the file"
        ) from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict (expected {{'model': {{name: tensor}}}})",
            fix="pass a MaeFuse or MAE checkpoint",
        )
    return dict(state), {}


def detect_layout(state: StateDict, metadata: dict[str, str]) -> str:
    if metadata.get(FORMAT_KEY):
        return "maefuse"
    if any(key.startswith("model1.") for key in state) or any(key.startswith("model2.") for key in state):
        return "released-fused"
    if "patch_embed.proj.weight" in state:
        return "upstream-mae" if "cls_token" in state else "released-mae"
    if any(key.startswith(("mae.", "fusion.")) for key in state):
        return "maefuse"
    raise CheckpointError(
        "checkpoint layout not recognised (no model1./model2., MAE or maefuse keys)",
        fix="pass a released MaeFuse, MAE or maefuse-deploy checkpoint",
    )


def _count(prefix: str, state: StateDict) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def infer_config(state: StateDict, layout: str) -> MaeFuseConfig:
    """Match a released or upstream file's shapes to a known config (head counts are not in the weights)."""
    mae = {k[len("model1."):]: v for k, v in state.items() if k.startswith("model1.")} or state
    if "patch_embed.proj.weight" not in mae:
        raise CheckpointError("checkpoint has no patch_embed.proj.weight", fix="pass a complete MaeFuse checkpoint")
    weight = mae["patch_embed.proj.weight"]
    embed_dim, patch = weight.shape[0], weight.shape[-1]
    depth = _count("blocks.", mae)
    for config in CONFIGS.values():
        same_encoder = (config.embed_dim, config.patch_size, config.depth) == (embed_dim, patch, depth)
        if not same_encoder:
            continue
        if layout == "upstream-mae":
            return config
        tokens = mae["pos_embed"].shape[1] if "pos_embed" in mae else None
        if tokens == config.grid[0] * config.grid[1]:
            return config
    raise CheckpointError(
        f"no known config has width {embed_dim}, patch {patch}, depth {depth} and this grid",
        fix="name the config with --config",
    )


def _check_strict(expected: StateDict, given: StateDict, path: Path, config: MaeFuseConfig) -> None:
    """Compare key sets and shapes; ``expected`` and ``given`` use the file's own key names."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or misshaped):
        return

    def show(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

    parts = []
    if missing:
        parts.append(f"missing {show(missing)}")
    if unexpected:
        parts.append(f"unexpected {show(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped {show(misshaped)}")
    raise CheckpointError(
        f"checkpoint {path} does not fit {config.name}: {'; '.join(parts)}",
        fix="pass the matching --config or a complete, unmodified checkpoint",
    )


RELEASED_PREFIXES = (("model1.", "mae."), ("model2.", "fusion."))


def _rename(state: StateDict, to_ours: bool) -> StateDict:
    """Map between the release's ``model1.``/``model2.`` prefixes and our ``mae.``/``fusion.``."""
    renamed = {}
    for key, value in state.items():
        for theirs, ours in RELEASED_PREFIXES:
            old, new = (theirs, ours) if to_ours else (ours, theirs)
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


def _load_partial_mae(model: MaeFuse, state: StateDict, layout: str, report: LoadReport) -> None:
    """MAE-only files: take the encoder (and decoder where it fits), say plainly what is missing."""
    config = model.config
    ours = model.state_dict()
    take: StateDict = {}
    ignored = []
    for key, value in state.items():
        if key in ("cls_token", "mask_token"):
            ignored.append(key)
            continue
        if key in ("pos_embed", "decoder_pos_embed") and layout == "upstream-mae":
            continue  # class-token 14x14 tables: regenerated from the formula for this grid
        target = "mae." + key
        if target in ours and ours[target].shape == value.shape:
            take[target] = value
        else:
            ignored.append(key)
    encoder_keys = [k for k in ours if k.startswith("mae.") and "decoder" not in k and "pos_embed" not in k]
    absent = [k for k in encoder_keys if k not in take]
    if absent:
        raise CheckpointError(
            f"checkpoint {report.path} lacks encoder weights for {config.name}: {', '.join(absent[:4])}",
            fix="pass an MAE checkpoint of the same width and depth, or name the right --config",
        )
    model.load_state_dict(take, strict=False)
    report.loaded = len(take)
    file_decoder_depth = _count("decoder_blocks.", state)
    decoder_keys = [k for k in ours if k.startswith("mae.decoder") and "pos_embed" not in k]
    decoder_loaded = [k for k in decoder_keys if k in take]
    if not decoder_loaded:
        report.missing_parts.append("decoder (train it: maefuse-train --stage decoder)")
    elif file_decoder_depth != config.decoder_depth or len(decoder_loaded) != len(decoder_keys):
        report.missing_parts.append(
            f"a trained {config.decoder_depth}-block decoder (the file has {file_decoder_depth} blocks; the "
            f"first {min(file_decoder_depth, config.decoder_depth)} were loaded as a warm start: "
            "maefuse-train --stage decoder)"
        )
    report.missing_parts.append("fusion layer (train it: maefuse-train --stage align, then fuse)")
    if ignored:
        report.notes.append(f"ignored {len(ignored)} tensors ({', '.join(sorted(ignored)[:3])}...)")
    if layout == "upstream-mae":
        report.notes.append("class token dropped; sin-cos tables regenerated for the token grid")


def load_checkpoint(
    path: str | os.PathLike[str],
    config: MaeFuseConfig | str | None = None,
    *,
    allow_partial: bool = False,
    allow_warm_start: bool = False,
    trust_pickle: bool = False,
) -> tuple[MaeFuse, LoadReport]:
    """Load any supported checkpoint into a new MaeFuse (eval mode, float32, CPU).

    Complete layouts (ours, the released fusion file) load strictly: every missing, unexpected or mis-shaped key
    is an error. MAE-only files need ``allow_partial=True`` (training), since the result cannot fuse yet.
    ``allow_warm_start=True`` (training's --init) lets one of our files saved for a config that differs from
    ``config`` only in head counts or a whole-factor patch size start that config (:func:`resample.warm_start`).
    """
    path = Path(path)
    state, metadata = read_state(path, trust_pickle=trust_pickle)
    layout = detect_layout(state, metadata)
    if isinstance(config, str):
        config = get_config(config)
    if layout == "maefuse":
        stored = metadata.get(CONFIG_KEY)
        stored_config = MaeFuseConfig.from_dict(json.loads(stored)) if stored else None
        if config is None:
            if stored_config is None:
                raise CheckpointError(f"checkpoint {path} stores no model config", fix="name it with --config")
            config = stored_config
        elif stored_config is not None:
            if allow_warm_start and not stored_config.same_network(config):
                model, report = load_checkpoint(path, stored_config, trust_pickle=trust_pickle)
                model, note = warm_start(model, config.replace(policy=stored_config.policy))
                report.notes.append(note)
                return model, report
            if not stored_config.same_network(config):
                raise CheckpointError(
                    f"checkpoint {path} was saved for {stored_config.name}, not {config.name}",
                    fix=f"use --config {stored_config.name} or the checkpoint trained for {config.name}",
                )
            # The weights know what preprocessing they were trained for; the named config does not.
            config = config.replace(policy=stored_config.policy)
    elif config is None:
        config = infer_config(state, layout)
    released = layout == "released-fused"
    if layout not in ("released-mae", "upstream-mae"):
        # Shapes first, on a skeleton without memory: a config that lies (a forged header asking for a huge
        # network) is refused before anything is allocated.
        with torch.device("meta"):
            expected = MaeFuse(config).state_dict()
        _check_strict(_rename(expected, to_ours=False) if released else expected, state, path, config)
    model = build_model(config)
    report = LoadReport(path=str(path), layout=layout)
    if layout in ("released-mae", "upstream-mae"):
        if not allow_partial:
            _load_partial_mae(model, state, layout, report)  # validates the encoder before refusing
            raise CheckpointError(
                f"checkpoint {path} is an MAE file ({layout}) without a trained fusion layer: "
                f"missing {'; '.join(report.missing_parts)}",
                fix="fuse with a MaeFuse checkpoint, or train from this file with maefuse-train",
            )
        _load_partial_mae(model, state, layout, report)
        return model, report
    model.load_state_dict(_rename(state, to_ours=True) if released else state, strict=True)
    report.loaded = len(state)
    return model.eval(), report


def save_checkpoint(model: MaeFuse, path: str | os.PathLike[str], extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors (float32 as held) with its config in the metadata, atomically."""
    path = Path(path)
    metadata = {FORMAT_KEY: FORMAT_VERSION, CONFIG_KEY: model.config.to_json(), "maefuse.toolkit_version": __version__}
    metadata.update(extra or {})
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path
