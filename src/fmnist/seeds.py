"""`fmnist train --seeds N`: the same recipe over N seeds, kept in one group directory with a summary."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from fmnist import artifacts, defaults, run_locks, run_settings, runs, stopping
from fmnist.data import Dataset, data_record, load_dataset
from fmnist.errors import DamagedFile, FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.settings import TrainSettings

if TYPE_CHECKING:
    from fmnist.train import TrainResult

log = logging.getLogger(__name__)

def _spread(values: list[float]) -> float:
    """The sample standard deviation (ddof 1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(accuracies: list[float], per_class_f1: list[dict[str, float]]) -> dict[str, Any]:
    """The accuracies' :func:`accuracy_spread`; per-class F1 mean and spread."""
    return {
        "seeds": len(accuracies),
        "test_accuracy": accuracy_spread(accuracies),
        "per_class_f1": {
            name: {"mean": float(np.mean([f[name] for f in per_class_f1])),
                   "std": _spread([f[name] for f in per_class_f1])}
            for name in CLASS_NAMES
        },
    }


def accuracy_spread(accuracies: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and a 95% Student-t interval of the mean, within [0, 1] where an accuracy lies
    (two seeds far apart stretch it past: ``ci95_cut_at`` names the ends cut); of one accuracy, no spread (None)."""
    from scipy import stats

    values = np.asarray(accuracies, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    if n == 1:
        return {"values": values.tolist(), "mean": mean, "std": None, "ci95": None, "ci95_cut_at": []}
    std = _spread(accuracies)
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))
    ci95 = [max(mean - half, 0.0), min(mean + half, 1.0)]
    return {"values": values.tolist(), "mean": mean, "std": std, "ci95": ci95, "ci95_cut_at": cut_at(ci95)}


def cut_at(ci95: list[float]) -> list[int]:
    """The ends, 0 or 1, at which an interval of the mean accuracy was cut: a t-interval runs past what an accuracy can
    be (an end there is not cut where all seeds scored it)."""
    low, high = ci95
    return [end for end, cut in ((0, low == 0.0 < high), (1, high == 1.0 > low)) if cut]


def interval_text(ci95: list[float], joiner: str = "-") -> str:
    """An interval of the mean accuracy as summaries print it, a bound that an accuracy's 0 or 1 cut said so; one cut
    to all of 0-1 is said to bound nothing. (No brackets: it is given in brackets.)"""
    low, high = ci95
    cut = cut_at(ci95)
    if cut == [0, 1]:
        note = ", all of 0-1: too few seeds for how far apart they scored, more narrow it"
    else:
        note = "".join(f", cut at {end}" for end in cut)
    return f"{low:.4f}{joiner}{high:.4f}{note}"


def check_count(seeds: int) -> None:
    """Refuse a number of seeds that cannot make a group."""
    if seeds < 2:
        raise FmnistError(f"a spread and an interval need 2 seeds or more, not {seeds} "
                          "(for one run, leave --seeds out)")
    if seeds > defaults.MAX_SEEDS:
        raise FmnistError(f"at most {defaults.MAX_SEEDS} seeds, not {seeds}: each of them is a full training")


def refuse_other_runs(runs_dir: Path, settings: TrainSettings, backend: str, dataset: Dataset) -> None:
    """A group's folder takes only runs the group could have made itself (its settings, backend and data, of any
    seed): the group's resume refuses the whole group while another lies there."""
    path = Path(runs_dir) / artifacts.SEED_GROUP
    if not path.is_file():
        return
    advice = "restore it from a copy, or choose another --runs-dir"
    try:
        record = artifacts.read_json(path)
    except DamagedFile as exc:
        raise FmnistError(f"{exc}: {advice}") from None
    if not isinstance(record.get("settings"), dict) or not isinstance(record.get("data"), dict):
        raise FmnistError(f"{path} is damaged (its settings or data are not JSON objects): {advice}")
    differ = run_settings.differs_from_group(record, {"settings": settings.to_dict(), "backend": backend,
                                                      "data": data_record(dataset)})
    if differ:
        raise FmnistError(f"{runs_dir} is a group made by 'fmnist train --seeds', whose {', '.join(differ)} this run "
                          "does not share: there the group's resume would refuse the whole group until it was "
                          "moved out; choose another --runs-dir")


def seed_members(settings: TrainSettings, seeds: int) -> list[TrainSettings]:
    """The group's runs: ``settings`` with seed, seed+1, ..."""
    last = settings.seed + seeds - 1
    if last >= 2**32:  # the settings' own check would name the last seed alone, which the user never gave
        raise FmnistError(f"--seeds {seeds} from seed {settings.seed} would go up to seed {last}, over 2**32 - 1: "
                          f"start at a seed of at most {2**32 - seeds}")
    return [dataclasses.replace(settings, seed=settings.seed + k) for k in range(seeds)]


def train_seeds(
    settings: TrainSettings, backend: str, seeds: int, runs_dir: Path = Path(defaults.RUNS_DIR),
    data_dir: Path | None = None, dataset: Dataset | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train ``seeds`` runs (seed, seed+1, ...) inside a new group directory; write and return the summary."""
    from fmnist.train import check_inputs

    check_count(seeds)
    dataset = dataset or load_dataset(data_dir)
    members = seed_members(settings, seeds)  # every seed checked now
    check_inputs(settings, dataset)
    group = runs.create_run_dir(runs_dir, f"{settings.name}-x{seeds}")
    # Claimed for its whole training: `fmnist runs` then tells a live group from a killed one.
    with runs.removed_unless_begun(group, artifacts.SEED_GROUP), run_locks.claim_run(group):
        artifacts.write_json(group / artifacts.SEED_GROUP, {
            "settings": settings.to_dict(), "backend": backend, "seeds": seeds, "created": runs.utc_now(),
            "data": data_record(dataset)})
        return group, _complete_group(group, settings, members, backend, dataset, existing={})


def resume_seeds(
    group: Path, backend: str | None = None, data_dir: Path | None = None, dataset: Dataset | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Finish a killed ``--seeds`` group: keep its finished runs, resume an unfinished one, train the seeds not
    begun."""
    from fmnist.backend import activate
    from fmnist.resume import read_resumable, require_same_data

    group = Path(group)
    record, settings = read_resumable(group / artifacts.SEED_GROUP, {"settings": dict, "seeds": int}, backend,
                                      "resume its runs one by one")
    check_count(record["seeds"])
    members = seed_members(settings, record["seeds"])
    with run_locks.claim_run(group):  # a second process resuming it would train its seeds not begun a second time
        # Listed once the group is this process's; its settings with those added since filled in, as resumed.
        existing = _member_dirs(group, {**record, "settings": settings.to_dict()})
        for member in members:
            if member.seed in existing and runs.diverged(existing[member.seed]):
                raise FmnistError(f"seed {member.seed} of {group} diverged ({existing[member.seed].name}): resumed "
                                  f"with the same settings it would diverge again; {runs.GROUP_DIVERGED_ADVICE}")
        activate(record["backend"], settings.architecture)
        dataset = dataset or load_dataset(data_dir)
        require_same_data(dataset, record, group)
        finished = (group / artifacts.SEED_SUMMARY).is_file() and all(
            member.seed in existing and runs.finished(existing[member.seed]) for member in members)
        summary = _complete_group(group, settings, members, record["backend"], dataset, existing)
        if finished:  # as a finished run's resume says, though the group's is a repair too
            log.info("%s had finished: nothing trained; its seeds' files checked (a report or scores missing, "
                     "made again) and its summary written again", group)
        return group, summary


def _member_dirs(group: Path, planned: dict[str, Any]) -> dict[int, Path]:
    """The group's run directories by seed; of two with one seed, a finished one, else the newest. A run whose settings,
    backend or data are not the group's (``planned``, as group.json has them) is refused."""
    # Refused, as it would be resumed with the group's, or counted.
    found = run_settings.group_members(group, planned)
    if found.foreign:
        run_dir, differ = next(iter(found.foreign.items()))
        raise FmnistError(f"{run_dir} differs from its --seeds group, in {artifacts.SEED_GROUP}, in its "
                          f"{', '.join(differ)}: it was copied or edited there by hand; move it out of {group}, "
                          "then resume the group")
    return found.picked


def _complete_group(
    group: Path, settings: TrainSettings, members: list[TrainSettings], backend: str, dataset: Dataset,
    existing: dict[int, Path],
) -> dict[str, Any]:
    """Train (or resume, or reuse) every member, ``existing`` its run directories by seed (:func:`_member_dirs`),
    then write the group's summary."""
    try:
        results = _trained_members(group, members, backend, dataset, existing)
        summary = _group_summary(settings, members, backend, results)
        artifacts.write_json(group / artifacts.SEED_SUMMARY, summary)
    except stopping.RunStopped:  # in a seed's training or scoring, which named the group's resume
        raise
    except KeyboardInterrupt:  # between seeds, or while the summary is written
        command = runs.resume_command(group)
        log.warning("stopped: '%s' finishes the group (its seeds not trained yet, and its summary)", command)
        raise stopping.RunStopped(group, runs.INTERRUPTED, command) from None
    return summary


def _trained_members(group: Path, members: list[TrainSettings], backend: str, dataset: Dataset,
                     existing: dict[int, Path]) -> list[TrainResult]:
    """Each member's run, trained, resumed or (finished already) scored where need be."""
    import keras

    from fmnist.resume import score_finished
    from fmnist.train import train

    results = []
    for k, member in enumerate(members):
        run_dir = existing.get(member.seed)
        if runs.finished(run_dir):
            log.info("seed %d (%d of %d): finished in %s", member.seed, k + 1, len(members), run_dir.name)
            with _warnings_of(member.seed):
                results.append(score_finished(run_dir, dataset))
        else:
            log.info("seed %d (%d of %d)", member.seed, k + 1, len(members))
            keras.backend.clear_session()
            stopping.check()  # clear_session collects garbage, where Python drops a Ctrl-C with a warning
            with _warnings_of(member.seed):
                results.append(train(member, backend, runs_dir=group, dataset=dataset, resume_dir=run_dir))
        # Each seed's score as it comes, and its page (a single run's are its command's result on stdout).
        log.info("seed %d: test accuracy %.4f, macro F1 %.4f (report: %s)", member.seed,
                 results[-1].metrics["test_accuracy"], results[-1].metrics["macro_f1"],
                 results[-1].run_dir / artifacts.REPORT_HTML)
    return results


@contextlib.contextmanager
def _warnings_of(seed: int) -> Iterator[None]:
    """fmnist's warnings while a seed trains or is scored, each beginning "seed N: ": under -q they are all a group
    prints, and its seeds' would read alike."""
    make = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make(*args, **kwargs)
        if made.levelno >= logging.WARNING and made.name.startswith(f"{__package__}."):
            made.msg = f"seed {seed}: {made.msg}"
        return made

    logging.setLogRecordFactory(record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make)


# The scores of each run that the group's summary.json lists beside it (`fmnist evaluate` checks them against it).
SUMMARY_RUN_SCORES = ("test_accuracy", "ece_before_scaling", "ece")


def _group_summary(settings: TrainSettings, members: list[TrainSettings], backend: str,
                   results: list[TrainResult]) -> dict[str, Any]:
    """The group's summary.json: its scores' spread over the seeds, and each run's own."""
    summary = summarise(
        [r.metrics["test_accuracy"] for r in results],
        [{name: m["f1-score"] for name, m in r.metrics["per_class"].items()} for r in results],
    )
    summary.update(
        settings=settings.to_dict(), backend=backend,
        runs=[{"run_dir": r.run_dir.name, "seed": member.seed, "epochs": r.epochs_run,
               "train_seconds": round(r.train_seconds, 2), **{key: r.metrics[key] for key in SUMMARY_RUN_SCORES}}
              for member, r in zip(members, results)],
        train_seconds={"mean": float(np.mean([r.train_seconds for r in results])),
                       "std": _spread([r.train_seconds for r in results])},
        ece_before_scaling={"mean": float(np.mean([r.metrics["ece_before_scaling"] for r in results]))},
        ece={"mean": float(np.mean([r.metrics["ece"] for r in results]))},
    )
    return summary


def summary_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a group's summary.json lists, each an object (one edited by hand may hold anything there)."""
    listed = summary.get("runs")
    return [entry for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []


def summary_record(group: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The group's summary as ``--json`` gives it: each run's folder as a path (summary.json names it in the group)."""
    return {"group_dir": group, **summary, "runs": [{**r, "run_dir": group / r["run_dir"]} for r in summary["runs"]]}


def summary_text(group: Path, summary: dict[str, Any]) -> str:
    acc = summary["test_accuracy"]
    weakest = min(summary["per_class_f1"], key=lambda name: summary["per_class_f1"][name]["mean"])
    f1 = summary["per_class_f1"][weakest]
    return (
        f"{summary['seeds']} seeds: test accuracy mean {acc['mean']:.4f} ± sd {acc['std']:.4f} "
        f"(95% CI of the mean over the seeds {interval_text(acc['ci95'])}); "
        f"weakest class {weakest} F1 {f1['mean']:.4f} ± sd {f1['std']:.4f}\n"
        f"training {summary['train_seconds']['mean']:.1f}s per seed on {summary['backend']}; "
        f"ECE {summary['ece_before_scaling']['mean']:.4f} -> {summary['ece']['mean']:.4f} after scaling\n"
        # Each seed's own, as a single run's closing lines give them (its line on stderr is gone under -q).
        + "".join(f"seed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, {r['epochs']} "
                  f"epoch{'' if r['epochs'] == 1 else 's'}\n" for r in summary["runs"])
        + f"summary: {runs.absolute(group / artifacts.SEED_SUMMARY)}\n"
        f"next: fmnist runs compare {runs.shell_word(str(runs.absolute(group)))}   one page of its seeds: their "
        "curves, F1 per class, and the mean with its interval"
    )
