"""Device names: ``auto`` (the default of every command), ``cpu``, ``cuda``, ``cuda:N``."""

from __future__ import annotations

from ..contract import parse_device
from ..errors import UnavailableError


def cuda_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str | None = "auto") -> str:
    """``auto``/None -> ``cuda`` when torch sees a GPU, else ``cpu``; other names are checked and returned.

    A one-line :class:`InputError` for a name that is not a device, :class:`UnavailableError` for ``cuda`` on a
    machine without a GPU (asking for a GPU and silently getting the CPU would hide a broken install).
    """
    kind, index = parse_device(device)
    name = kind if index is None else f"{kind}:{index}"
    if name == "auto":
        return "cuda" if cuda_visible() else "cpu"
    if name.startswith("cuda") and not cuda_visible():
        raise UnavailableError(
            f"device {name} requested but torch sees no CUDA GPU", fix="use --device cpu (or auto) or a GPU machine"
        )
    return name
