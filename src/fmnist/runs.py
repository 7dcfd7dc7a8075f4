"""Run directories: created exclusively, never shared between runs, with a status file."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import shlex
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from fmnist import artifacts, defaults
from fmnist.backup_file import epochs_done
from fmnist.errors import FmnistError

log = logging.getLogger(__name__)


def utc_now() -> str:
    return _iso(dt.datetime.now(dt.timezone.utc))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolved(path: Path, what: str, instead: str) -> Path:
    """``path`` with its links followed, or one line saying why it cannot be: a loop of links, or no access."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # a loop: Python before 3.13 raises RuntimeError, later ones ELOOP
        loop = isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP
        why = "leads round in a loop of symbolic links" if loop else f"cannot be read ({exc.strerror})"
        raise FmnistError(f"{what} {path} {why}: {instead}") from None


def refuse_inside_run(folder: Path, what: str) -> None:
    """No run writes into another run's directory: refuse a destination that is a run directory or inside one."""
    resolved = _resolved(folder, what, "name another folder")
    for parent in (resolved, *resolved.parents):
        if _is_run(parent):
            raise FmnistError(f"{what} {folder} is inside the run {parent}; choose a folder outside any run")


def absolute(path: Path | str) -> Path:
    """``path`` made absolute for a reader elsewhere: each ".." taken out by the file system (a link may lie before
    it), the parts after the last one kept as given, links included; as it is where it cannot be resolved."""
    path = Path(path).absolute()
    if ".." not in path.parts:
        return path
    last = max(i for i, part in enumerate(path.parts) if part == "..")
    try:
        return Path(*path.parts[:last + 1]).resolve().joinpath(*path.parts[last + 1:])
    except (OSError, RuntimeError):  # a loop: Python before 3.13 raises RuntimeError, later ones OSError
        return path


def prepare_output(path: Path, flag: str, suffix: str | None = None) -> Path:
    """Make the folder of a file the user named and check that it takes files, outside any run, before the work;
    with ``suffix``, the file must be named so (a user's notes.txt is not replaced by a page). A symbolic link is
    followed: the file it leads to is the one returned, to be written, so the link stays a link."""
    path = Path(path)
    if path.is_symlink():
        path = _resolved(path, f"{flag}: the symbolic link", "remove it, or name another file")
    refuse_inside_run(path.parent, f"{flag} {path}: its folder")
    if path.is_dir():
        raise FmnistError(f"{flag} {path} is a folder: name a file in it")
    if suffix is not None and path.suffix.lower() != suffix:
        raise FmnistError(f"{flag} {path}: it is written as {suffix[1:].upper()}; name it {path.stem}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except (FileExistsError, NotADirectoryError):
        raise FmnistError(f"{flag} {path}: a file is in the way of its folder {path.parent}") from None
    except OSError as exc:  # a folder that exists but takes no files (such as /proc) answers "no such file"
        why = "it takes no new files" if exc.errno == errno.ENOENT and path.parent.is_dir() else exc.strerror
        raise FmnistError(f"{flag} {path}: cannot write in {path.parent} ({why})") from None
    return path


# Files that only fmnist's training writes in a run: beside a config.json it cannot read, they still make a run
# (not status.json: a name as common as config.json).
RUN_ONLY_FILES = (artifacts.SPLIT, artifacts.LOCK, artifacts.BACKUP)
# The files of a run (or of a --seeds group's folder), any of which `fmnist runs` lists a folder for.
RUN_FILES = {artifacts.CONFIG, artifacts.STATUS, artifacts.HISTORY, artifacts.MODEL, artifacts.METRICS,
             artifacts.SEED_GROUP, *RUN_ONLY_FILES}


def _is_run(folder: Path) -> bool:
    """A run directory: a config.json that fmnist wrote (the name alone is common: a project's own folder may have
    one), or any config.json, damaged say, beside a file that only fmnist's training writes."""
    path = folder / artifacts.CONFIG
    if not path.is_file():
        return False
    if any((folder / name).exists() for name in RUN_ONLY_FILES):
        return True
    try:
        config = artifacts.read_json(path)
    except FmnistError:
        return False
    return isinstance(config.get("settings"), dict) and "backend" in config


def runs_named(runs_dir: Path, name: str) -> list[Path]:
    """The runs that create_run_dir made in ``runs_dir`` for ``name``."""
    return [path for pattern in (f"*Z-{name}", f"*Z-{name}-[0-9]*") for path in sorted(Path(runs_dir).glob(pattern))
            if _is_run(path)]


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """Make ``<runs_dir>/<UTC time>-<name>[-k]/`` exclusively: no two runs ever share a directory."""
    runs_dir = Path(runs_dir)
    refuse_inside_run(runs_dir, "the runs directory")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FmnistError(f"the runs directory {runs_dir} is a file: give a folder (--runs-dir)") from None
    except OSError as exc:
        raise FmnistError(f"cannot create runs directory {runs_dir}: {exc.strerror}") from None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        candidate = runs_dir / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:  # not writable, or too long a name
            raise FmnistError(f"cannot create a run directory in {runs_dir}: {exc.strerror}") from None
    raise FmnistError(f"could not create a fresh run directory in {runs_dir}")


def is_seed_group(path: Path) -> bool:
    """Whether ``path`` is a group directory made by ``fmnist train --seeds``."""
    return (Path(path) / artifacts.SEED_GROUP).is_file()


def refuse_seed_group(path: Path) -> None:
    """A group made by ``--seeds``, given where one run is wanted, is refused, naming one of its runs."""
    if is_seed_group(path):
        members = [member.name for member in run_folders(path)]
        example = f", such as {Path(path) / members[0]}" if members else ""
        raise FmnistError(f"{path} is a group of {len(members)} runs made by 'fmnist train --seeds', not one run: "
                          f"give one of its runs{example}")


def run_folders(folder: Path) -> list[Path]:
    """The run directories directly in ``folder`` (those with a config.json), by name."""
    return sorted(inner for inner in Path(folder).iterdir() if (inner / artifacts.CONFIG).is_file())


def require_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if run_dir.name in ("", ".."):  # "." or "..": its own name and its group's folder are those of the path made whole
        run_dir = absolute(run_dir)
    try:
        str(_resolved(run_dir, "the run", "give a run directory made by 'fmnist train'")).encode("utf-8")
    except UnicodeEncodeError:  # its path is written into its JSON, HTML and plots, all UTF-8
        raise FmnistError(f"{run_dir!s:.200} has a name that is not UTF-8: rename it, then try again") from None
    refuse_seed_group(run_dir)
    if not (run_dir / artifacts.CONFIG).is_file():
        inner = run_folders(run_dir) if run_dir.is_dir() else []
        if inner:  # a study's folder, or a runs directory
            raise FmnistError(f"{run_dir} is a folder of runs, not a run: give one of them, such as {inner[0]}")
        raise FmnistError(
            f"{run_dir} is not a run directory (no {artifacts.CONFIG}); give a directory made by 'fmnist train'")
    return run_dir


def teacher_run_dir(teacher: str | Path) -> Path:
    """The run a teacher (a run directory or its model.keras) belongs to: its calibration temperature is kept there."""
    teacher = Path(teacher)
    run_dir = teacher if teacher.is_dir() else teacher.parent
    if not (run_dir / artifacts.CONFIG).is_file():
        raise FmnistError(f"no {artifacts.CONFIG} in {run_dir}: a teacher must be a run made by 'fmnist train' "
                          "(or its model.keras there), as its calibration temperature is kept in the run")
    return run_dir


# What a status.json of ours says; `fmnist runs` shows a running run whose process is gone as killed.
RUNNING, INTERRUPTED, FAILED, FINISHED = "running", "interrupted", "failed", "finished"
KILLED = "killed"
STATES = (RUNNING, INTERRUPTED, FAILED, FINISHED)
RESUMABLE = (RUNNING, INTERRUPTED, FAILED)  # killed, stopped, or failed mid-training


def set_status(run_dir: Path, state: str, **extra: Any) -> None:
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    artifacts.write_json(Path(run_dir) / artifacts.STATUS, {"state": state, "updated": utc_now(), **extra})


def mark_pruned(run_dir: Path, how: str) -> None:
    """Record in a finished run's status that a tuning study's pruner ended it, and ``how``."""
    status = artifacts.read_json(Path(run_dir) / artifacts.STATUS)
    artifacts.write_json(Path(run_dir) / artifacts.STATUS, {**status, "pruned": how})


def finished(run_dir: Path | None) -> bool:
    """Whether the run's training finished (its status says so); ``None``, no run, is not."""
    status = None if run_dir is None else Path(run_dir) / artifacts.STATUS
    return status is not None and status.is_file() and artifacts.read_json(status).get("state") == FINISHED


def complete(run_dir: Path) -> bool:
    """Whether the run is trained, scored and reported: nothing is left for a resume to do."""
    return finished(run_dir) and all((Path(run_dir) / name).is_file() for name in (artifacts.METRICS,
                                                                                   artifacts.REPORT_HTML))


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
        raise FmnistError(f"cannot write {lock} ({exc.strerror}){advice}") from None


@contextlib.contextmanager
def held_lock(lock: Path, busy: str, shared: bool = False) -> Iterator[None]:
    """Hold ``lock`` for the block, or refuse with ``busy`` while a live process holds it (``shared``: but another
    shared hold); the kernel drops it when its process ends, however it ends."""
    # A shared hold goes without where the filesystem keeps no locks: it only keeps a training away.
    with _open_lock(lock, read_will_do=shared) as handle:
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise RunInUse(busy) from None
                time.sleep(0.05)  # `fmnist runs` may be looking (runs.being_trained): that lock lasts an instant
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
    return held_lock(Path(run_dir) / artifacts.LOCK, f"{run_dir} is in use by another process (training it, or "
                     "evaluating, reporting or exporting it); wait for it or stop it first")


@contextlib.contextmanager
def removed_unless_begun(run_dir: Path, record: str) -> Iterator[None]:
    """A folder just made for a run (or group), removed again if what follows fails before its ``record`` is written
    (a full disk, say): left, it would be listed as a run that cannot be read, with nothing to resume."""
    try:
        yield
    except BaseException:
        if not (run_dir / record).exists():
            with contextlib.suppress(OSError):  # anything else in it: kept, as it was not ours alone
                (run_dir / artifacts.LOCK).unlink(missing_ok=True)
                run_dir.rmdir()
        raise


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


DIVERGED_ADVICE = "train a new run with a lower --learning-rate"  # resumed as it was, it would diverge again
GROUP_DIVERGED_ADVICE = "train a new group with a lower --learning-rate"


def diverged(run_dir: Path) -> bool:
    """Whether the run's training stopped because its loss became NaN or infinite; not known, for a status.json that
    cannot be read (which what reads it next names)."""
    status = Path(run_dir) / artifacts.STATUS
    try:
        return status.is_file() and bool(artifacts.read_json(status).get("diverged"))
    except (FmnistError, OSError):
        return False


def refuse_group_in_training(run_dir: Path, why: str) -> None:
    """Refuse a run of a ``--seeds`` group that a process is training: it comes to each of the group's runs in turn."""
    group = in_seed_group(run_dir)
    if group and being_trained(group):
        raise FmnistError(f"{run_dir} is one run of the --seeds group {group}, which another process is training "
                          f"now; {why}, {WAIT_FOR_TRAINING}")


def in_seed_group(run_dir: Path) -> Path | None:
    """The ``--seeds`` group that ``run_dir`` is one of, if any."""
    group = Path(run_dir).parent
    return group if is_seed_group(group) else None


def resume_command(run_dir: Path) -> str:
    """The command that finishes a stopped run, quoted for a shell; for one of a ``--seeds`` group's, the group's
    (which also trains the seeds not begun and writes the summary)."""
    return f"fmnist train --resume {shell_word(str(in_seed_group(run_dir) or run_dir))}"


def shell_word(text: str) -> str:
    """``text`` as one word for a shell, quoted only if need be, in double quotes where they do (advice is often
    quoted in single ones)."""
    quoted = shlex.quote(text)
    return f'"{text}"' if quoted != text and not any(c in text for c in '"$`\\!') else quoted


def how_to_finish(run_dir: Path) -> str:
    """What finishes a run whose training stopped: a resume, or for one that diverged, a new run."""
    return f"it diverged: {DIVERGED_ADVICE}" if diverged(run_dir) else f"'{resume_command(run_dir)}' finishes it"


# What a command refused because a process is training the run says, after what the command needs.
WAIT_FOR_TRAINING = "wait for it to finish ('fmnist runs' shows its epochs so far)"


def require_scored(run_dir: Path, needed_for: str) -> None:
    """Refuse a run without test metrics, saying why it has none and what to do, since ``needed_for`` reads them."""
    if (Path(run_dir) / artifacts.METRICS).is_file():
        return
    if being_trained(run_dir):
        raise FmnistError(f"{run_dir} is being trained right now; {needed_for} needs it scored: {WAIT_FOR_TRAINING}")
    status = Path(run_dir) / artifacts.STATUS
    state = artifacts.read_json(status).get("state") if status.is_file() else None
    # Stopped (killed even after its model was saved), or unfinished with no model to score.
    if state in RESUMABLE or (state != FINISHED and not (Path(run_dir) / artifacts.MODEL_SHA256).is_file()):
        raise FmnistError(f"{run_dir} has not finished training (status {summarize(run_dir)['status']}), so it has "
                          f"no test metrics for {needed_for}; {how_to_finish(run_dir)}")
    raise FmnistError(f"{run_dir / artifacts.METRICS} is missing: 'fmnist evaluate {run_dir}' scores the run")


GROUP_DEPTH = 3  # runs/<runs dir of a study>/<seed group>/<run>
KEY_SETTINGS = ("architecture", "hidden_sizes", "dropout", "learning_rate", "batch_size", "epochs", "limit", "seed")


def _read_object(path: Path, notes: list[str], note_missing: bool = True) -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` with a note saying why not: listing never fails on one bad run."""
    try:
        if not path.is_file():
            if note_missing:
                notes.append(f"no {path.name}")
            return {}
        return artifacts.read_json(path)
    except (FmnistError, OSError):  # not a JSON object, or unreadable (is_file too raises in a folder we cannot enter)
        notes.append(f"{path.name} unreadable")
        return {}


def _settings_in(record: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's config.json or a group's group.json holds, or none where they are damaged."""
    settings = record.get("settings")
    return settings if isinstance(settings, dict) else {}


def summarize(run_dir: Path) -> dict[str, Any]:
    """What `fmnist runs` shows for one run directory, from whatever of its files are there and readable."""
    run_dir = Path(run_dir)
    if is_seed_group(run_dir) and not _has_runs(run_dir):  # stopped before its first run began
        return _unbegun_group(run_dir)
    notes: list[str] = []
    config = _read_object(run_dir / artifacts.CONFIG, notes)
    status = _read_object(run_dir / artifacts.STATUS, notes)
    settings = _settings_in(config)
    history = run_dir / artifacts.HISTORY
    epochs = artifacts.json_number(status.get("epochs"))
    try:
        if epochs is None and history.is_file():  # a run still going (or killed) has only its history so far
            epochs = max(0, len(history.read_text(encoding="utf-8", errors="replace").splitlines()) - 1)
    except OSError:
        notes.append(f"{history.name} unreadable")
    state = str(status.get("state", "unknown"))
    if status and state not in STATES:  # edited by hand: shown as it was written, it would pass for a state of ours
        notes.append(f"{artifacts.STATUS} damaged (state {status.get('state')!r}): restore it from a copy")
        state = "unknown"
    # None yet while running; a finished run's that cannot be read is said below, with what to do
    metrics = _read_object(run_dir / artifacts.METRICS, [] if state == FINISHED else notes, note_missing=False)
    unscored = state == FINISHED and not (run_dir / artifacts.METRICS).is_file()
    live = (state == RUNNING or unscored) and being_trained(run_dir)  # a finished run's process scores it still
    if state == RUNNING and not live:  # its process was killed, or its machine went down
        state = KILLED
    if status.get("diverged"):
        notes.append(f"diverged: {DIVERGED_ADVICE}")
    elif state == FINISHED and status.get("pruned"):
        notes.append(f"pruned {status['pruned']}")
    elif state in (KILLED, INTERRUPTED, FAILED):
        epochs = _epochs_backed_up(run_dir, notes)
        notes.append(_finished_by(run_dir, "continues it", "continues its group"))
    elif unscored and not live:  # stopped while it was being scored
        notes.append("not scored: " + _finished_by(run_dir, "scores it", "scores it"))
    if state == FINISHED and not live:
        lost = [name for name in (artifacts.MODEL, artifacts.MODEL_SHA256) if not (run_dir / name).is_file()]
        if lost:
            notes.append(f"no {', '.join(lost)}: restore {'it' if len(lost) == 1 else 'them'} from a copy, or train "
                         "a new run with its settings")
    # metrics.json is written after the predictions: both are there, unless edited or deleted by hand since
    if state == FINISHED and (run_dir / artifacts.METRICS).is_file():
        damaged = [] if scored_accuracy(metrics) is not None else [f"{artifacts.METRICS} damaged"]
        predictions = run_dir / artifacts.PREDICTIONS
        if not predictions.is_file():
            damaged.append(f"no {artifacts.PREDICTIONS}")
        elif not zipfile.is_zipfile(predictions):  # cut short: its directory, at the end, is gone
            damaged.append(f"{artifacts.PREDICTIONS} damaged")
        if damaged:
            notes.append(f"{', '.join(damaged)}: fmnist evaluate scores it again")
        elif not (run_dir / artifacts.REPORT_HTML).is_file() and not being_trained(run_dir):  # stopped drawing it
            notes.append(f"no {artifacts.REPORT_HTML}: fmnist report draws it")
    created = config.get("created") or status.get("updated") or _iso(
        dt.datetime.fromtimestamp(run_dir.stat().st_mtime, dt.timezone.utc))
    return {
        "run": run_dir.name,
        "path": str(absolute(run_dir)),
        "created": str(created),
        "recipe": closest_recipe(settings) if settings else None,
        "settings": {k: settings[k] for k in KEY_SETTINGS if k in settings},
        "backend": config.get("backend"),
        "epochs": None if epochs is None else int(epochs),
        "test_accuracy": scored_accuracy(metrics),  # a number the notes call damaged is not shown, nor averaged
        "macro_f1": _fraction(metrics.get("macro_f1")),
        "train_seconds": artifacts.json_number(status.get("train_seconds")),
        "status": state,
        "notes": notes,
    }


def _summarize_or_say_why_not(run_dir: Path) -> dict[str, Any]:
    """:func:`summarize`, or for a folder the system will not let us look into (another user's, say) a row saying so:
    the listing goes on."""
    try:
        return summarize(run_dir)
    except OSError as exc:
        return {"run": run_dir.name, "path": str(absolute(run_dir)), "created": "", "recipe": None, "settings": {},
                "backend": None, "epochs": None, "test_accuracy": None, "macro_f1": None, "train_seconds": None,
                "status": "unknown", "notes": [f"cannot be read ({exc.strerror or exc})"]}


def _finished_by(run_dir: Path, alone: str, in_group: str) -> str:
    """Who finishes a stopped run: its resume, its group's resume, or the process training its group now."""
    group = in_seed_group(run_dir)
    if group is None:
        return f"fmnist train --resume {alone}"
    return f"its group's training {alone}" if being_trained(group) else f"{resume_command(run_dir)} {in_group}"


def _epochs_backed_up(run_dir: Path, notes: list[str]) -> int | None:
    """The epochs a stopped run's resume continues from: its backup's, not its history's (a kill can land between an
    epoch's row and its backup)."""
    try:
        return epochs_done(run_dir)
    except FmnistError as exc:  # said as the resume would say it, the backup named as in the folder
        notes.append(str(exc).replace(str(run_dir / artifacts.BACKUP), artifacts.BACKUP, 1))
        return None


def scored_accuracy(metrics: dict[str, Any]) -> float | None:
    """A run's test accuracy from its metrics.json, or None where the file was damaged or edited by hand."""
    return _fraction(metrics.get("test_accuracy"))


def _fraction(value: Any) -> float | None:
    number = artifacts.json_number(value)
    return number if number is not None and 0 <= number <= 1 else None


def _has_runs(folder: Path) -> bool:
    try:
        return bool(run_folders(folder))
    except OSError:  # a folder we may not read
        return False


def _unbegun_group(group_dir: Path) -> dict[str, Any]:
    """What `fmnist runs` shows for a ``--seeds`` group stopped before its first run began (its group.json alone)."""
    record = _read_object(group_dir / artifacts.SEED_GROUP, [])  # unreadable: said below as damaged
    settings = _settings_in(record)
    planned = _planned_seeds(record)
    live = being_trained(group_dir)  # its first seed is still setting up
    if planned is None:
        notes = [f"{artifacts.SEED_GROUP} damaged: restore it from a copy"]
    else:
        notes = ["no seed begun yet" if live else f"no seed begun: {resume_command(group_dir)} trains its "
                 f"{len(planned)} seeds"]
    created = record.get("created") or _iso(dt.datetime.fromtimestamp(group_dir.stat().st_mtime, dt.timezone.utc))
    return {
        "run": group_dir.name, "path": str(absolute(group_dir)), "created": str(created),
        "recipe": closest_recipe(settings) if settings else None,
        "settings": {k: settings[k] for k in KEY_SETTINGS if k in settings}, "backend": record.get("backend"),
        "epochs": None, "test_accuracy": None, "macro_f1": None, "train_seconds": None,
        "status": RUNNING if live else KILLED, "notes": notes,
    }


NAMED_CHANGES = 2  # up to this many settings changed from a recipe are named, more are counted


def closest_recipe(settings: dict[str, Any]) -> str:
    """The recipe these settings come from (config.json does not name it): the one they differ from least,
    not counting the run's size and name; ``"spec (+dropout)"`` names a setting changed, ``"spec (+3)"`` counts
    more than two."""
    from fmnist.settings import RECIPES, TrainSettings

    spec = TrainSettings().to_dict()
    ignored = {"name", "seed", "epochs", "limit", "teacher"}

    def changes(recipe: str) -> list[str]:
        preset = {**spec, **TrainSettings.from_dict(RECIPES[recipe]).to_dict()}
        return sorted(k for k, v in preset.items() if k not in ignored and settings.get(k, spec[k]) != v)

    # Only "distilled" takes a teacher, and needs one: a run is of it exactly when it had one.
    changed = {recipe: changes(recipe) for recipe in RECIPES
               if (recipe == "distilled") == bool(settings.get("teacher"))}
    best = min(changed, key=lambda recipe: len(changed[recipe]))
    if not changed[best]:
        return best
    return f"{best} (+{', '.join(changed[best]) if len(changed[best]) <= NAMED_CHANGES else len(changed[best])})"


def _run_dirs(folder: Path, depth: int) -> list[Path]:
    """Run directories under ``folder``. One holding run directories but no run files of its own is a group
    (``--seeds``, or a runs directory inside this one) and is looked into, ``depth`` levels at most."""
    found = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            held = list(d.iterdir())
        except OSError:  # a folder we may not read: listed, with what summarize can say of it
            held = []
        inner = [p for p in held if p.is_dir() and not p.name.startswith(".")]
        # Files of someone else's (a page written there with --output) make no run; an empty folder is one killed
        # before its first file.
        if held and not inner and not any(p.name in RUN_FILES for p in held):
            continue
        if not inner or depth <= 1 or (d / artifacts.CONFIG).exists() or (d / artifacts.STATUS).exists():
            found.append(d)
        else:
            found += _run_dirs(d, depth - 1)
    return found


def list_runs(runs_dir: Path, must_exist: bool = False) -> list[dict[str, Any]]:
    """Every run directory under ``runs_dir`` (groups included), newest first; a missing one has none, unless it
    ``must_exist`` (one the user named is more likely mistyped than not made yet)."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise FmnistError(f"{runs_dir} is not a directory; give the runs directory with --runs-dir")
    if must_exist and not runs_dir.exists():
        raise FmnistError(f"{runs_dir} does not exist: give the folder that holds the runs with --runs-dir (default "
                          f"./{defaults.RUNS_DIR})")
    if _is_run(runs_dir):
        raise FmnistError(f"{runs_dir} is a run, not a folder of runs: give the folder that holds it (--runs-dir "
                          f"{shell_word(str(absolute(runs_dir).parent))})")
    found = [
        {**_summarize_or_say_why_not(d), "run": d.relative_to(runs_dir).as_posix()}
        for d in _run_dirs(runs_dir, GROUP_DEPTH)
    ] if runs_dir.is_dir() else []
    return sorted(found, key=lambda r: (r["created"], r["run"]), reverse=True)


def cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def setting_text(value: Any) -> str:
    """A setting as a table shows it: a list (hidden sizes) joined by "-", a value missing (None) as "-"."""
    return "-".join(str(v) for v in value) if isinstance(value, list) else cell(value)


_MISSING = object()  # a setting one side of a comparison lacks


def settings_differ(planned: dict[str, Any], member: dict[str, Any]) -> list[str]:
    """The settings, as JSON keeps them, in which a group's ``member`` is not the group's (seed and name apart)."""
    from fmnist.settings import TrainSettings

    known = TrainSettings.names()
    # One this fmnist does not know (a later one's) differs where one side lacks it or the two disagree; one that a
    # later or earlier fmnist added, which this one knows, is compared only where both have it, as a resume fills it
    # in.
    unknown = {k for k in (planned.keys() | member.keys()) - known
               if planned.get(k, _MISSING) != member.get(k, _MISSING)}
    shared = (planned.keys() & member.keys() & known) - {"seed", "name"}
    return sorted(unknown | {k for k in shared if planned[k] != member[k]})


def differs_from_group(group: dict[str, Any], member: dict[str, Any]) -> list[str]:
    """What of a run's config.json (``member``) is not as its ``--seeds`` group's group.json (``group``) has it:
    settings (seed and name apart), backend or data. Such a run would be counted in the group's mean, or resumed
    with the group's settings, as its members are told apart by seed alone."""
    differ = settings_differ(_settings_in(group), _settings_in(member))
    # What a damaged group.json lacks is not held against its runs (its resume refuses the group itself).
    if "backend" in group and member.get("backend") != group["backend"]:
        differ.append("backend")
    if _data_checksums(group) is not None and _data_checksums(member) != _data_checksums(group):
        differ.append("data")
    return differ


def _data_checksums(record: dict[str, Any]) -> Any:
    data = record.get("data")
    return data.get("sha256") if isinstance(data, dict) else None


def pick_members(candidates: Iterable[tuple[Any, bool, Any]]) -> dict[Any, Any]:
    """A ``--seeds`` group's run for each seed, from (seed, finished, run) oldest first: of two runs of one seed, a
    finished one, else the newer (one trained again after its first was damaged)."""
    found: dict[Any, Any] = {}
    done: dict[Any, bool] = {}
    for seed, is_finished, run in candidates:
        if done.get(seed) and not is_finished:
            continue
        found[seed], done[seed] = run, is_finished
    return found


def _planned_seeds(record: dict[str, Any]) -> list[int] | None:
    """The seeds a group's group.json ``record`` plans, or None when it is damaged (what its resume would refuse)."""
    from fmnist.seeds import check_count
    from fmnist.settings import TrainSettings

    count = record.get("seeds")
    settings = record.get("settings")
    first = settings.get("seed", TrainSettings().seed) if isinstance(settings, dict) else None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (count, first)):
        return None
    try:
        check_count(count)
    except FmnistError:
        return None
    return list(range(first, first + count))


def _planned_settings(record: dict[str, Any]) -> dict[str, Any]:
    """A group's settings as its resume plans them: with the defaults of settings added since it began."""
    from fmnist.settings import TrainSettings

    settings = _settings_in(record)
    if not settings:  # none to read (group.json damaged): no run is held to the defaults instead
        return {}
    try:
        return TrainSettings.from_dict(settings).to_dict()
    except FmnistError:  # damaged, or a later fmnist's: compared as it is (its resume refuses the group)
        return settings


def seed_groups(rows: list[dict[str, Any]], runs_dir: Path) -> list[dict[str, Any]]:
    """One entry per ``--seeds`` group among ``rows``: the mean and spread of its planned seeds' runs scored so far,
    each seed's run picked as the group's resume picks it."""
    members: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        group = Path(row["run"]).parent
        if group != Path(".") and is_seed_group(Path(runs_dir) / group):
            members.setdefault(group.as_posix(), []).append(row)
    groups = []
    for group, rows_of_group in members.items():
        record = _read_object(Path(runs_dir) / group / artifacts.SEED_GROUP, [])
        planned = _planned_seeds(record)
        shared = {**record, "settings": _planned_settings(record)}
        # Copied or edited in by hand: not the group's, so not in its mean (its resume refuses them). All its settings,
        # as the resume compares them, not only the row's few; one whose seed is damaged is trained again instead.
        foreign = sorted(Path(r["run"]).name for r in rows_of_group if isinstance(r["settings"].get("seed"), int)
                         and differs_from_group(shared, _read_object(Path(runs_dir) / r["run"] / artifacts.CONFIG, [])))
        picked = pick_members((r["settings"].get("seed"), r["status"] == FINISHED, r) for r in reversed(rows_of_group)
                              if isinstance(r["settings"].get("seed"), int) and Path(r["run"]).name not in foreign)
        picked = {seed: row for seed, row in picked.items() if planned is None or seed in planned}
        scored = [row for row in picked.values() if row["status"] == FINISHED and row["test_accuracy"] is not None]
        accuracies = [r["test_accuracy"] for r in scored]
        f1s = [r["macro_f1"] for r in scored if r["macro_f1"] is not None]
        seconds = [r["train_seconds"] for r in scored if r["train_seconds"] is not None]
        summary = Path(runs_dir) / group / artifacts.SEED_SUMMARY
        groups.append({
            "group": group, "path": str(absolute(Path(runs_dir) / group)),
            # when the group began, as its folder's name says; its earliest run's where group.json cannot tell
            "created": record["created"] if isinstance(record.get("created"), str) and record["created"] else
            min((r["created"] for r in rows_of_group if r["created"]), default=""),
            "seeds": None if planned is None else len(planned), "scored": len(scored),
            # the sample standard deviation (ddof 1), as the group's summary.json has it
            "test_accuracy": {"mean": statistics.fmean(accuracies),
                              "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None}
            if accuracies else None,
            "macro_f1": statistics.fmean(f1s) if f1s else None,
            "train_seconds": statistics.fmean(seconds) if seconds else None,
            "summary": summary if summary.is_file() else None,
            "diverged": sorted(seed for seed, row in picked.items() if diverged(Path(runs_dir) / row["run"])),
            "live": being_trained(Path(runs_dir) / group),
            "foreign": foreign,
        })
    return groups


def format_runs(rows: list[dict[str, Any]], groups: list[dict[str, Any]] = (), runs_dir: Path = Path(".")) -> str:
    """The runs as an aligned text table, one line each; a ``--seeds`` group's line, with its mean, above its
    newest run."""
    header = ["run", "created", "recipe", "network", "lr", "batch", "limit", "seed", "backend", "epochs",
              "test acc", "macro F1", "train s", "status"]
    lines = [header]
    groups_left = {g["group"]: g for g in groups}
    for r in rows:
        group = groups_left.pop(Path(r["run"]).parent.as_posix(), None)
        if group:
            lines.append(_group_line(group, r, Path(runs_dir)))
        s = r["settings"]
        lines.append([
            r["run"], r["created"].replace("T", " "), cell(r["recipe"]), cell(_network(s)),
            cell(artifacts.json_number(s.get("learning_rate")), "{:g}"), cell(s.get("batch_size")),
            cell(s.get("limit")), cell(s.get("seed")),
            cell(r["backend"]), cell(r["epochs"]),
            cell(r["test_accuracy"], "{:.4f}"), cell(r["macro_f1"], "{:.4f}"), cell(r["train_seconds"], "{:.1f}"),
            r["status"] + (f" ({', '.join(r['notes'])})" if r["notes"] else ""),
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _network(settings: dict[str, Any]) -> str | None:
    if settings.get("architecture") == "cnn":  # its hidden sizes are the unused dense defaults
        return "ConvNet"
    sizes = settings.get("hidden_sizes")
    return "-".join(str(n) for n in sizes) if isinstance(sizes, list) else None


def _group_line(group: dict[str, Any], newest: dict[str, Any], runs_dir: Path) -> list[str]:
    """A group's line: the settings its runs share (as its newest run has them), and the mean of the runs scored,
    with their standard deviation."""
    accuracy, planned, scored = group["test_accuracy"], group["seeds"], group["scored"]
    s = newest["settings"]
    if planned is None:
        status = f"{scored} seeds scored ({artifacts.SEED_GROUP} damaged: restore it from a copy)"
    elif group["foreign"]:
        status = (f"{scored} of {planned} seeds scored; {', '.join(group['foreign'])}: settings, backend or data "
                  "other than the group's (copied or edited there by hand): move it out of the group")
    elif group["diverged"]:  # resumed, it would diverge again
        status = (f"{scored} of {planned} seeds scored; seed {', '.join(map(str, group['diverged']))} diverged: "
                  f"{GROUP_DIVERGED_ADVICE}")
    elif group["live"]:
        status = f"{scored} of {planned} seeds scored, being trained"
    elif accuracy and scored == planned and group["summary"]:
        status = f"mean of {planned} seeds" + (f", sd {accuracy['std']:.4f}" if accuracy["std"] is not None else "")
    elif scored == planned:  # stopped before it wrote its summary
        status = (f"{scored} of {planned} seeds scored, no {artifacts.SEED_SUMMARY} ("
                  f"{resume_command(runs_dir / group['group'])} writes it)")
    else:
        status = (f"{scored} of {planned} seeds scored "
                  f"({resume_command(runs_dir / group['group'])} continues it)")
    return [
        group["group"] + "/", group["created"].replace("T", " "), cell(newest["recipe"]), cell(_network(s)),
        cell(artifacts.json_number(s.get("learning_rate")), "{:g}"), cell(s.get("batch_size")), cell(s.get("limit")),
        "all", cell(newest["backend"]), "-", cell(accuracy and accuracy["mean"], "{:.4f}"),
        cell(group["macro_f1"], "{:.4f}"), cell(group["train_seconds"], "{:.1f}"), status,
    ]


def resolve_run(name: str | Path, runs_dir: Path) -> Path:
    """A run given as a path, or as a directory name inside ``runs_dir`` or inside a group there (a ``--seeds``
    group, a study's folder)."""
    for candidate in (Path(name), Path(runs_dir) / name):
        if (candidate / artifacts.CONFIG).is_file():
            return require_run_dir(candidate)
    if Path(name).is_dir():
        return require_run_dir(Path(name))  # a folder, but not a run: say what it lacks
    nested = _in_groups(runs_dir, name)
    if nested:
        return require_run_dir(nested)
    if (Path(runs_dir) / name).is_dir():
        return require_run_dir(Path(runs_dir) / name)  # a group's or a study's folder, named: say what it is
    if Path(name).is_file() and (Path(name).parent / artifacts.CONFIG).is_file():
        raise FmnistError(f"{name} is a file of a run: give the run's directory, {Path(name).parent}")
    raise FmnistError(
        f"no run {str(name)!r}: give a run directory or the name of one in {runs_dir}{os.sep} (see 'fmnist runs'; "
        "--runs-dir for another folder)")


def _in_groups(runs_dir: Path, name: str | Path) -> Path | None:
    """The run folder named ``name`` inside a group in ``runs_dir``, if there is exactly one."""
    if Path(name).name != str(name) or not Path(runs_dir).is_dir():  # a path, not a bare name
        return None
    found = [d for d in _run_dirs(Path(runs_dir), GROUP_DEPTH)
             if d.name == str(name) and d.parent != Path(runs_dir) and (d / artifacts.CONFIG).is_file()]
    if len(found) > 1:
        raise FmnistError(f"{len(found)} runs in {runs_dir} are named {str(name)!r}: give one as a path, such as "
                          f"{found[0]}")
    return found[0] if found else None


@contextlib.contextmanager
def idle_run(name: str | Path, runs_dir: Path, doing: str) -> Iterator[Path]:
    """A run that a command writes into (evaluate, report, export), kept from training for the block: not while its
    training process, scoring it say, still writes there, and no resume begins before the command ends."""
    run_dir = resolve_run(name, runs_dir)
    refuse_group_in_training(run_dir, f"to {doing}")  # its process may come to this run while the command writes
    # Shared: two such commands may run together (an export of each format), but never beside a training.
    with held_lock(run_dir / artifacts.LOCK, f"{run_dir} is being trained right now; to {doing}, {WAIT_FOR_TRAINING}",
                   shared=True):
        yield run_dir


def resolve_resumable(name: Path, runs_dir: Path) -> Path:
    """A run or --seeds group to resume, given as a path or as its name in ``runs_dir`` (or in a group there)."""
    if Path(name).exists():
        return Path(name)
    if (Path(runs_dir) / name).is_dir():
        return Path(runs_dir) / name
    return _in_groups(runs_dir, name) or Path(name)


def resolve_model(name: str | Path, runs_dir: Path) -> Path:
    """A ``.keras`` file, a folder holding one with its checksum alone (the model carries what predicting needs),
    else a run as :func:`resolve_run` finds it (one named ``v2.keras`` too)."""
    path = Path(name)
    if path.suffix == ".keras" and not path.is_dir():
        if path.exists():
            return path
        try:
            return resolve_run(name, runs_dir)
        except FmnistError:  # no run of that name either: the error to give is that no model is there
            return path
    if path.is_dir() and not (path / artifacts.CONFIG).exists() and (path / artifacts.MODEL_SHA256).is_file():
        return path
    return resolve_run(name, runs_dir)
