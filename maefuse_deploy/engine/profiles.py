"""The batch range an engine is optimised for: ``--batch MIN:OPT:MAX`` or a single ``N``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError

_FIX = "give --batch as MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:1:8), or one batch size N"


@dataclass(frozen=True)
class BatchProfile:
    """One TensorRT optimisation profile over the batch axis; the engine accepts any batch in [min, max]."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise InputError(f"batch sizes must be integers, got {values}", fix=_FIX)
        if self.min < 1:
            raise InputError(f"batch sizes must be at least 1, got {self.min}:{self.opt}:{self.max}", fix=_FIX)
        if not self.min <= self.opt <= self.max:
            raise InputError(
                f"batch profile {self.min}:{self.opt}:{self.max} is not ordered MIN <= OPT <= MAX", fix=_FIX
            )

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchProfile:
        return cls(int(data["min"]), int(data["opt"]), int(data["max"]))


def parse_batch(text: str) -> BatchProfile:
    """``"1:4:8"`` -> (1, 4, 8); ``"8"`` -> a static batch of 8 (8, 8, 8)."""
    parts = text.strip().split(":")
    if len(parts) not in (1, 3):
        raise InputError(f"cannot read --batch {text!r}", fix=_FIX)
    try:
        values = [int(part, 10) for part in parts]
    except ValueError:
        raise InputError(f"--batch {text!r} holds something that is not an integer", fix=_FIX) from None
    if len(values) == 1:
        values *= 3
    return BatchProfile(*values)
