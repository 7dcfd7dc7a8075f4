"""Run directories: created exclusively, never shared between runs, found under a folder and told from a ``--seeds``
group, with a status file saying how their training stands; and the paths a user names, kept outside any run."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import shlex
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from fmnist import artifacts, run_locks
from fmnist.errors import FmnistError, WriteRefused


def utc_now() -> str:
    return iso(dt.datetime.now(dt.timezone.utc))


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolved(path: Path, what: str, instead: str) -> Path:
    """``path`` with its links followed, or one line saying why it cannot be: a loop of links, or no access."""
    try:
        try:
            return Path(path).resolve(strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # Python 3.13 and later: resolve() without strict gives a loop back as it was
                raise
            return Path(path).resolve()  # not there yet
    except (RuntimeError, OSError) as exc:  # a loop: Python before 3.13 raises RuntimeError, later ones ELOOP
        loop = isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP
        why = "leads round in a loop of symbolic links" if loop else f"cannot be read ({exc.strerror})"
        raise FmnistError(f"{what} {path} {why}: {instead}") from None


def refuse_inside_run(folder: Path, what: str) -> None:
    """No run writes into another run's directory: refuse a destination that is a run directory or inside one."""
    resolved = _resolved(folder, what, "name another folder")
    for parent in (resolved, *resolved.parents):
        if is_run(parent):
            raise FmnistError(f"{what} {folder} is inside the run {parent}; choose a folder outside any run")


def absolute(path: Path | str) -> Path:
    """``path`` made absolute for a reader elsewhere: each ".." taken out by the file system (a link may lie before
    it), the parts after the last one kept as given, links included; as it is where it cannot be resolved."""
    try:
        path = Path(path).absolute()
    except OSError:  # the current folder was deleted: a relative path is all there is to say
        return Path(path)
    if ".." not in path.parts:
        return path
    last = max(i for i, part in enumerate(path.parts) if part == "..")
    try:
        return Path(*path.parts[:last + 1]).resolve().joinpath(*path.parts[last + 1:])
    except (OSError, RuntimeError):  # a loop: Python before 3.13 raises RuntimeError (later ones give it back)
        return path


def prepare_output(path: Path, flag: str, suffix: str | None = None, make_folder: bool = False) -> Path:
    """Check, before the work, that the folder of a file the user named exists and takes files, outside any run; with
    ``suffix``, the file must be named so. A symbolic link is followed: its file is returned."""
    # The folder must exist, so a typo makes no stray folders; a default place's is made with ``make_folder``.
    path = Path(path)
    # The file the link leads to is returned, to be written, so the link stays one.
    if path.is_symlink():
        path = _resolved(path, f"{flag}: the symbolic link", "remove it, or name another file")
    refuse_inside_run(path.parent, f"{flag} {path}: its folder")
    if path.is_dir():
        raise FmnistError(f"{flag} {path} is a folder: name a file in it")
    if suffix is not None and path.suffix.lower() != suffix:
        raise FmnistError(f"{flag} {path}: it is written as {suffix[1:].upper()}; name it {path.stem}{suffix}")
    folder = path.parent
    if make_folder and not _file_in_the_way(folder):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FmnistError(f"{flag} {path}: cannot make its folder {folder} ({exc.strerror})") from None
    _require_folder(folder, f"{flag} {path}", "name a file in a folder that does")
    why = unwritable(folder)
    if why:
        raise FmnistError(f"{flag} {path}: cannot write in {path.parent} ({why})")
    refuse_foreign_file(path, f"{flag} {path}:")
    return path


def refuse_foreign_file(path: Path, said: str, advice: str = "name another file") -> None:
    """Refuse to write over a file there that fmnist did not write (a user's own page or picture); one it wrote, an
    earlier comparison or benchmark, may be replaced."""
    if path.exists() and not artifacts.written_by_fmnist(path):
        there = {".npy": "an array is there, and fmnist writes over none (the inputs it saves look like yours)",
                 ".png": "a picture that fmnist did not draw is there (an older fmnist's are not known as its own)"}
        raise FmnistError(f"{said} {there.get(path.suffix.lower(), 'a file that fmnist did not write is there')}; "
                          f"move it, or {advice}")


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` takes no new files (Permission denied, say), tried with one; None where it does."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:  # a folder that exists but takes no files (such as /proc) answers "no such file"
        return "it takes no new files" if exc.errno == errno.ENOENT and Path(folder).is_dir() else exc.strerror


# Files that only fmnist's training writes in a run: beside a config.json it cannot read, they still make a run
# (not status.json: a name as common as config.json).
RUN_ONLY_FILES = (artifacts.SPLIT, artifacts.LOCK, artifacts.BACKUP)
# The files of a run (or of a --seeds group's folder), any of which `fmnist runs` lists a folder for.
RUN_FILES = {artifacts.CONFIG, artifacts.STATUS, artifacts.HISTORY, artifacts.MODEL, artifacts.METRICS,
             artifacts.SEED_GROUP, *RUN_ONLY_FILES}


def is_run(folder: Path) -> bool:
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
            if is_run(path)]


def require_runs_dir_place(runs_dir: Path) -> None:
    """Refuse a runs folder that would be made where its own folder does not exist: a mistyped --runs-dir, not a
    place to make folders down to (the runs folder itself is made)."""
    runs_dir = Path(runs_dir)
    require_utf8_name(absolute(runs_dir))  # else refused only once the run it holds is trained, when it is scored
    if not (runs_dir.exists() or runs_dir.is_symlink()):
        _require_folder(runs_dir.absolute().parent, f"--runs-dir {runs_dir}",
                        "give a runs folder in one that does (the runs folder itself is made)")


def _file_in_the_way(folder: Path) -> bool:
    """Whether a file stands where ``folder`` or one above it would be."""
    return any(p.exists() and not p.is_dir() for p in (folder, *folder.parents))


def _require_folder(folder: Path, said: str, instead: str) -> None:
    """Refuse, as ``said``, a ``folder`` that is not there (a typo's: none is made for it) or has a file in its way."""
    if _file_in_the_way(folder):
        raise FmnistError(f"{said}: a file is in the way of its folder {folder}")
    if not folder.is_dir():
        raise FmnistError(f"{said}: the folder {folder} does not exist; make it first (mkdir -p "
                          f"{shell_word(str(folder))}), or {instead}")


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """Make ``<runs_dir>/<UTC time>-<name>[-k]/`` exclusively: no two runs ever share a directory."""
    runs_dir = Path(runs_dir)
    refuse_inside_run(runs_dir, "the runs directory")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        dangling = runs_dir.is_symlink() and not runs_dir.exists()
        what = f"a link to {runs_dir.readlink()}, which is missing" if dangling else "a file"
        raise FmnistError(f"the runs directory {runs_dir} is {what}: give a folder (--runs-dir)") from None
    except OSError as exc:
        raise WriteRefused(f"cannot create runs directory {runs_dir}: {exc.strerror}") from None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        candidate = runs_dir / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:  # not writable, or too long a name
            raise WriteRefused(f"cannot create a run directory in {runs_dir}: {exc.strerror}") from None
    raise FmnistError(f"could not create a fresh run directory in {runs_dir}")


def is_seed_group(path: Path) -> bool:
    """Whether ``path`` is a group directory made by ``fmnist train --seeds``."""
    return (Path(path) / artifacts.SEED_GROUP).is_file()


def refuse_seed_group(path: Path) -> None:
    """A group made by ``--seeds``, given where one run is wanted, is refused, naming one of its runs."""
    if is_seed_group(path):
        members = [member.name for member in run_folders(path)]
        example = f", such as {Path(path) / members[0]}" if members else ""
        page = (f"; 'fmnist runs compare {shell_word(str(path))}' draws one page of its seeds"
                if (Path(path) / artifacts.SEED_SUMMARY).is_file() else "")  # compare takes a group once summarized
        raise FmnistError(f"{path} is a group of {len(members)} runs made by 'fmnist train --seeds', not one run: "
                          f"give one of its runs{example}{page}")


def run_folders(folder: Path) -> list[Path]:
    """The run directories directly in ``folder`` (those with a config.json), by name."""
    return sorted(inner for inner in Path(folder).iterdir() if (inner / artifacts.CONFIG).is_file())


def require_utf8_name(path: Path) -> None:
    """Refuse a path that is not UTF-8 (made on a system of another encoding): fmnist writes paths into JSON, HTML and
    plots, all UTF-8."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        # Python holds each byte that is not UTF-8 as a lone surrogate, which UTF-8 cannot encode.
        odd = next(part for part in Path(path).parts if any("\ud800" <= c <= "\udfff" for c in part))
        named = f"{path!s:.200}" if odd == Path(path).name else f"the folder {odd!s:.100} in {path!s:.200}"
        raise FmnistError(f"{named} has a name that is not UTF-8: rename it, then try again") from None


def require_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if run_dir.name in ("", ".."):  # "." or "..": its own name and its group's folder are those of the path made whole
        run_dir = absolute(run_dir)
    require_utf8_name(_resolved(run_dir, "the run", "give a run directory made by 'fmnist train'"))
    refuse_seed_group(run_dir)
    refuse_file_of_run(run_dir)
    if not (run_dir / artifacts.CONFIG).is_file():
        inner = run_folders(run_dir) if run_dir.is_dir() else []
        if inner:  # a study's folder, or a runs directory
            raise FmnistError(f"{run_dir} is a folder of runs, not a run: give one of them, such as {inner[0]}")
        raise FmnistError(
            f"{run_dir} is not a run directory (no {artifacts.CONFIG}); give a directory made by 'fmnist train'")
    return run_dir


def refuse_file_of_run(path: Path) -> None:
    """Refuse one of a run's files given for the run (its model.keras, its config.json), naming the run."""
    if Path(path).is_file() and (Path(path).parent / artifacts.CONFIG).is_file():
        raise FmnistError(f"{path} is a file of a run: give the run's directory, {Path(path).parent}")


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


def state_now(run_dir: Path, state: str) -> str:
    """``state`` as it stands: a run still marked running that no process trains was killed (SIGKILL, or its
    machine went down)."""
    return KILLED if state == RUNNING and not run_locks.being_trained(run_dir) else state


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
    if group and run_locks.being_trained(group):
        raise FmnistError(f"{run_dir} is one run of the --seeds group {group}, which another process is training "
                          f"now; {why}, {run_locks.WAIT_FOR_TRAINING}")


def in_seed_group(run_dir: Path) -> Path | None:
    """The ``--seeds`` group that ``run_dir`` is one of, if any."""
    group = Path(run_dir).parent
    return group if is_seed_group(group) else None


def resume_command(run_dir: Path) -> str:
    """The command that finishes a stopped run, quoted for a shell, from any folder; for one of a ``--seeds`` group's,
    the group's (which also trains the seeds not begun and writes the summary)."""
    return f"fmnist train --resume {shell_word(str(absolute(in_seed_group(run_dir) or run_dir)))}"


def shell_word(text: str) -> str:
    """``text`` as one word for a shell, quoted only if need be, in double quotes where they do (advice is often
    quoted in single ones)."""
    quoted = shlex.quote(text)
    return f'"{text}"' if quoted != text and not any(c in text for c in '"$`\\!') else quoted


def how_to_finish(run_dir: Path) -> str:
    """What finishes a run whose training stopped: a resume, or for one that diverged, a new run; where its resume
    would refuse its backup or history, why, with what to do."""
    from fmnist.backup_file import checked_meta  # which reads this module's

    if diverged(run_dir):
        return f"it diverged: {DIVERGED_ADVICE}"
    try:
        checked_meta(run_dir)
    except FmnistError as exc:
        return f"its resume would refuse it: {exc}"
    return f"'{resume_command(run_dir)}' finishes it"


GROUP_DEPTH = 3  # runs/<runs dir of a study>/<seed group>/<run>


def run_dirs(folder: Path, depth: int) -> list[Path]:
    """Run directories under ``folder``. One holding run directories but no run files of its own is a group
    (``--seeds``, or a runs directory inside this one) and is looked into, ``depth`` levels at most."""
    # A symbolic link is followed to a run, a --seeds group or a folder of them (a study's, moved to another disk) only:
    # one to / or a home would list every folder there.
    found = []
    for d in sorted(p for p in folder.iterdir() if _folder_or_unknown(p) and not p.name.startswith(".")):
        try:
            held = list(d.iterdir())
            inner = [p for p in held if _is_folder(p) and not p.name.startswith(".")]
            own = _has_run_files(d)
        except OSError:  # a folder we may not read, or whose entries we may not look at: listed, with what
            found.append(d)  # summarize can say of it
            continue
        # Files of someone else's (a page written there with --output) make no run; an empty folder is one killed
        # before its first file.
        if held and not inner and not any(p.name in RUN_FILES for p in held):
            continue
        if d.is_symlink() and not (own or is_seed_group(d) or any(_is_run_or_group(p) for p in inner)):
            continue
        if not inner or depth <= 1 or own:
            found.append(d)
        else:
            found += run_dirs(d, depth - 1)
    return found


def _has_run_files(folder: Path) -> bool:
    """Whether ``folder`` has a run's config or status file; OSError where the system will not say."""
    return any(_is_there(folder / name) for name in (artifacts.CONFIG, artifacts.STATUS))


def _is_run_or_group(folder: Path) -> bool:
    """Whether ``folder`` is a run or a --seeds group; False where the system will not say."""
    try:
        return _has_run_files(folder) or is_seed_group(folder)
    except OSError:
        return False


def _is_folder(path: Path) -> bool | None:
    """Whether ``path`` is a folder; None where nothing is there (or a link leads nowhere, or round in a loop). Raises
    OSError where the system will not say, as in a folder we may list but not enter."""
    # Not ``Path.is_dir``: Python 3.14's says False there instead.
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
            return None
        raise


def _is_there(path: Path) -> bool:
    """Whether anything is at ``path`` (a link leading nowhere is not); OSError where the system will not say."""
    return _is_folder(path) is not None


def _folder_or_unknown(path: Path) -> bool:
    """Whether ``path`` may be a folder: True too where the system will not say, so that it is listed as unreadable
    rather than ending the listing."""
    try:
        return bool(_is_folder(path))
    except OSError:
        return True
