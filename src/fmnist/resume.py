"""`fmnist train --resume RUN`: continue a killed or interrupted run from its last finished epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fmnist import artifacts, run_list, run_locks, runs
from fmnist.backup_file import epochs_done, finished_history
from fmnist.errors import DamagedFile, FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.settings import BACKENDS, TrainSettings

if TYPE_CHECKING:
    from fmnist.data import Dataset
    from fmnist.train import TrainResult

log = logging.getLogger(__name__)


def _finished(run_dir: Path) -> bool:
    """:func:`runs.finished`, with what to do about a status.json that cannot tell."""
    try:
        return runs.finished(run_dir)
    except DamagedFile as exc:  # without it, the files that are there tell
        raise FmnistError(f"{exc}: restore it from a copy, or remove it: then a run with a trained model is scored "
                          f"by 'fmnist evaluate {run_dir}', and one without resumes from its backup") from None


def require_unfinished(run_dir: Path) -> None:
    """Refuse to resume a run whose training has finished: resuming it would train it again from scratch."""
    if _finished(run_dir):
        from fmnist.report import read_config

        try:  # the command advised needs it
            read_config(run_dir)
        except DamagedFile as exc:
            raise FmnistError(f"{run_dir} has already finished training; nothing to resume, but {exc}") from None
        raise FmnistError(f"{run_dir} has already finished training; nothing to resume "
                          f"(if its metrics are missing, 'fmnist evaluate {run_dir}' scores it)")
    status = Path(run_dir) / artifacts.STATUS
    if runs.diverged(run_dir):
        raise FmnistError(f"{run_dir} diverged ({artifacts.read_json(status).get('error')}): resumed with the same "
                          f"settings it would diverge again; {runs.DIVERGED_ADVICE}")
    if not status.is_file() and (Path(run_dir) / artifacts.MODEL_SHA256).is_file():
        # A run writes its status long before its model: without it, only the saved model tells that it finished.
        raise FmnistError(f"{run_dir} has a trained model but no {artifacts.STATUS}: resuming would train it again "
                          f"over that model; 'fmnist evaluate {run_dir}' scores the model as it is")


def keep_finished_epochs(run_dir: Path) -> int:
    """Cut history.csv back to the epochs in the backup (:func:`finished_history`) and return their number."""
    history = Path(run_dir) / artifacts.HISTORY
    artifacts.remove_temporaries(run_dir)  # the run's lock is held: nothing else writes there
    epochs = epochs_done(run_dir)  # which refuses a history that lacks some of them
    if history.is_file():
        artifacts.write_text(history, "".join(finished_history(run_dir, epochs)[0]))
    return epochs


def resume_run(
    run_dir: Path, backend: str | None = None, data_dir: Path | None = None, dataset: Dataset | None = None,
    extra_callbacks: Sequence[Any] = (), finished_note: Callable[[], dict[str, Any]] = dict,
) -> TrainResult:
    """Continue ``run_dir`` with its own settings and backend, to the normal evaluation and report; a run stopped
    after its training, while it was being scored or its report drawn, is only scored or drawn."""
    from fmnist.backend import activate

    run_dir = runs.require_run_dir(run_dir)
    runs.refuse_group_in_training(run_dir, "it trains this run in its turn, and must find it as it left it")
    group = runs.in_seed_group(run_dir)
    scoring_only = _finished(run_dir)
    if runs.complete(run_dir):
        require_unfinished(run_dir)  # which refuses it: nothing is left to do
    config, settings = read_resumable(run_dir / artifacts.CONFIG, {"settings": dict}, backend, "train it again")
    activate(config["backend"])
    from fmnist.data import load_dataset
    from fmnist.train import train

    dataset = dataset or load_dataset(data_dir)
    require_same_data(dataset, config, run_dir)
    if scoring_only:
        result = score_finished(run_dir, dataset, refuse_done=True)
    else:
        result = train(settings, config["backend"], data_dir=data_dir, dataset=dataset, resume_dir=run_dir,
                       extra_callbacks=extra_callbacks, finished_note=finished_note)
    if group and not (group / artifacts.SEED_SUMMARY).is_file():
        log.warning("%s is one run of the --seeds group %s, which has no summary yet: '%s' trains its seeds not "
                    "begun and writes it", run_dir.name, group, runs.resume_command(run_dir))
    return result


def score_finished(run_dir: Path, dataset: Dataset, refuse_done: bool = False) -> TrainResult:
    """A run whose training finished: scored if a stop cut its evaluation short (or its metrics.json was damaged
    since), its report drawn if that was cut short; with ``refuse_done``, refused if neither is left to do."""
    from fmnist.evaluate import evaluate_run
    from fmnist.report import build_report
    from fmnist.train import TrainResult, stop_while_scoring_reported

    status = artifacts.read_json(run_dir / artifacts.STATUS)
    if any(artifacts.json_number(status.get(key)) is None for key in ("epochs", "train_seconds")):
        raise FmnistError(f"{run_dir / artifacts.STATUS} lacks its epochs or training time; restore it, or "
                          f"remove {run_dir} and train it again")
    metrics_path = run_dir / artifacts.METRICS
    with run_locks.claim_run(run_dir), stop_while_scoring_reported(run_dir):  # its trainer may be scoring it still
        artifacts.remove_resume_files(run_dir)  # left by a kill just after its training finished
        try:
            metrics = artifacts.read_json(metrics_path) if metrics_path.is_file() else {}
        except DamagedFile:
            metrics = {}
        if refuse_done and fully_scored(metrics) and (run_dir / artifacts.REPORT_HTML).is_file():
            require_unfinished(run_dir)  # finished by its trainer while this waited for its lock: refused as later
        if not fully_scored(metrics):
            log.info("scoring %s: its training finished, its %s is missing or damaged", runs.absolute(run_dir),
                     artifacts.METRICS)
            metrics = evaluate_run(run_dir, dataset=dataset)
        elif not (run_dir / artifacts.REPORT_HTML).is_file():
            build_report(run_dir)
    return TrainResult(run_dir, metrics, status["epochs"], status["train_seconds"])


def fully_scored(metrics: dict[str, Any]) -> bool:
    """Whether ``metrics`` holds every figure a seed group's summary takes from it, each a number."""
    per_class = metrics.get("per_class")
    return (run_list.scored_accuracy(metrics) is not None
            and all(artifacts.json_number(metrics.get(key)) is not None
                    for key in ("macro_f1", "ece", "ece_before_scaling"))
            and isinstance(per_class, dict) and set(per_class) == set(CLASS_NAMES)
            and all(isinstance(m, dict) and artifacts.json_number(m.get("f1-score")) is not None
                    for m in per_class.values()))


def read_resumable(path: Path, kinds: dict[str, type], backend: str | None,
                   otherwise: str) -> tuple[dict[str, Any], TrainSettings]:
    """A run's config or a seed group's record, with what a resume needs (``kinds``, a backend, the data) checked,
    and the settings it holds."""
    try:
        record = artifacts.read_json(path)
    except DamagedFile as exc:
        raise DamagedFile(f"{exc}: restore it from a copy (a resume needs what it holds)"
                          f"{', or ' + otherwise if otherwise else ''}") from None
    kinds = {**kinds, "backend": str, "data": dict}
    lacking = [key for key, kind in kinds.items() if not isinstance(record.get(key), kind)]
    if lacking:
        raise FmnistError(f"{path} lacks {', '.join(lacking)} (an older fmnist wrote it?), so it cannot be resumed; "
                          f"{otherwise}")
    if record["backend"] not in BACKENDS:  # edited by hand: said of the file, which the user never typed
        raise FmnistError(f"{path} names the backend {record['backend']!r}, which fmnist does not run (it runs "
                          f"{', '.join(BACKENDS)}); restore the file from a copy if it was edited"
                          f"{', or ' + otherwise if otherwise else ''}")
    if backend and backend != record["backend"]:
        raise FmnistError(f"{path.parent} was trained with the {record['backend']} backend; resume it with that one")
    try:
        settings = TrainSettings.from_dict(record["settings"])
    except FmnistError as exc:  # edited by hand, or past a limit this version set since: say which file
        raise FmnistError(f"{path}: {exc}; restore the file from a copy if it was edited, or, if this fmnist no "
                          "longer accepts what it held then, train a new run") from None
    # An older fmnist's run lacks the settings added since (or one was deleted by hand): said, not taken silently.
    filled = sorted(TrainSettings.names() - record["settings"].keys())
    if filled:
        taken = ", ".join(f"{name} {getattr(settings, name)!r}" for name in filled)
        log.warning("%s lacks %s (an older fmnist's, or edited): taking the defaults, %s", path,
                    ", ".join(filled), taken)
    return record, settings


def require_same_data(dataset: Dataset, record: dict[str, Any], trained: Path) -> None:
    if dataset.checksums != record["data"].get("sha256"):
        raise FmnistError(f"the data found ({dataset.source}) are not the data {trained} was trained on")
