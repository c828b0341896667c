"""maefuse-deploy: MaeFuse infrared/visible fusion from weights to production camera pipelines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Fuser", "MaeFuseError", "__version__"]

from .errors import MaeFuseError
from .version import __version__

if TYPE_CHECKING:
    from .runtime.fuser import Fuser


def __getattr__(name: str) -> Any:
    # Fuser pulls in torch; keep `import maefuse_deploy` cheap for tools that only need metrics or errors.
    if name == "Fuser":
        from .runtime.fuser import Fuser

        return Fuser
    raise AttributeError(name)
