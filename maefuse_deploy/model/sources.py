"""Where torch weights come from: a checkpoint file, a config name (random weights), or the built-in default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .checkpoint import load_checkpoint
from .config import CONFIGS, MaeFuseConfig
from .maefuse import MaeFuse, build_model

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "maefuse-tiny.safetensors"
DEFAULT_CONFIG = "maefuse-tiny"
RANDOM_SEED = 0


@dataclass
class ModelSource:
    """A resolved model: the module (torch sources) and what a user should be told about it."""

    description: str
    model: MaeFuse | None = None
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def resolve_torch_model(
    source: str | os.PathLike[str] | None, config: MaeFuseConfig | str | None = None
) -> ModelSource:
    """A checkpoint path, a config name (random weights) or None (the shipped default) -> a MaeFuse module.

    ``config`` names the config of a checkpoint that does not record one; with no checkpoint it would be silently
    ignored, so it is refused.
    """
    if source is None and config is not None:
        name = config if isinstance(config, str) else config.name
        raise InputError(
            f"--config {name} without a checkpoint: the config only describes a checkpoint's weights",
            fix=f"pass --model FILE with it, or --model {name} for random weights of that config",
        )
    if source is None:
        if DEFAULT_WEIGHTS.is_file():
            model, report = load_checkpoint(DEFAULT_WEIGHTS)
            return ModelSource(f"built-in {model.config.name} ({DEFAULT_WEIGHTS.name})", model, DEFAULT_WEIGHTS)
        source = DEFAULT_CONFIG
    if str(source) in CONFIGS:
        model = build_model(CONFIGS[str(source)], seed=RANDOM_SEED)
        return ModelSource(
            f"{source} with RANDOM weights (seed {RANDOM_SEED})",
            model,
            warnings=[
                f"{source} has random weights: the output shows the pipeline working, not a real fusion; "
                "pass --model with trained weights"
            ],
        )
    path = Path(source)
    if not path.exists():
        raise InputError(
            f"checkpoint not found: {path}",
            fix=f"pass a checkpoint file, or one of the configs {', '.join(sorted(CONFIGS))}",
        )
    model, report = load_checkpoint(path, config)
    return ModelSource(report.summary(), model, path)
