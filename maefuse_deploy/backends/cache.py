"""An on-disk cache of models a backend compiled or quantized, so that the second start is fast.

An entry is a folder named by the digest of what makes its content (the weights' hash, input shape, precision,
calibration) holding the backend's files and ``entry.json``: those fields, the library versions that built it and
every file's SHA-256. Nothing is trusted that does not check out: an entry whose ``entry.json`` or files are
missing, unreadable or changed (corrupt), or that another library version built (stale), is rebuilt and replaced,
and the reason is returned for the caller to say. Entries are built in a temporary folder and renamed into place,
so a crash or a concurrent build never leaves a half-written entry under the final name (docs/reliability.md).

Location: ``$MAEFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/maefuse-deploy``, else ``~/.cache/maefuse-deploy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import TEMP_PREFIX, check_writable, process_alive, umask
from ..errors import InputError
from ..hashing import file_sha256

CACHE_ENV = "MAEFUSE_CACHE_DIR"
ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 1
_TEMP_DIR = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


def cache_root() -> Path:
    """Where compiled models are cached (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maefuse-deploy"


@dataclass(frozen=True)
class CacheKey:
    """``identity``: what the content depends on (names the entry); ``versions``: the libraries that built it
    (an entry another version built is stale)."""

    kind: str
    identity: tuple[tuple[str, str], ...]
    versions: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        text = json.dumps([self.kind, list(self.identity)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def folder_name(self) -> str:
        return f"{self.kind}-{self.digest}"


@dataclass(frozen=True)
class CacheResult:
    """An entry ready to read: its folder, and ``status`` = ``hit``, ``built (no entry)``, ``rebuilt (stale:
    ...)`` or ``rebuilt (corrupt: ...)``."""

    folder: Path
    status: str
    notes: dict[str, str]

    @property
    def hit(self) -> bool:
        return self.status == "hit"


class ModelCache:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def require_writable(self) -> None:
        """Refuse a cache root that cannot take files, in the one line every cache failure gives. A backend calls
        it before handing a folder under the root to a library (OpenVINO's blob cache fails in C++, as a traceback)."""
        try:
            check_writable(self.root / ENTRY_FILE, "the model cache")
        except InputError as exc:
            raise InputError(f"cannot write the model cache {self.root}",
                             fix=f"set {CACHE_ENV} to a writable folder") from exc

    def check(self, key: CacheKey) -> tuple[Path | None, str]:
        """(the entry's folder, "hit") when it checks out, else (None, why not: no entry / stale / corrupt)."""
        folder = self.root / key.folder_name
        if not folder.exists():
            return None, "no entry"
        try:
            entry = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            return None, f"corrupt: {ENTRY_FILE} unreadable ({exc.__class__.__name__})"
        if entry.get("format") != ENTRY_FORMAT or entry.get("kind") != key.kind:
            return None, "stale: written by another toolkit version"
        if entry.get("identity") != [list(pair) for pair in key.identity]:
            return None, "corrupt: its fields do not match its name"
        if entry.get("versions") != [list(pair) for pair in key.versions]:
            built = ", ".join(f"{name} {value}" for name, value in entry.get("versions") or [])
            return None, f"stale: built by {built or 'unknown versions'}"
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            return None, "corrupt: no file list"
        for name, digest in files.items():
            path = folder / name
            if not path.is_file():
                return None, f"corrupt: {name} missing"
            if file_sha256(path) != digest:
                return None, f"corrupt: {name} changed since it was written"
        return folder, "hit"

    def get_or_build(self, key: CacheKey, build: Callable[[Path], dict[str, str]]) -> CacheResult:
        """The entry for ``key``: checked and reused, or built now by ``build(folder)`` (writes its files into
        ``folder`` and returns notes to keep with them, e.g. a measured accuracy) and stored."""
        folder, why = self.check(key)
        if folder is not None:
            entry = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
            return CacheResult(folder, "hit", dict(entry.get("notes") or {}))
        self._remove_leftovers()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f"-{key.folder_name}",
                                        dir=self.root))
        except OSError as exc:
            raise InputError(f"cannot write the model cache {self.root}: {exc.strerror or exc}",
                             fix=f"set {CACHE_ENV} to a writable folder") from exc
        try:
            tmp.chmod(0o777 & ~umask())  # mkdtemp's 0700 would hide the entry from the other users of a cache
            notes = build(tmp)
            files = {path.name: file_sha256(path) for path in sorted(tmp.iterdir()) if path.is_file()}
            entry = {"format": ENTRY_FORMAT, "kind": key.kind, "identity": [list(p) for p in key.identity],
                     "versions": [list(p) for p in key.versions], "files": files, "notes": notes}
            (tmp / ENTRY_FILE).write_text(json.dumps(entry, indent=1, sort_keys=True), encoding="utf-8")
            target = self.root / key.folder_name
            if target.exists():  # the stale or corrupt entry (or one a concurrent run just finished): replace it
                shutil.rmtree(target, ignore_errors=True)
            try:
                tmp.rename(target)
            except OSError:
                if self.check(key)[0] is None:  # not a concurrent run's good entry: a real failure
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        status = "built (no entry)" if why == "no entry" else f"rebuilt ({why})"
        return CacheResult(target, status, notes)

    def remove(self, key: CacheKey) -> None:
        """Drop ``key``'s entry (one its reader found unusable), so that the next get_or_build rebuilds it."""
        shutil.rmtree(self.root / key.folder_name, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Temporary folders of builds whose process died (killed mid-build) go; live builds stay."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            match = _TEMP_DIR.match(path.name)
            if match is None or not path.is_dir() or process_alive(int(match.group(1))):
                continue
            shutil.rmtree(path, ignore_errors=True)
