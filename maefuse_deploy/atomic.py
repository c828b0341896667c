"""Write files so that a crash or an error never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary name keeps ``target``'s suffix (or ``suffix``) so that writers which pick a format by extension
    (OpenCV, onnx) behave as they would for the real name.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=parent
        )
    except OSError as exc:
        raise InputError(
            f"cannot write {target}: {exc.strerror or exc}", fix="choose a writable output folder"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError as exc:  # e.g. the target is a folder: the work is done but cannot be put in place
            raise InputError(
                f"cannot write {target}: {exc.strerror or exc}", fix="name a file (not a folder) in a writable folder"
            ) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def check_writable(target: str | os.PathLike[str], what: str = "output") -> None:
    """Refuse, before any work is done, an output path that cannot become a file: an existing folder, or a path
    whose nearest existing parent is not a writable folder. ``what`` names the option in the error."""
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{what} {target} is a folder", fix="name a file to write, e.g. " + str(target / "out"))
    parent = target.parent if str(target.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {target}: {parent} is not a folder", fix="choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {target}: {parent} is not writable", fix="choose a writable folder")
