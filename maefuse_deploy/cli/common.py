"""What every command shares: one-line errors with the right exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import MaeFuseError

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(command: F) -> F:
    """Turn a MaeFuseError into ``error: <one line>`` on stderr and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MaeFuseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def note(message: str) -> None:
    click.echo(message, err=True)
