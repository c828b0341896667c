"""Where torch weights come from: a checkpoint file, a config name (random weights), or the built-in default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..contract import RANDOM_PREFIX
from ..errors import InputError
from .checkpoint import load_checkpoint
from .config import CONFIGS, MaeFuseConfig
from .maefuse import MaeFuse, build_model

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# The built-in model: maefuse-rt-linear, real time on CPUs without BF16 units too (MODEL_CARD.md); maefuse-rt (its
# softmax-attention teacher) and maefuse-tiny stay available by name.
DEFAULT_CONFIG = "maefuse-rt-linear"
DEFAULT_WEIGHTS = WEIGHTS_DIR / f"{DEFAULT_CONFIG}.safetensors"
RANDOM_SEED = 0
# Model names that mean trained weights shipped with the package.
TRAINED_MODELS = {name: WEIGHTS_DIR / f"{name}.safetensors" for name in (DEFAULT_CONFIG, "maefuse-rt", "maefuse-tiny")}
TRAINED_NAMES = ", ".join(TRAINED_MODELS)  # for help texts


@dataclass
class ModelSource:
    """A resolved model: the module (torch sources) and what a user should be told about it."""

    description: str
    model: MaeFuse
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def trained_weights(source: str | os.PathLike[str]) -> Path:
    """A trained model's name (:data:`TRAINED_MODELS`) -> its shipped weights file; any other source as a path."""
    name = str(source)
    if name in TRAINED_MODELS and not Path(name).exists():
        return TRAINED_MODELS[name]
    return Path(source)


def resolve_torch_model(
    source: str | os.PathLike[str] | None, config: MaeFuseConfig | str | None = None
) -> ModelSource:
    """A checkpoint path, a trained model's name, ``random:CONFIG`` or None (the built-in model) -> a MaeFuse module.

    A model name means trained weights (:data:`TRAINED_MODELS`: shipped ones); random weights are asked for
    explicitly (``random:maefuse-micro``) so that nobody gets them by accident. ``config`` names the config of a
    checkpoint that does not record one; with no checkpoint it would be silently ignored, so it is refused.
    """
    if source is None and config is not None:
        name = config if isinstance(config, str) else config.name
        raise InputError(
            f"--config {name} without a checkpoint: the config only describes a checkpoint's weights",
            fix=f"pass --model FILE with it, or --model {RANDOM_PREFIX}{name} for random weights of that config",
        )
    name = str(source) if source is not None else DEFAULT_CONFIG
    if name in TRAINED_MODELS and not Path(name).exists():
        weights = TRAINED_MODELS[name]
        if not weights.is_file():
            raise InputError(f"the built-in weights {weights} are missing", fix="reinstall maefuse-deploy")
        model, report = load_checkpoint(weights)
        kind = "built-in" if weights == DEFAULT_WEIGHTS else "shipped"
        return ModelSource(f"{kind} {model.config.name} ({weights.name})", model, weights)
    if name.startswith(RANDOM_PREFIX):
        config_name = name[len(RANDOM_PREFIX) :]
        if config_name not in CONFIGS:
            raise InputError(f"unknown model config {config_name!r} in {name!r}",
                             fix=f"use random:{' or random:'.join(sorted(CONFIGS))}")
        model = build_model(CONFIGS[config_name], seed=RANDOM_SEED)
        return ModelSource(
            f"{config_name} with RANDOM weights (seed {RANDOM_SEED})",
            model,
            warnings=[
                f"{config_name} has random weights: the output shows the pipeline working, not a real fusion; "
                "pass --model with trained weights"
            ],
        )
    if name in CONFIGS and not Path(name).exists():
        raise InputError(
            f"{name} is a model configuration without shipped trained weights",
            fix=f"pass a checkpoint file, a trained model ({', '.join(TRAINED_MODELS)}), or {RANDOM_PREFIX}{name} "
            "for random weights",
        )
    path = Path(name)
    if not path.exists():
        raise InputError(
            f"checkpoint not found: {path}",
            fix=f"pass a checkpoint file, a trained model ({', '.join(TRAINED_MODELS)}), or random:CONFIG for "
            f"random weights ({', '.join(sorted(CONFIGS))})",
        )
    model, report = load_checkpoint(path, config)
    return ModelSource(report.summary(), model, path)
