"""Where an `fmnist tune` study lives (a journal file, or a database for many machines), and who runs its trials."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import sqlite3
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna

from fmnist import artifacts, defaults
from fmnist.errors import FmnistError, WriteRefused, first_line
from fmnist.runs import absolute, unwritable

log = logging.getLogger(__name__)

# Workers on a database beat this often; a trial whose worker died is marked failed after the grace period.
HEARTBEAT_S, GRACE_S = 60, 180
RDB_ATTEMPTS = 3
# A journal's lock that a killed worker left is taken over by a worker that has waited this long, the journal unchanged.
JOURNAL_LOCK_GRACE_S = 30
# A journal line is one operation of a few hundred bytes: a file with a line past this is none.
MAX_JOURNAL_LINE = 16 * defaults.MIB


def open_storage(storage: str | None, runs_dir: Path, on_stale_trial: Callable | None = None,
                 writes: bool = False) -> tuple[optuna.storages.BaseStorage, str]:
    """The Optuna storage and how to name it (without password): a database URL, which serves many machines, else a
    journal file (by default in ``runs_dir``), which serves the processes of one machine."""
    # ``writes``: a journal's folder is checked to take the lock a write needs (a study is read from a folder that takes
    # none).
    if is_database(storage):
        return _open_database(storage, on_stale_trial)
    return _open_journal(_journal_path(storage, runs_dir), given=bool(storage), writes=writes)


def _open_database(storage: str, on_stale_trial: Callable | None) -> tuple[optuna.storages.BaseStorage, str]:
    """A database's storage, its tables made on first use (by one of the workers that start together on it)."""
    import sqlalchemy

    url = _database_url(storage)
    shown = _masked(url.render_as_string(hide_password=True))
    folder = Path(url.database).parent if url.get_backend_name() == "sqlite" else None
    if folder is not None and not folder.is_dir():  # SQLite's own word is "unable to open database file"
        raise FmnistError(f"cannot open the study storage {shown}: there is no folder {folder}")
    if folder is not None and Path(url.database).is_file():
        _refuse_foreign_sqlite(Path(url.database), shown)
    attempt = 0
    while True:  # until it opens, or fails otherwise than by losing the race, or loses it RDB_ATTEMPTS times
        attempt += 1
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A dead worker's trial is failed by the next worker, then handed to ``on_stale_trial``
                # (tune queues its settings again, as it does a trial a stop cut short).
                store = SteadyRDBStorage(
                    storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=on_stale_trial,
                    # A connection the server dropped while a trial trained is replaced, not failed on.
                    engine_kwargs={"pool_pre_ping": True})
            return store, shown
        except ImportError as exc:  # Optuna's own words do not say which module
            raise FmnistError(
                f"cannot open the study storage {shown}: SQLAlchemy cannot import its driver "
                f"({first_line(exc.__cause__ or exc)}): install the database's Python driver into fmnist's "
                "environment, or name an installed one in the URL; PostgreSQL's comes with fmnist") from None
        # RuntimeError: a database written by another Optuna version, whose own words say how to upgrade it.
        except (sqlalchemy.exc.SQLAlchemyError, RuntimeError) as exc:
            # Workers started together on a fresh database race to create Optuna's tables; the loser finds
            # them made when it tries again (SQLite says "already exists" as an operational error).
            lost_the_race = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or (
                isinstance(exc, sqlalchemy.exc.OperationalError) and "already exists" in str(exc))
            if not lost_the_race:
                raise FmnistError(f"cannot open the study storage {shown}: {first_line(exc)}") from None
            if attempt == RDB_ATTEMPTS:
                raise FmnistError(f"cannot set up the study storage {shown}: {first_line(exc)}") from None
            time.sleep(attempt)


def refuse_other_than_file(path: Path) -> None:
    """A folder given as --storage is refused, with the journal file in it to give; so is a device or a FIFO."""
    if path.is_dir():
        raise FmnistError(f"--storage {path} is a folder: give a journal file (such as {path / artifacts.TUNE_JOURNAL},"
                          " made if it is not there yet) or a database URL")
    if path.exists() and not path.is_file():  # Optuna would read /dev/full without end, and wait on a FIFO
        raise FmnistError(f"--storage {path} is not a regular file (a device, or a pipe): give a journal file or a "
                          "database URL")


class SteadyJournalLock(optuna.storages.journal.JournalFileSymlinkLock):
    """Optuna's journal lock, which says why it cannot be released where the system refuses (its folder made
    read-only): Optuna takes that for a lock another process released first, and tries again without end."""

    def release(self) -> None:
        try:
            super().release()
        except RuntimeError as exc:
            refused = exc.__context__  # the rename Optuna releases it by
            if isinstance(refused, OSError) and refused.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise WriteRefused(f"cannot release the journal's lock {self._lock_file}: {refused.strerror}; "
                                   "once the system lets fmnist write there again, remove it if no 'fmnist tune' "
                                   "runs on this journal") from None
            raise


def _open_journal(path: Path, given: bool, writes: bool = False) -> tuple[optuna.storages.BaseStorage, str]:
    """A journal file's storage: ``given`` as --storage, or the default one in the runs folder."""
    if given and not path.parent.exists():  # as for SQLite: a mistyped folder would begin a study of its own there
        raise FmnistError(f"cannot open the journal file {path}: there is no folder {path.parent}; make it, or give "
                          "the path of an existing journal")
    if given:
        refuse_other_than_file(path)
    # Optuna's lock is a symbolic link to the journal, named by this path: a relative one would point from the link's
    # folder to a file that is not there, and Optuna then waits for it without end, never taking it over.
    lock = SteadyJournalLock(str(path.absolute()), grace_period=JOURNAL_LOCK_GRACE_S)
    lock_link = Path(f"{path}.lock")
    if os.path.lexists(lock_link):  # Optuna waits for it without a word
        try:
            target = None if lock_link.exists() else os.readlink(lock_link)
        except OSError:  # released by its worker meanwhile
            target = None
        if target is not None:
            raise FmnistError(f"the journal's lock {lock_link} points to {target}, which is not there (a worker of an "
                              "earlier fmnist left it, or the journal was moved): if no 'fmnist tune' is running on "
                              f"this journal, remove {lock_link}")
        log.warning("the journal %s is locked (%s.lock): another worker is writing to it, or one that was killed left "
                    "the lock, which is taken over after %d s of waiting in which the journal does not change",
                    path, path.name, JOURNAL_LOCK_GRACE_S)
    try:
        if path.is_file():  # Optuna would read it as an empty journal, then append to it
            with open(path, "rb") as file:
                if file.read(16) == b"SQLite format 3\x00":
                    raise FmnistError(f"{path} is an SQLite database, not a journal: give it as --storage "
                                      f"sqlite:///{path}")
            damaged = _first_line_not_json(path)
            if damaged and damaged > 1:  # the first: no journal at all, said below
                raise FmnistError(f"line {damaged} of the journal {path} is not JSON, as each of Optuna's is (edited "
                                  "by hand, or damaged): remove that line, or restore the journal from a copy; then "
                                  "run this command again")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Optuna locks the journal with a link beside it, made at its first write: its Permission denied named only
        # the journal, after the data were loaded.
        why = unwritable(path.parent) if writes else None
        if why:
            raise FmnistError(f"cannot open the journal file {path}: its lock needs a new file in {path.parent}, "
                              f"which cannot be written ({why}); give --runs-dir a folder you may write in, or "
                              "--storage a journal file in one")
        backend = optuna.storages.journal.JournalFileBackend(str(path.absolute()), lock_obj=lock)
        # Optuna skips a bad last line as one a killed worker left half written: a file of one is no journal.
        if path.stat().st_size and next(backend.read_logs(0), None) is None:
            raise ValueError("no line of Optuna's in it")
        _cut_half_written_line(path, lock)
        return optuna.storages.JournalStorage(backend), str(path)  # reads the whole journal
    except (FileExistsError, NotADirectoryError):
        raise FmnistError(f"cannot open the journal file {path}: a file is in the way of its folder") from None
    except OSError as exc:
        raise FmnistError(f"cannot open the journal file {path}: {exc.strerror}") from None
    # Undecodable bytes, a line not JSON, JSON not Optuna's (an unknown operation fails Optuna's assert).
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise FmnistError(f"{path} is not an Optuna journal ({first_line(exc)}); give --storage a journal file "
                          "written by 'fmnist tune', or a database URL") from None


def _refuse_foreign_sqlite(path: Path, shown: str) -> None:
    """Optuna would add its tables to any SQLite file, another program's too, even for a report."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise FmnistError(f"cannot open the study storage {shown}: {exc}") from None
    if tables and "studies" not in tables:
        raise FmnistError(f"{path} is not a database of Optuna studies (it holds the tables "
                          f"{', '.join(sorted(tables))}): give --storage a new file, or one 'fmnist tune' wrote")


def _first_line_not_json(path: Path) -> int | None:
    """The number of the journal's first whole line that is not JSON. Optuna skips one that is last, as if a worker
    had been killed writing it, but appends after it, and then refuses the whole journal."""
    with open(path, "rb") as file:
        for number, line in enumerate(iter(lambda: file.readline(MAX_JOURNAL_LINE + 1), b""), start=1):
            if len(line) > MAX_JOURNAL_LINE:  # read whole, as Optuna reads, a file with no line break fills the memory
                raise ValueError(f"its line {number} runs over {MAX_JOURNAL_LINE // defaults.MIB} MiB, where "
                                 "Optuna's lines are short")
            if not line.endswith(b"\n"):  # half written: cut off before the study goes on
                return None
            try:
                json.loads(line)
            except ValueError:
                return number
    return None


def _cut_half_written_line(path: Path, lock: Any) -> None:
    """Cut off a last line a killed worker (or a full disk) left half written: Optuna skips it on reading but appends
    after it, joining the next line to it, and the journal could then be read no more."""
    if not path.stat().st_size:
        return
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        if file.read(1) == b"\n":
            return
    lock.acquire()  # no worker appends meanwhile
    try:
        with open(path, "rb+") as file:
            end = position = file.seek(0, os.SEEK_END)
            keep = 0
            while position > 0 and not keep:
                start = max(0, position - 65536)
                file.seek(start)
                newline = file.read(position - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                position = start
            if 0 < keep < end:  # a journal read before has a whole line
                file.truncate(keep)
                os.fsync(file.fileno())
                log.warning("the last line of the journal %s was half written (a worker stopped while writing it, or "
                            "a full disk): cut off, %d bytes", path, end - keep)
    finally:
        lock.release()


class SteadyRDBStorage(optuna.storages.RDBStorage):
    """Optuna's database storage, whose heartbeat outlives a failed write: Optuna's heartbeat thread ends at its
    first error, and another worker would then fail the trial, still training, as one whose worker died."""

    def record_heartbeat(self, trial_id: int) -> None:
        import sqlalchemy

        try:
            super().record_heartbeat(trial_id)
        # The server restarting, say (Optuna wraps most of SQLAlchemy's errors): the next beat tries again.
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            log.warning("could not record this worker's heartbeat in the study's database (%s); trying again in %d s",
                        first_line(exc.__cause__ or exc), HEARTBEAT_S)  # the cause: Optuna's own words guess


# SQLAlchemy's dialects, as a URL starts: one given without "//" would otherwise name a journal file.
DATABASE_SCHEME = re.compile(r"(?i)(sqlite|postgres(ql)?|mysql|mariadb|oracle|mssql)(\+\w+)?:")


def is_database(storage: str | None) -> bool:
    return bool(storage) and ("://" in storage or bool(DATABASE_SCHEME.match(storage)))


def _masked(url: str) -> str:
    """A database URL without its password, in the user part (which may hold "/" or "@") or in the query string."""
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", re.sub(r"(?i)^([a-z][\w+.-]*:(?://)?[^/:@]*:).*@", r"\1***@", url))


def _database_url(storage: str) -> Any:
    """The parsed database URL, or a one-line refusal without its password."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise FmnistError(f"{_masked(storage)!r} is not a database URL, e.g. sqlite:///study.db or "
                          "postgresql://user:password@host:5432/db") from None
    if url.get_backend_name() == "postgres":  # SQLAlchemy's own word is "Can't load plugin"
        raise FmnistError(f"{_masked(storage)}: SQLAlchemy names PostgreSQL 'postgresql', not 'postgres': write "
                          "postgresql://...")
    try:
        url.get_dialect()  # the dialect alone: a missing driver is said when the storage opens
    except sqlalchemy.exc.NoSuchModuleError:  # SQLAlchemy's own word is "Can't load plugin: sqlalchemy.dialects:..."
        raise FmnistError(f"{_masked(storage)}: SQLAlchemy knows no database (or driver) {url.drivername!r}: give "
                          "postgresql://user:password@host/db, mysql+pymysql://..., sqlite:///file.db (in lower "
                          "case), or a journal file's path") from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise FmnistError(f"{_masked(storage)} keeps the study in memory, lost when this process ends: give a file, "
                          "e.g. sqlite:///study.db")
    return url


def absolute_storage(storage: str, shown: str) -> str:
    """``storage`` as a command run in another folder reaches it: a journal's or an SQLite database's path made
    absolute; a database server's URL as ``shown`` (its password hidden)."""
    if not is_database(storage):
        return str(absolute(storage))
    url = _database_url(storage)
    if url.get_backend_name() != "sqlite":
        return shown
    return url.set(database=str(absolute(url.database))).render_as_string(hide_password=False)


def storage_file(storage: str | None, runs_dir: Path) -> Path | None:
    """The file the study lives in: the journal, or an SQLite database's; ``None`` for a database server."""
    if not is_database(storage):
        return _journal_path(storage, runs_dir)
    url = _database_url(storage)
    return Path(url.database) if url.get_backend_name() == "sqlite" else None


def default_runs_dir(storage: str | None) -> Path:
    """Where a study's trials go unless --runs-dir says: beside a journal file given as --storage (as the default
    journal lies in the runs folder), else ./runs."""
    return Path(storage).parent if storage and not is_database(storage) else Path(defaults.RUNS_DIR)


def _journal_path(storage: str | None, runs_dir: Path) -> Path:
    return Path(storage) if storage else Path(runs_dir) / artifacts.TUNE_JOURNAL


def worker_key(pid: int) -> str | None:
    """Who runs a trial, told apart from any other process: the machine's boot, the pid namespace, the pid and the
    process's start time (a pid given again later has another); ``None`` without Linux's /proc or once it has ended."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        # Field 22 of stat, counted after the command name, which may hold spaces and parentheses.
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot} {namespace} {pid} {started}"


def worker_gone(trial_attrs: dict[str, Any]) -> bool:
    """Whether the process that ran a trial (its user attributes say who) has ended: one of an earlier boot of this
    machine has; one on another machine or in another container is left alone (a database's heartbeat covers those)."""
    key = trial_attrs.get("worker")
    parts = key.split(" ") if isinstance(key, str) else []
    here = worker_key(os.getpid())
    if len(parts) != 4 or not parts[2].isdigit() or here is None:
        return False
    if here.split(" ")[0] != parts[0]:  # the machine booted since, if this is the machine
        # Not where a database's heartbeat tells: machines that share a host name (cloned ones, containers given
        # one) would each take the other's live trials for dead.
        return not trial_attrs.get("heartbeat") and trial_attrs.get("host") == socket.gethostname()
    if here.split(" ")[1] != parts[1]:
        return False
    return worker_key(int(parts[2])) != key
