"""Write files so that a crash or an error never leaves a half-written result behind.

Every temporary file the toolkit writes is named ``.maefuse-tmp-<pid>-<random>-<final name>`` and sits beside its
final name (same folder, same filesystem, so the final rename is atomic). The prefix and the writer's process id
let a later run recognise -- and remove -- what a killed run left behind, without touching anything else.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError

TEMP_PREFIX = ".maefuse-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask alone must set it to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_temp_file(target: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """Create an empty temporary file beside ``target`` (creating its folder) and return its path.

    The name keeps ``target``'s suffix (or ``suffix``) so that writers which pick a format by extension (OpenCV,
    onnx) behave as they would for the real name. Its permissions are those of an ordinary new file (0666 less
    the umask: 0644 by default), not mkstemp's 0600, so the renamed result is readable like any other output.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    stem = target.name if suffix is None else target.stem + suffix
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f"-{stem}", dir=parent)
    except OSError as exc:
        raise InputError(
            f"cannot write {target}: {exc.strerror or exc}", fix="choose a writable output folder"
        ) from exc
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(name)


def move_into_place(tmp: Path, target: str | os.PathLike[str]) -> None:
    """Rename ``tmp`` onto ``target`` (atomically); a failure names the target and removes ``tmp``."""
    try:
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise InputError(
            f"cannot write {target}: {exc.strerror or exc}",
            fix="name a file (not a folder) in a writable folder",
        ) from exc


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    tmp = new_temp_file(target, suffix)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # Some writers replace the file instead of filling it (safetensors creates its own, 0600): set the mode again.
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o666 & ~umask())
    move_into_place(tmp, target)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that dead toolkit processes left in ``folder``; return what was removed.

    Only names with our prefix whose writer process no longer exists are touched: files in progress (in this
    process or a concurrent run) and every other file stay.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
    return removed


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
    # os.access answers from the permission bits, which root passes everywhere: a read-only mount or a pseudo
    # file system (/proc, /sys) would only refuse the file after the work. Creating one of our temporary files
    # there (and removing it at once) asks the file system itself.
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix="-probe", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write {what} {target}: {parent} refuses new files ({exc.strerror or exc})",
                         fix="choose a writable folder") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def lies_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """``path`` is ``folder`` or lies below it, both resolved (links followed): the one test of an output against
    a folder a command reads."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def check_output(
    target: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    what: str = "output",
) -> None:
    """The one output rule of every command that writes a file, applied before any work is done.

    Refuses, with one line naming the option and the fix: an output that is one of ``inputs`` (the same path, or
    the same file through a link) or lies inside an input folder (``--overwrite`` would let it replace a file the
    command reads), an existing file unless ``overwrite``, a folder, and a path that cannot be created
    (:func:`check_writable`). ``what`` names the option (``--out``, ``--onnx``, ``-o``). Inputs that are not paths
    (model names) match nothing.
    """
    target = Path(target)
    sources = [Path(source) for source in inputs if source is not None]
    for source in sources:
        if _same_file(target, source):
            raise InputError(f"{what} {target} is also an input ({source}): writing it would destroy the input",
                             fix=f"choose another {what} path")
    for source in sources:  # the folder itself was refused just above, as the same file
        if source.is_dir() and lies_within(target, source):
            raise InputError(f"{what} {target} lies inside the input folder {source}",
                             fix=f"write {what} outside the folders the command reads")
    check_writable(target, what)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise InputError(f"{what} {target} already exists",
                         fix="pass --overwrite to replace it, or choose another path")
