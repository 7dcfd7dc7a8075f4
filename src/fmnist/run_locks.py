"""Locks on a run's files: a run claimed by the process training it (and whether one is), held by a command writing
into it, and short writes that two commands may make at once taken in turn."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from fmnist import artifacts
from fmnist.errors import FmnistError, WriteRefused

log = logging.getLogger(__name__)


# What a command refused because a process is training the run says, after what the command needs.
WAIT_FOR_TRAINING = "wait for it to finish ('fmnist runs' shows its epochs so far)"
LEFTOVER_AFTER_S = 60  # a temporary file older than this, in a run no process holds, was left by a kill
CLAIM_ATTEMPTS = 20  # 0.05 s apart, about a second in all: a live training holds its lock far longer


class RunInUse(FmnistError):
    """Another live process holds the lock asked for: a wait may get it, unlike the other refusals."""


def _open_lock(lock: Path, read_will_do: bool) -> IO[Any]:
    """The lock file, made if need be; read where we may not write it (another user's) and a read will do: a lock
    needs no write."""
    try:
        return open(lock, "a")
    except OSError as exc:
        if read_will_do and lock.is_file():
            return open(lock, "rb")
        advice = ": make its folder writable for this user" if exc.errno in (errno.EACCES, errno.EROFS) else ""
        raise WriteRefused(f"cannot write {lock} ({exc.strerror}){advice}") from None


@contextlib.contextmanager
def held_lock(lock: Path, busy: str | Callable[[], str], shared: bool = False) -> Iterator[None]:
    """Hold ``lock`` for the block, or refuse with ``busy`` (or what it returns) while a live process holds it
    (``shared``: but another shared hold); the kernel drops it when its process ends, however it ends."""
    # A shared hold goes without where the filesystem keeps no locks: it only keeps a training away.
    with _open_lock(lock, read_will_do=shared) as handle:
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise RunInUse(busy() if callable(busy) else busy) from None
                time.sleep(0.05)  # `fmnist runs` may be looking (being_trained): that lock lasts an instant
            except OSError as exc:  # ENOLCK: a network filesystem that keeps no locks
                if shared:  # what only keeps a training away: as where no training ever claims the run
                    break
                raise FmnistError(f"cannot lock {lock} ({exc.strerror}): put the runs on a filesystem that keeps "
                                  "locks (a local disk)") from None
        yield


@contextlib.contextmanager
def queued_lock(lock: Path, waiting: str) -> Iterator[None]:
    """Hold ``lock`` for the block, after whoever holds it (saying ``waiting``): for a short write two commands may
    make at once (two exports refreshing one report), so the later one reads what the earlier one wrote."""
    try:
        handle = _open_lock(lock, read_will_do=True)
    except (FmnistError, OSError):  # a folder that takes no files: the write that follows says why
        handle = None
    with handle or contextlib.nullcontext():
        if handle is not None:
            with contextlib.suppress(OSError):  # a filesystem that keeps no locks: as before there were any
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("%s", waiting)
                    fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def claim_run(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the run's lock while training it, so no second process (say, a resume) trains it at the same time."""
    return held_lock(Path(run_dir) / artifacts.LOCK, lambda: (
        f"{run_dir} is being trained right now; {WAIT_FOR_TRAINING}" if being_trained(run_dir) else
        f"{run_dir} is in use by another process (evaluating, reporting or exporting it); wait for it to end"))


def tidy_if_idle(run_dir: Path) -> None:
    """Remove what killed commands left of their temporary files in the run, where no process holds it (one try)."""
    try:
        with open(Path(run_dir) / artifacts.LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped at close
            # Not the younger ones: a tune trial pruned writes its status and report after its training let go.
            artifacts.remove_temporaries(run_dir, older_than_s=LEFTOVER_AFTER_S)
    except OSError:  # held (a younger temporary file may be being written now), or not ours: left for a later command
        pass


def being_trained(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (claim_run); the kernel drops it when one dies."""
    # The probe holds a shared lock for an instant; claim_run tries again for a moment rather than fail on it.
    try:
        with open(Path(run_dir) / artifacts.LOCK, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted, and dropped at close, when no one trains it
    except BlockingIOError:
        return True
    except OSError:  # no lock file: no process ever claimed the run
        pass
    return False
