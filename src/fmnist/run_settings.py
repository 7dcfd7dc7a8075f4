"""The settings a run or a ``--seeds`` group records, compared: whether a run belongs to its group, and the group's
run for each seed; and the network they describe, as tables and the model check name it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from fmnist import artifacts, runs
from fmnist.errors import FmnistError


def settings_of(record: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's config.json or a group's group.json holds, or none where they are damaged."""
    settings = record.get("settings")
    return settings if isinstance(settings, dict) else {}


_MISSING = object()  # a setting one side of a comparison lacks


def settings_differ(planned: dict[str, Any], member: dict[str, Any], ignored: Iterable[str] = ("seed", "name")
                    ) -> list[str]:
    """The settings, as JSON keeps them, in which a group's ``member`` is not the group's (those ``ignored`` apart;
    a study compares its seed too)."""
    from fmnist.settings import TrainSettings

    known = TrainSettings.names()
    # One this fmnist does not know (a later one's) differs where one side lacks it or the two disagree; one that a
    # later or earlier fmnist added, which this one knows, is compared only where both have it, as a resume fills it
    # in.
    unknown = {k for k in (planned.keys() | member.keys()) - known
               if planned.get(k, _MISSING) != member.get(k, _MISSING)}
    shared = (planned.keys() & member.keys() & known) - set(ignored)
    return sorted(unknown | {k for k in shared if planned[k] != member[k]})


def differs_from_group(group: dict[str, Any], member: dict[str, Any]) -> list[str]:
    """What of a run's config.json (``member``) is not as its ``--seeds`` group's group.json (``group``) has it:
    settings (seed and name apart), backend or data."""
    # Such a run would be counted in the group's mean, or resumed with the group's settings, as its members are told
    # apart by seed alone.
    differ = settings_differ(settings_of(group), settings_of(member))
    # What a damaged group.json lacks is not held against its runs (its resume refuses the group itself).
    if "backend" in group and member.get("backend") != group["backend"]:
        differ.append("backend")
    if _data_checksums(group) is not None and _data_checksums(member) != _data_checksums(group):
        differ.append("data")
    return differ


def _data_checksums(record: dict[str, Any]) -> Any:
    data = record.get("data")
    return data.get("sha256") if isinstance(data, dict) else None


def recorded_seed(record: dict[str, Any]) -> int | None:
    """The seed a run's config.json records, or None where it is damaged (not a whole number; JSON's true is not 1)."""
    seed = settings_of(record).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


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


@dataclasses.dataclass(frozen=True)
class GroupMembers:
    """A ``--seeds`` group's run folders as its resume sees them."""

    picked: dict[int, Path]  # the group's run of each seed
    passed_over: dict[Path, Path]  # a second run of a seed (trained there by hand): the run counted instead
    foreign: dict[Path, list[str]]  # copied or edited in by hand: what of it differs from the group


def group_members(group: Path, planned: dict[str, Any]) -> GroupMembers:
    """The runs in a group's folder, against ``planned`` (its group.json, with the settings its resume fills in). A run
    whose seed or status.json is damaged is no seed's: its seed is trained again, as its state is not known."""
    candidates, foreign = [], {}
    for run_dir in sorted(p for p in Path(group).iterdir() if not p.name.startswith(".")):  # oldest first, as listed
        try:
            config = artifacts.read_json(run_dir / artifacts.CONFIG)
        except FmnistError:  # none, damaged, or a folder it may not enter
            continue
        seed = recorded_seed(config)
        differ = differs_from_group(planned, config) if seed is not None else []
        if differ:
            foreign[run_dir] = differ
            continue
        try:
            done = runs.finished(run_dir)
        except (FmnistError, OSError):
            continue
        if seed is not None:
            candidates.append((seed, done, run_dir))
    picked = pick_members(candidates)
    return GroupMembers(picked, {d: picked[seed] for seed, _, d in candidates if picked[seed] != d}, foreign)


def network_text(settings: dict[str, Any]) -> str | None:
    """The network that settings describe, as the table shows it: "ConvNet", or the hidden sizes ("512-256-64-32")."""
    if settings.get("architecture") == "cnn":  # its hidden sizes are the unused dense defaults
        return "ConvNet"
    sizes = settings.get("hidden_sizes")
    return "-".join(str(n) for n in sizes) if isinstance(sizes, list) else None
