"""Export presets: named export recipes (resolution, batch, precision, io) shipped as package data.

A preset is a JSON object with any of ``height``, ``width``, ``batch`` ("N" or "MIN:OPT:MAX"), ``precision``,
``io``, ``camera_size`` ("WxH") and a ``description``. ``maefuse-export --preset NAME`` looks for
``export/NAME.json`` under the working directory first (a project's own recipes), then among the presets
installed with the package (``maefuse_deploy/export/presets/``), so the lookup works from an installed wheel.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..contract import parse_json
from ..errors import InputError

PACKAGE_PRESETS = "presets"
PRESET_KEYS = frozenset({"description", "height", "width", "batch", "precision", "io", "camera_size"})


def _candidates(name: str) -> list[Any]:
    """Where a preset may live, in lookup order (read at call time: the working directory may change)."""
    return [Path.cwd() / "export" / f"{name}.json", resources.files(__package__) / PACKAGE_PRESETS / f"{name}.json"]


def preset_names() -> list[str]:
    """Every preset name found: the working directory's export/ folder and the package's presets."""
    names = {p.name[: -len(".json")] for p in (resources.files(__package__) / PACKAGE_PRESETS).iterdir()
             if p.name.endswith(".json")}
    local = Path.cwd() / "export"
    if local.is_dir():
        names |= {p.stem for p in local.glob("*.json")}
    return sorted(names)


def load_preset(name: str) -> dict[str, Any]:
    """The recipe called ``name`` as a dict of the keys above; an unknown name or key raises InputError."""
    for candidate in _candidates(name):
        if candidate.is_file():
            try:
                recipe = parse_json(candidate.read_text())
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise InputError(f"export preset {candidate} is not valid JSON ({exc})", fix="fix the file") from None
            unknown = set(recipe) - PRESET_KEYS
            if unknown:
                raise InputError(
                    f"export preset {candidate} has unknown keys {', '.join(sorted(unknown))}",
                    fix=f"use only {', '.join(sorted(PRESET_KEYS))}",
                )
            return recipe
    raise InputError(f"unknown export preset {name!r}", fix=f"use one of {', '.join(preset_names()) or '(none)'}")
