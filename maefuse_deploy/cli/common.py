"""What every command shares: one-line errors with the right exit code."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import MaeFuseError

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(command: F) -> F:
    """Turn a MaeFuseError into ``error: <one line>`` on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except MaeFuseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
    """Library warnings (a frame resized to fit a graph, ...) as one ``warning: ...`` line, without source lines."""
    click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    click.echo(message, err=True)
