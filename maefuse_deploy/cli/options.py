"""One vocabulary for every maefuse command: the shared click options, their types and their old spellings.

* ``--model``/``-m``: what runs: a checkpoint, an ``.onnx`` graph, a TensorRT engine or a config name
  (fuse, export, bench, build-engine);
* ``--batch-size N``: how many pairs per call (fuse, train);
* ``--batch-range MIN:OPT:MAX`` (or ``N``): the batch axis of a graph or an engine profile (export, build-engine);
* ``--batches 1,4,8``: the benchmark's sweep of batch sizes (bench);
* ``--device auto|cpu|cuda|cuda:N``: where it runs, checked before anything loads (fuse, bench, build-engine,
  train);
* ``--processing official|native``: the pre/post-processing policy (fuse, stream, serve, train);
* ``--int8-calibration DIR`` / ``--int8-calibration-pairs N``: real pairs an int8 quantization calibrates on
  (fuse, bench) -- not the IR-to-VIS calibration, which is ``--homography``;
* ``WIDTHxHEIGHT`` sizes, read by ``contract.parse_frame_size`` (export, bench, calibrate).

Old spellings (``--checkpoint``/``-c``, the four meanings of ``--batch``, ``--dynamic-batch``, an integer
``--device``, ``--policy`` and ``--preprocess`` for ``--processing``, ``--calibration`` for ``--int8-calibration``)
still work, hidden from ``--help``, with a deprecation note on stderr. The CLI only parses: the
library resolves what a value names (``Fuser.from_checkpoint``, ``contract.parse_batch_profile``, ...).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..contract import DEVICE_FORMS, parse_device
from ..errors import InputError
from ..processing import POLICIES

F = TypeVar("F", bound=Callable[..., Any])

_BATCH_RANGE = re.compile(r"^\d+(:\d+:\d+)?$")
_BATCHES = re.compile(r"^\d+(,\d+)*$")


class OptionError(click.ClickException):
    """A malformed option value: a usage error (exit code 2, as click's own), printed like every other error:
    ``error: ...`` on one line."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def deprecated(old: str, new: str) -> None:
    click.echo(f"note: {old} is deprecated; use {new}", err=True)


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a bare integer N (the old build-engine spelling) means cuda:N."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if text.isdigit():
            deprecated(f"--device {text}", f"--device cuda:{text}")
            return f"cuda:{text}"
        try:
            kind, index = parse_device(text)
        except InputError:
            raise OptionError(f"--device {value!r} is not a device (fix: use {DEVICE_FORMS})") from None
        return kind if index is None else f"{kind}:{index}"


class BatchRangeType(click.ParamType):
    """``N`` (a fixed batch) or ``MIN:OPT:MAX`` (a dynamic batch axis); the library checks the ordering."""

    name = "batch-range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not _BATCH_RANGE.match(text):
            raise OptionError(f"--batch-range {value!r} is not N or MIN:OPT:MAX (fix: e.g. 1 or 1:4:8)")
        return text


class BatchesType(click.ParamType):
    """A comma list of batch sizes, e.g. ``1,4,8``."""

    name = "batches"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).replace(" ", "")
        if not _BATCHES.match(text):
            raise OptionError(f"--batches {value!r} is not a comma list of batch sizes (fix: e.g. 1,4,8)")
        return text


DEVICE = DeviceType()
BATCH_RANGE = BatchRangeType()
BATCHES = BatchesType()
BATCH_SIZE = click.IntRange(min=1)


def _shared(command: F, param: str, decls: tuple[str, ...], help: str, default: Any = None,
            aliases: tuple[tuple[str, tuple[str, ...], Any], ...] = (), **option: Any) -> F:
    """Add the option ``decls`` (value ``param``) and, hidden, its old spellings ``aliases`` (param name, decls,
    type). An old spelling fills ``param`` with a deprecation note; the new spelling wins when both are given.
    ``default`` is applied after that, so an old spelling is never masked by the new option's default."""
    new_spelling = decls[0]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for old_param, old_decls, _ in aliases:
            old = kwargs.pop(old_param, None)
            if old is not None:
                deprecated(old_decls[0], new_spelling)
                if kwargs.get(param) is None:
                    kwargs[param] = old
        if kwargs.get(param) is None:
            kwargs[param] = default
        return command(*args, **kwargs)

    decorated: Any = wrapper
    for old_param, old_decls, old_type in aliases:
        decorated = click.option(*old_decls, old_param, type=old_type, hidden=True)(decorated)
    shown = f"{help} [default: {default}]" if default is not None and "[default" not in help else help
    return click.option(*decls, param, default=None, help=shown, **option)(decorated)


def model_option(help: str, *, checkpoint_alias: bool = True, default: str | None = None) -> Callable[[F], F]:
    """``--model``/``-m``: a checkpoint, .onnx graph, engine or config name; ``--checkpoint``/``-c`` kept as an
    alias where a command had it."""
    aliases = (("checkpoint_alias", ("--checkpoint", "-c"), None),) if checkpoint_alias else ()
    return lambda command: _shared(command, "model", ("--model", "-m"), help, default, aliases)


def batch_size_option(default: int | None, help: str = "pairs per call", *,
                      batch_alias: bool = False) -> Callable[[F], F]:
    """``--batch-size N``; ``--batch N`` kept as an alias where it meant that."""
    aliases = (("batch_alias", ("--batch",), BATCH_SIZE),) if batch_alias else ()
    return lambda command: _shared(command, "batch_size", ("--batch-size",), help, default, aliases, type=BATCH_SIZE)


def batch_range_option(help: str, *, batch_alias: bool = False, dynamic_alias: bool = False) -> Callable[[F], F]:
    """``--batch-range MIN:OPT:MAX`` or ``N``; ``--batch`` and ``--dynamic-batch`` kept as aliases where they
    meant that (the dynamic spelling wins over the static one, as before)."""
    aliases = ((("dynamic_batch_alias", ("--dynamic-batch",), BATCH_RANGE),) if dynamic_alias else ()) + (
        (("batch_alias", ("--batch",), BATCH_RANGE),) if batch_alias else ())
    return lambda command: _shared(command, "batch_range", ("--batch-range",), help, None, aliases,
                                   type=BATCH_RANGE, metavar="MIN:OPT:MAX")


def batches_option(default: str, help: str = "comma list of batch sizes to measure") -> Callable[[F], F]:
    """``--batches 1,4,8``; ``--batch 1,4,8`` kept as an alias (maefuse-bench)."""
    aliases = (("batch_alias", ("--batch",), BATCHES),)
    return lambda command: _shared(command, "batches", ("--batches",), help, default, aliases, type=BATCHES,
                                   metavar="LIST")


PROCESSING_HELP = ("official: the release's resize to the model size; native: pad to the patch size, no resize "
                   "[default: the policy the weights were trained for]")


def processing_option(help: str = PROCESSING_HELP, *, old: str | None = "--policy") -> Callable[[F], F]:
    """``--processing official|native``; ``old`` (``--policy`` in fuse and serve, ``--preprocess`` in train) kept
    as an alias."""
    choice = click.Choice(POLICIES)
    aliases = (("processing_alias", (old,), choice),) if old else ()
    return lambda command: _shared(command, "processing", ("--processing",), help, None, aliases, type=choice)


def int8_calibration_option(help: str) -> Callable[[F], F]:
    """``--int8-calibration DIR``: real pairs (ir/, vi/) an int8 quantization calibrates on; ``--calibration``
    kept as an alias (the word alone also names the IR-to-VIS calibration of maefuse-calibrate)."""
    path = click.Path(path_type=Path)
    return lambda command: _shared(command, "int8_calibration", ("--int8-calibration",), help, None,
                                   (("calibration_alias", ("--calibration",), path),), type=path, metavar="DIR")


BACKEND_HELP = ("auto: the fastest installed for the model on --device (CPU: OpenVINO, weights converted per frame "
                "size at the fastest precision within 40 dB of float32 and cached; GPU: torch; engines: TensorRT; "
                "docs/backends.md), or name one")


def backend_option() -> Callable[[F], F]:
    """``--backend``, the Fuser's choices, default ``auto`` (maefuse_deploy.backends.choose_backend decides)."""
    from ..backends.registry import AUTO, FUSER_BACKENDS

    return click.option("--backend", type=click.Choice(FUSER_BACKENDS), default=AUTO, show_default=True,
                        help=BACKEND_HELP)


def device_option(default: str | None, help: str) -> Callable[[F], F]:
    """``--device auto|cpu|cuda|cuda:N``, validated before anything loads."""
    return lambda command: _shared(command, "device", ("--device",), f"{DEVICE_FORMS}: {help}", default, (),
                                   type=DEVICE)


def auto_device(device: str) -> str:
    """``auto`` -> ``cuda`` where torch sees a GPU, else ``cpu``; a named device checked (``cuda`` on a machine
    without a GPU: UnavailableError, exit 3, before any work). For the commands whose library does not resolve the
    device itself; the one resolver is maefuse_deploy.backends.resolve_device."""
    from ..backends.devices import resolve_device

    return resolve_device(device)
