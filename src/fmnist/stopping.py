"""Ctrl-C and `kill` stop a command the same way: KeyboardInterrupt, and a flag that outlives it.

Python prints and drops an exception raised inside a garbage-collection callback ("Exception ignored in ..."), so a
signal landing there was lost and training went on; the flag lets the next check (each epoch, each seed) stop it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_hooks: list = []  # the unraisable hook in place before ours, which we pass everything else on to


def _stop(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Turn SIGINT and SIGTERM into a stop; a signal the parent set to be ignored (a background job's) stays so."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    if sys.unraisablehook is not _quiet_when_stopping:
        _hooks[:] = [sys.unraisablehook]
        sys.unraisablehook = _quiet_when_stopping


def _quiet_when_stopping(unraisable: "sys.UnraisableHookArgs") -> None:
    """Drop Python's traceback of a KeyboardInterrupt it swallowed: the flag keeps the stop, check() acts on it."""
    if not (_received and unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        _hooks[0](unraisable)


def check() -> None:
    """Raise KeyboardInterrupt if a stop signal came, even one whose first KeyboardInterrupt was swallowed."""
    if _received:
        raise KeyboardInterrupt


def leave() -> NoReturn:
    """Say why the command stopped and end the process with the shell's status for it: 130 for Ctrl-C, 143 for kill.

    Without Python's shutdown: a JAX compilation still running on its thread pool when the interpreter tears down
    JAX's client crashed the process (SIGSEGV in ``PjRtClient``'s destructor). Whatever a run keeps is written by now.
    """
    signum = _received[-1] if _received else signal.SIGINT
    print("fmnist: interrupted" if signum == signal.SIGINT else f"fmnist: stopped by {signal.Signals(signum).name}",
          file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)
