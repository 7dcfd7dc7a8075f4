"""The error every user-facing failure raises: its message is the one line the user sees."""

import logging
from typing import Any

_WARNED: set[tuple[str, Any]] = set()  # what warn_once has said in this process


class FmnistError(Exception):
    """A failure the user can act on; the CLI prints its message and exits non-zero."""


class ErrorsPerInput(FmnistError):
    """The errors of several inputs, a line each (``fmnist predict`` given only files it cannot read); ``failures``
    names each input beside its error."""

    def __init__(self, failures: list[dict[str, str]]) -> None:
        self.failures = failures
        self.errors = [failure["error"] for failure in failures]
        super().__init__("\n".join(self.errors))


class UsageError(FmnistError):
    """A command line of the wrong shape, found once its arguments are looked up: answered as argparse answers one
    (the command's usage, exit status 2)."""


class WriteRefused(FmnistError):
    """A file the system would not let fmnist write (a full disk, a folder made read-only): the input's fault no more
    than the settings', so the same command works once the system lets it."""


class DamagedFile(FmnistError):
    """A file of ours whose content fmnist never writes (cut short, edited): rewriting it mends it, unlike a file
    the system will not let us read."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), to quote in one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def error_text(exc: BaseException) -> str:
    """An error as its one line says it: an OSError by the system's reason and its file, another by its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return first_line(exc)


def one_line(message: str) -> str:
    """``message`` on one line: a character that would break it (a newline in a path given) written as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def warn_once(log: logging.Logger, about: Any, message: str, *args: Any) -> None:
    """Log a warning the first time ``about`` (a file, a teacher) comes up in this process: a --seeds group or a study
    checks the same things again for each of its runs."""
    if (log.name, about) not in _WARNED:
        _WARNED.add((log.name, about))
        log.warning(message, *args)
