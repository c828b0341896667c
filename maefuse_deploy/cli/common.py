"""What every command shares: one-line errors with the right exit code."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click
import cv2

from ..errors import MaeFuseError

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(command: F) -> F:
    """Turn a MaeFuseError into ``error: <one line>`` on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        # FFmpeg and OpenCV print their own log lines ("[mov,mp4,... @ 0x...] moov atom not found") straight to
        # stderr around the one line a command says about the same file: keep them quiet unless the user asked
        # for them (read when the first capture opens).
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        if "OPENCV_LOG_LEVEL" not in os.environ:  # read at import: set OpenCV's level itself
            _opencv_errors_only()
        try:
            return command(*args, **kwargs)
        except MaeFuseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _opencv_errors_only() -> None:
    """OpenCV's own log at error level: ``cv2.utils.logging`` in OpenCV 5, ``cv2.setLogLevel`` in OpenCV 4 (the
    serving venv's, docs/serving.md), where level 2 is the same ERROR."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)


def _show_warning(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
    """Library warnings (a frame resized to fit a graph, ...) as one ``warning: ...`` line, without source lines."""
    click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    click.echo(message, err=True)


def note_model(fuser: Any, detail: str = "") -> None:
    """What every fusing command says before it starts: the backend ``auto`` chose and why, the model line
    (``detail`` appended) and the model's warnings. A RemoteFuser has no local backend: the server chose it."""
    backend = getattr(fuser, "backend", None)
    if backend is not None and backend.chosen:
        note(backend.chosen)
    note(f"model: {fuser.description}{detail}")
    for warning in fuser.warnings:
        note(f"warning: {warning}")


def note_backend_events(fuser: Any) -> None:
    """What the backend did on each frame size's first use (a compile, a cache hit), once the work is done."""
    backend = getattr(fuser, "backend", None)
    for event in backend.events if backend is not None else ():
        note(event)
