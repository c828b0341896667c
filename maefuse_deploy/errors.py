"""User-facing errors.

Every failure a user can cause (a missing file, a wrong checkpoint, an engine for another GPU) is raised as a
:class:`MaeFuseError` whose message is one line naming the file and the fix. The CLI prints that line and exits
with ``exit_code``; library callers can catch the class.

Exit codes of every command: 0 success; 1 a MaeFuseError (bad input, checkpoint, failed verification); 2 a
usage error (click: unknown option, missing argument); 3 a missing optional dependency or device
(:class:`UnavailableError`: TensorRT, a CUDA GPU); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations


class MaeFuseError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        text = " ".join(message.split())
        if fix:
            text = f"{text} (fix: {' '.join(fix.split())})"
        super().__init__(text)


class InputError(MaeFuseError):
    """An image, folder or pairing the toolkit cannot use."""


class CheckpointError(MaeFuseError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class UnavailableError(MaeFuseError):
    """An optional dependency or device (TensorRT, a CUDA GPU) is not present."""

    exit_code = 3  # distinct from click's usage errors (2)


class VerificationError(MaeFuseError):
    """An exported or built artefact failed its numerical check against the reference."""


class NonFiniteError(VerificationError):
    """A network produced NaN or infinity (float16 overflow, broken weights): its images would be garbage."""
