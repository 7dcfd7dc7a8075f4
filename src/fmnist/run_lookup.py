"""Runs and models found by the name or path a user gives: in the runs directory, in a group there, or by their
``--name``; refused, where none is found, naming what was meant; and a run held while a command writes into it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Iterator

from fmnist import artifacts
from fmnist.errors import FmnistError
from fmnist.run_locks import WAIT_FOR_TRAINING, held_lock, tidy_if_idle
from fmnist.run_settings import settings_of
from fmnist.runs import (GROUP_DEPTH, absolute, is_seed_group, refuse_file_of_run,
                         refuse_group_in_training, require_run_dir, run_dirs, unwritable)

log = logging.getLogger(__name__)


def resolve_run(name: str | Path, runs_dir: Path, groups_too: bool = False) -> Path:
    """A run given as a path, or as a directory name inside ``runs_dir`` or inside a group there (a ``--seeds`` group, a
    study's folder); ``groups_too``: the command takes a ``--seeds`` group as well."""
    # ``groups_too`` lets a refusal suggest a group.
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
    refuse_file_of_run(Path(name))
    named = named_one(name, runs_dir)
    if named is None:
        raise _no_run(name, runs_dir, groups_too)
    return require_run_dir(named)  # a group named so: said to be one, with one of its runs to give


def named_one(name: str | Path, runs_dir: Path, groups_only: bool = False) -> Path | None:
    """The one run or --seeds group (``groups_only``: group) in ``runs_dir`` trained with ``--name name``, if only one
    was: `fmnist train --name quick`, then `fmnist evaluate quick`."""
    # A group's own runs, which share its --name, are the group's: a group is not one of several. (Of two or more, the
    # refusal names them.)
    whole = _named_whole(runs_dir, name)
    if len(whole) != 1 or (groups_only and not is_seed_group(whole[0])):
        return None
    said_as = "--name" if _trained_as(whole[0]) == str(name) else "group name"  # "grp-x2", its folder's
    log.info("%s: %s, the only one of that %s in %s", name, absolute(whole[0]), said_as, absolute(runs_dir))
    return whole[0]


def warn_if_named_already(name: str, runs_dir: Path) -> None:
    """Warn, before a training of that ``--name``, that a run or group in ``runs_dir`` has it: by the name alone,
    commands will then ask which one is meant."""
    whole = _named_whole(runs_dir, name)
    if whole:
        log.warning("%s in %s %s --name %s already (%s): given by that name, commands will ask which run is meant; "
                    "give them a run's folder", "a run" if len(whole) == 1 else f"{len(whole)} runs",
                    absolute(runs_dir), "has" if len(whole) == 1 else "have", name,
                    whole[0].relative_to(runs_dir).as_posix())


def _named_whole(runs_dir: Path, name: str | Path) -> list[Path]:
    """The runs and groups of ``--name name`` (:func:`_named`), a group's own runs, which share it, left in it."""
    named = _named(runs_dir, name)
    return [d for d in named if not (is_seed_group(d.parent) and d.parent in named)]


def _no_run(name: str | Path, runs_dir: Path, groups_too: bool) -> FmnistError:
    wanted = "a run's or --seeds group's directory" if groups_too else "a run directory"
    said = f"{name} is a file, not a run" if Path(name).is_file() else f"no run {str(name)!r}"  # an image, say
    if Path(runs_dir).exists() and not Path(runs_dir).is_dir():
        return FmnistError(f"{said}: give {wanted}, or with --runs-dir the folder that holds the runs ({runs_dir} is "
                           "a file)")
    if not Path(runs_dir).exists():
        return FmnistError(f"{said}: give {wanted}, or with --runs-dir the folder that holds the runs ({runs_dir} "
                           "does not exist)")
    named = [d for d in _named(runs_dir, name) if groups_too or not is_seed_group(d)]
    if named:  # the name given to `fmnist train --name`, which its folder's time stands before: two or more
        shown = ", ".join(d.relative_to(runs_dir).as_posix() for d in named[:NAMED_SHOWN])
        more = f" and {len(named) - NAMED_SHOWN} more" if len(named) > NAMED_SHOWN else ""
        return FmnistError(f"{said} in {runs_dir}{os.sep}, but runs named {str(name)!r} there, newest first: "
                           f"{shown}{more}; give one of them")
    return FmnistError(f"{said}: give {wanted} or the name of one in {runs_dir}{os.sep} (see 'fmnist runs'; "
                       "--runs-dir for another folder)")


NAMED_SHOWN = 3  # the runs of one --name that a refusal suggests


def _named(runs_dir: Path, name: str | Path) -> list[Path]:
    """The runs and --seeds groups in ``runs_dir`` (or in a group or study folder there) trained with ``--name
    name``, as their own settings say, newest first."""
    if not _looked_up_in(runs_dir, name):
        return []
    try:
        # A group killed before its first run is among run_dirs' too: once each.
        found = list(dict.fromkeys(run_dirs(Path(runs_dir), GROUP_DEPTH)
                                   + [d for d in Path(runs_dir).iterdir() if is_seed_group(d)]))
    except OSError:  # a folder we may not read: the plain refusal then
        return []
    # A group's folder is its --name and seed count, "grp-x2", after its time: asked for by that too. (Not a run's:
    # the second run of a --name in one second is "small-2", which may be another run's --name.)
    named = [d for d in found if _trained_as(d) == str(name)
             or (is_seed_group(d) and re.sub(r"^\d{8}T\d{6}Z-", "", d.name) == str(name))]
    # Newest first, by the UTC time before each name; one made the same second numbered after it: -2, ..., -10.
    return sorted(named, key=lambda d: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", d.name)],
                  reverse=True)


def _trained_as(folder: Path) -> str | None:
    """The --name a run's config.json, or a group's group.json, records; None where it cannot be read."""
    try:
        record = artifacts.read_json(folder / (artifacts.SEED_GROUP if is_seed_group(folder) else artifacts.CONFIG))
    except (FmnistError, OSError):
        return None
    return settings_of(record).get("name")


def _looked_up_in(runs_dir: Path, name: str | Path) -> bool:
    """Whether ``name`` is a bare name (not a path) to look for in ``runs_dir``, a folder there is."""
    return Path(name).name == str(name) and Path(runs_dir).is_dir()


def _in_groups(runs_dir: Path, name: str | Path) -> Path | None:
    """The run folder named ``name`` inside a group in ``runs_dir``, if there is exactly one."""
    if not _looked_up_in(runs_dir, name):
        return None
    found = [d for d in run_dirs(Path(runs_dir), GROUP_DEPTH)
             if d.name == str(name) and d.parent != Path(runs_dir) and (d / artifacts.CONFIG).is_file()]
    if len(found) > 1:
        raise FmnistError(f"{len(found)} runs in {runs_dir} are named {str(name)!r}: give one as a path, such as "
                          f"{found[0]}")
    return found[0] if found else None


@contextlib.contextmanager
def idle_run(name: str | Path, runs_dir: Path, doing: str) -> Iterator[Path]:
    """A run that a command writes into (evaluate, report, export), kept from training for the block; a run whose folder
    takes no new files is refused before the work."""
    run_dir = resolve_run(name, runs_dir)
    why = unwritable(run_dir)
    if why:  # found at once, not after the scoring's seconds
        raise FmnistError(f"cannot write in {run_dir} ({why}): to {doing}, fmnist writes files there; copy the run "
                          "to a folder you may write in, and give that")
    refuse_group_in_training(run_dir, f"to {doing}")  # its process may come to this run while the command writes
    tidy_if_idle(run_dir)  # a killed evaluate's, report's or export's pictures half drawn, say
    # Kept from training: not while its training process, scoring it say, still writes there, and no resume begins
    # before the command ends.
    # Shared: two such commands may run together (an export of each format), but never beside a training.
    with held_lock(run_dir / artifacts.LOCK, f"{run_dir} is being trained right now; to {doing}, {WAIT_FOR_TRAINING}",
                   shared=True):
        yield run_dir


def resolve_resumable(name: Path, runs_dir: Path) -> Path:
    """A run or --seeds group to resume, given as a path or as its name in ``runs_dir`` (or in a group there)."""
    if Path(name).exists():
        refuse_file_of_run(Path(name))
        return Path(name)
    if (Path(runs_dir) / name).is_dir():
        return Path(runs_dir) / name
    found = _in_groups(runs_dir, name) or named_one(name, runs_dir)
    if found is None:
        raise _no_run(name, runs_dir, groups_too=True)
    return found


def is_model_alone(path: Path) -> bool:
    """A ``.keras`` file, or a folder holding one with its checksum and no run's config: a model without its run,
    which carries what predicting needs."""
    path = Path(path)
    if path.suffix == ".keras" and not path.is_dir():  # a run's own is its run's
        return path.exists() and not (path.name == artifacts.MODEL and (path.parent / artifacts.CONFIG).is_file())
    return path.is_dir() and not (path / artifacts.CONFIG).exists() and (path / artifacts.MODEL_SHA256).is_file()


def resolve_model(name: str | Path, runs_dir: Path) -> Path:
    """A ``.keras`` file, a folder holding one with its checksum alone (the model carries what predicting needs),
    else a run as :func:`resolve_run` finds it (one named ``v2.keras`` too)."""
    path = Path(name)
    if is_model_alone(path):
        return path
    if path.suffix == ".keras" and not path.is_dir():
        try:
            return resolve_run(name, runs_dir)
        except FmnistError:  # no run of that name either: the error to give is that no model is there
            return path
    for record in (path / artifacts.EXPORT_INFO, path.parent / artifacts.EXPORT_INFO):
        if path.exists() and record.is_file():  # exports/<format>/, or the file or folder in it
            run = record.absolute().parent.parent.parent  # <run>/exports/<format>/export.json
            raise FmnistError(f"{path} is an export, for other runtimes ({record} says how to call it); fmnist "
                              f"takes the run it was exported from, {run}, or its {artifacts.MODEL}")
    return resolve_run(name, runs_dir)


def teacher_run_dir(teacher: str | Path) -> Path:
    """The run a teacher (a run directory or its model.keras) belongs to: its calibration temperature is kept there."""
    teacher = Path(teacher)
    run_dir = teacher if teacher.is_dir() else teacher.parent
    if not (run_dir / artifacts.CONFIG).is_file():
        raise FmnistError(f"no {artifacts.CONFIG} in {run_dir}: a teacher must be a run made by 'fmnist train' "
                          f"(or its {artifacts.MODEL} there), as its calibration temperature is kept in the run")
    return run_dir
