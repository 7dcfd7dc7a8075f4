"""Ctrl-C and `kill` stop a command the same way: KeyboardInterrupt, and a flag that outlives it (Python drops an
exception raised inside a garbage-collection callback; the flag lets the next check stop the command then)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_STATUSES = tuple(128 + signum for signum in STOP_SIGNALS)  # the shell's convention: 130 for Ctrl-C, 143 for kill
_received: list[int] = []
_open: list[None] = []  # one per handled() block running: a stop is kept for check() only inside one


class RunStopped(KeyboardInterrupt):
    """A stop that left a run to finish: its folder, its state ("interrupted", or "finished, not scored") and the
    command that finishes it, for a caller that reports them (``train --json``)."""

    def __init__(self, run_dir: Path, state: str, resume: str) -> None:
        super().__init__()
        self.run_dir, self.state, self.resume = run_dir, state, resume


def _stop(signum: int, frame: FrameType | None) -> None:
    stop(signum)  # installed by handled() alone, so the stop is kept for check()


def _quiet_when_stopping(passed_on: Callable[[Any], None], unraisable: Any) -> None:
    """Drop Python's traceback of a KeyboardInterrupt it swallowed: the flag keeps the stop, check() acts on it."""
    if not (_received and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        passed_on(unraisable)


@contextlib.contextmanager
def delivered_to(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    """While the block runs, SIGINT (unless the parent ignores it, as for a background job) and SIGTERM go to
    ``handler``; the previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            if old is not None:  # None: set from outside Python, and not ours to restore
                signal.signal(signum, old)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While a command runs, a stop signal stops it; the handlers and the unraisable hook are put back afterwards,
    for a caller that goes on."""
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_when_stopping, hook)
    _open.append(None)
    try:
        with delivered_to(_stop):
            yield
    finally:
        _open.pop()
        _received.clear()  # this command's stop, not the next one's
        sys.unraisablehook = hook


def stop(signum: int) -> NoReturn:
    """Stop as a stop signal does, for one that another handler took first (the server's, which let it finish)."""
    if _open:  # outside a command (fmnist used as a library), no check() to come would need it, nor clear it
        _received.append(signum)
    raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if a stop signal came, even one whose first KeyboardInterrupt was swallowed."""
    if _received:
        raise KeyboardInterrupt


def requested() -> bool:
    """Whether a stop signal came while the command ran."""
    return bool(_received)


def stopped() -> int:
    """Say why the command stopped; return its exit status (130 also for a KeyboardInterrupt without a signal)."""
    signum = _received[-1] if _received else signal.SIGINT
    print("fmnist: interrupted" if signum == signal.SIGINT else f"fmnist: stopped by {signal.Signals(signum).name}",
          file=sys.stderr)
    return 128 + signum


def keep_status_on_stop(status: int) -> None:
    """The command is done: a stop signal while Python's exit hooks run (JAX's among them, seconds at times) ends the
    process at once with the status its work earned."""
    # Killed by the signal, the process would read as stopped mid-work. (In the last moments, as Python tears its
    # modules down, it has put the default handlers back.)
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda signum, frame: end_process(status))


def end_process(status: int) -> NoReturn:
    """End a stopped `fmnist` process without Python's shutdown (whatever a run keeps is on disk by now), by the signal
    that stopped it, raised again."""
    # Python's shutdown crashed the process (SIGSEGV in ``PjRtClient``'s destructor) when a JAX compilation was still
    # running on its thread pool as the interpreter tore down JAX's client.
    logging.shutdown()
    with contextlib.suppress(OSError):  # a reader gone too (Ctrl-C stops `fmnist ... | jq` whole): nothing to tell
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    # Raised again: the parent (systemd, ``timeout``, a shell's loop) sees the process ended by it, and a loop of
    # commands in a script stops at Ctrl-C, as Python's own end does.
    if status - 128 in (signal.SIGTERM, signal.SIGINT):
        signal.signal(status - 128, signal.SIG_DFL)
        os.kill(os.getpid(), status - 128)
    os._exit(status)
