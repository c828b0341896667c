"""The backend interface moved to :mod:`maefuse_deploy.backends.base` (the io-mode contract is documented there).

``Backend`` stays importable under its old name for code written against it; new backends subclass
:class:`~maefuse_deploy.backends.base.BackendBase` and add one entry to the registry.
"""

from __future__ import annotations

from ..backends.base import BackendBase as Backend
from ..backends.base import IoMode

__all__ = ["Backend", "IoMode"]
