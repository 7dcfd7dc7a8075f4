"""`fmnist tune`: an Optuna study over the recipe's knobs, in which every trial is an ordinary training run."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna

from fmnist import artifacts, defaults, run_locks, run_settings, runs
from fmnist.data import Dataset, load_dataset
from fmnist.errors import FmnistError, WriteRefused, error_text
from fmnist.settings import FLAG_SETTINGS, TrainSettings, flag, flag_value, is_plain_name
from fmnist.train import Diverged, TrainResult, check_inputs, train
from fmnist.tune_storage import (
    GRACE_S, absolute_storage, default_runs_dir, is_database, open_storage, refuse_other_than_file, storage_file,
    worker_gone, worker_key,
)

log = logging.getLogger(__name__)

# The searched knobs of TrainSettings; the recipe's own values are inside every range.
HIDDEN_SIZES = ("512,256,64,32", "128,64", "256,128", "512,256", "1024,512", "512,256,128", "1024,512,256,128")
BATCH_SIZES = (32, 64, 128, 256)
# A trial whose val_loss is worse than the median of earlier trials' at the same epoch stops there;
# not before 4 trials have finished, nor in a trial's first epoch (nor its last: pruning_callback).
PRUNER = dict(n_startup_trials=4, n_warmup_steps=1)
# A cut-short trial's run in use by another process (`fmnist evaluate` by hand): how long a worker waits for it, and
# how often it looks, before it trains the settings again instead.
BUSY_WAIT_S = 600
BUSY_POLL_S = 5
# The study's user attribute that keeps the settings every trial shares.
FIXED_SETTINGS = "fixed_settings"
FIXED_SETTINGS_WAITS = 20  # 0.1 s apart: how long a continued study without them waits for its maker to record them
RUN_OF = "run_of"  # a trial's user attribute: the trial whose run it trains (its own, or an earlier attempt's)


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    trials_run: int
    states: dict[str, int]
    best: dict[str, Any] | None
    budget: str = ""  # the trials' --epochs and --limit where the study set them: --train-best's to train as they did

    def record(self) -> dict[str, Any]:
        """As --json gives it: the best trial's hidden sizes a list of units, as a run's config.json has them (the
        study stores them as the flag takes them, "512,256")."""
        record = dataclasses.asdict(self)
        sizes = (self.best or {}).get("params", {}).get("hidden_sizes")
        if isinstance(sizes, str) and re.fullmatch(r"\d+(,\d+)*", sizes):  # else another program's study: as it is
            record["best"]["params"]["hidden_sizes"] = list(hidden_sizes_of(sizes))
        return record


def hidden_sizes_of(param: str) -> tuple[int, ...]:
    """A trial's hidden sizes, stored as the flag takes them ("512,256"), as units."""
    return tuple(int(size) for size in param.split(","))


def lowers_rate(epochs: Any, lr_patience: Any, early_stopping_patience: Any) -> bool:
    """Whether a trial can train an epoch at a lowered learning rate; else the plateau factor does nothing: not
    searched."""
    if not all(isinstance(n, int) for n in (epochs, lr_patience, early_stopping_patience)):
        return True  # a study of an fmnist that did not record them searched it
    # The rate drops after ``lr_patience`` epochs that do not beat the best, so not in fewer than ``lr_patience`` + 2
    # epochs, nor where early stopping, as patient or less, ends the training first (it counts the same epochs).
    return epochs >= lr_patience + 2 and early_stopping_patience > lr_patience


def suggest(trial: optuna.trial.BaseTrial, base: TrainSettings) -> None:
    """Draw a value for each knob searched with ``base``'s budget; they are then in ``trial.params``."""
    trial.suggest_categorical("hidden_sizes", HIDDEN_SIZES)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    if "lr_factor" in trial_params(base):
        trial.suggest_float("lr_factor", 0.1, 0.5)


def trial_params(settings: TrainSettings) -> dict[str, Any]:
    """The knobs a study with ``settings`` searches, as Optuna stores them."""
    params = {
        "hidden_sizes": flag_value(settings.hidden_sizes), "dropout": settings.dropout,
        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size, "lr_factor": settings.lr_factor,
    }
    return params if lowers_rate(settings.epochs, settings.lr_patience, settings.early_stopping_patience) else {
        k: v for k, v in params.items() if k != "lr_factor"}


def settings_for(base: TrainSettings, params: dict[str, Any], name: str) -> TrainSettings:
    """``base`` with a trial's parameters put in."""
    try:
        values = {**params, "hidden_sizes": hidden_sizes_of(params["hidden_sizes"])}
        return dataclasses.replace(base, name=name, **values)
    except (KeyError, TypeError, ValueError, AttributeError):  # a study another program wrote into the storage
        raise FmnistError(f"the trial's parameters {params} are not those 'fmnist tune' searches "
                          f"({', '.join(sorted(trial_params(base)))})") from None


def _sampler_and_pruner() -> dict[str, Any]:
    # Unseeded on purpose: workers sharing a study must not all draw the same parameters.
    return {"sampler": optuna.samplers.TPESampler(), "pruner": optuna.pruners.MedianPruner(**PRUNER)}


def load_study(name: str, storage: str | None, runs_dir: Path | None) -> tuple[optuna.Study, str, Path]:
    """An existing study, how to name its storage and its runs folder (``runs_dir`` if given, else where its trials
    would go or ran), or a one-line error naming the studies that do exist there."""
    # Without ``runs_dir``, the runs folder its trials would go to if it were continued, where it holds the study's
    # folder, else the one its trials ran in, else the default.
    _check_name(name)
    stored_in = storage_file(storage, runs_dir or default_runs_dir(storage))
    if storage and stored_in is not None and not is_database(storage):
        refuse_other_than_file(stored_in)
    if stored_in is not None and not stored_in.is_file():  # opening it would create it, empty
        kind = "database file" if is_database(storage) else "journal"
        where = "check the path --storage gives" if storage else "pass --storage if the study is elsewhere"
        raise FmnistError(f"no study {name!r}: there is no {kind} {stored_in} ({where})")
    store, shown = open_storage(storage, runs_dir or default_runs_dir(storage))
    try:
        study = optuna.load_study(study_name=name, storage=store, **_sampler_and_pruner())
    except KeyError:
        names = optuna.get_all_study_names(store)
        raise FmnistError(f"no study {name!r} in {shown}; studies there: {', '.join(names) or 'none'}"
                          f"{'' if storage else ' (pass --storage if it is elsewhere)'}") from None
    # A copied or moved journal's own folder, beside it, not the one its trials first ran in. (A database's trials
    # went where each worker's --runs-dir said: ./runs here may hold another study's of that name.)
    continued_in = default_runs_dir(storage)
    here = continued_in if not is_database(storage) and (continued_in / name).is_dir() else None
    return study, shown, runs_dir or here or _trials_runs_dir(study) or continued_in


def trial_run_dir(trial: optuna.trial.FrozenTrial, study_dir: Path) -> str | None:
    """Where a trial's run is: in ``study_dir``, where a copied or moved study's runs are, else where it was trained
    (as the trial recorded it; None for a trial without a run)."""
    recorded = trial.user_attrs.get("run_dir")
    if recorded is None:
        return None
    here = Path(study_dir) / Path(recorded).name
    return str(runs.absolute(here)) if here.is_dir() else recorded


def _trials_runs_dir(study: optuna.Study) -> Path | None:
    """The runs folder all the study's trials ran in (each records its run's folder), if it is on this machine."""
    folders = {Path(t.user_attrs["run_dir"]).parent.parent for t in study.get_trials(deepcopy=False)
               if "run_dir" in t.user_attrs}
    return next(iter(folders)) if len(folders) == 1 and next(iter(folders)).is_dir() else None


def pruning_callback(trial: optuna.Trial, pruned_at: list[int], reported: set[int] | None = None,
                     run_of: list[int] | None = None) -> Any:
    """A Keras callback that reports each epoch's val_loss to Optuna (noting the epoch in ``reported``) and stops a
    trial the pruner gives up on, unless it ends there anyway."""
    # ``run_of[0]``, the trial whose run it trains, is recorded with the pruning.
    import keras

    def on_epoch_end(epoch: int, logs: dict) -> None:
        trial.report(logs["val_loss"], epoch)
        if reported is not None:
            reported.add(epoch)
        # Pruning at the last epoch, or where early stopping (called before) ends the run, would save nothing and
        # only call a finished trial pruned.
        if callback.model.stop_training or epoch + 1 >= callback.params["epochs"]:
            return
        if trial.should_prune():
            pruned_at.append(epoch)
            if run_of is not None:  # first: a pruning is always known to be in that run
                trial.set_user_attr(RUN_OF, run_of[0])
            trial.set_user_attr("pruned_at", epoch)  # for a retry, should a stop cut the trial short after this
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    return callback


def _objective(base: TrainSettings, backend: str, study_dir: Path, dataset: Dataset,
               unfailed: list[int] | None = None, heartbeat: bool = False) -> Callable[[optuna.Trial], float]:
    """The trial's function for Optuna; ``unfailed`` gets the number of each trial this worker did not fail: trained to
    its result, or found failed by another worker on a write to it."""
    def objective(trial: optuna.Trial) -> float:
        try:  # failed meanwhile by another worker: found on writing to it, here or in the handlers below
            try:  # a stop anywhere in it, even once its run is trained, leaves the trial to be taken up again
                value = _run_trial(trial, base, backend, study_dir, dataset, heartbeat)
            except KeyboardInterrupt:
                trial.set_user_attr("stopped", True)  # not the settings' fault: taken up when the study is continued
                # Said after the run's own stop line, which names 'fmnist train --resume': both finish it.
                log.warning("trial %d stopped: continuing the study (the same 'fmnist tune' command) finishes its run "
                            "first, unless its settings have run %d times; finished meanwhile by 'fmnist train "
                            "--resume', the run is counted as it is", trial.number, defaults.MAX_TRIAL_ATTEMPTS)
                raise
            except Diverged as exc:  # the settings' fault: recorded, and the study goes on (tune catches it)
                trial.set_user_attr("diverged", exc.what)
                log.warning("trial %d: %s; recorded as failed, the study goes on", trial.number, exc.what)
                raise
            except (OSError, WriteRefused) as exc:  # a full disk, a folder made read-only: not the settings' fault
                refused = error_text(exc)
                with contextlib.suppress(OSError):  # the storage may be refused too: the error is said all the same
                    trial.set_user_attr(SYSTEM_ERROR, refused)
                log.warning("trial %d: the system refused a file (%s); continuing the study (the same 'fmnist tune' "
                            "command) once it can write again takes the trial up, unless its settings have run %d "
                            "times", trial.number, refused, defaults.MAX_TRIAL_ATTEMPTS)
                raise
        except optuna.exceptions.UpdateFinishedTrialError:  # its run was left resumable, as by any other error
            if unfailed is not None:
                unfailed.append(trial.number)
            raise
        if unfailed is not None:  # told next, unless another worker fails it first
            unfailed.append(trial.number)
        return value

    return objective


def _run_trial(trial: optuna.Trial, base: TrainSettings, backend: str, study_dir: Path, dataset: Dataset,
               heartbeat: bool) -> float:
    """Train the trial's run (or finish the one a stop cut short) and return its best val_loss; ``heartbeat``: the
    study's storage is a database, whose heartbeat tells a dead worker on any machine."""
    # Who runs it: a continued study on this machine tells a dead worker's trial from a live one's.
    trial.set_user_attr("heartbeat", heartbeat)  # first: a worker reading the others judges by them
    trial.set_user_attr("worker", worker_key(os.getpid()))
    trial.set_user_attr("host", socket.gethostname())
    # In UTC, as a run's "created": Optuna's own datetime_start is naive local time, read in this process's zone.
    trial.set_user_attr("started", runs.utc_now())
    trial.set_user_attr("backend", backend)  # so the best trial's settings are trained again on it, as tuned
    suggest(trial, base)
    pruned_at: list[int] = []
    reported: set[int] = set()
    settings = settings_for(base, trial.params, name=trial_name(trial.number))
    run_of = [trial.number]  # the trial whose run this one trains: its own, unless it finishes an earlier attempt's
    callbacks = [pruning_callback(trial, pruned_at, reported, run_of)]

    def pruned_note() -> dict[str, str]:  # in the run's status before its report is drawn, which says so
        return {"pruned": f"by study {trial.study.study_name!r} after epoch {pruned_at[0] + 1}"} if pruned_at else {}

    attempts = _earlier_attempts(trial)
    run_dir = None
    for attempt in attempts:  # newest first
        cut_short = _cut_short_run(study_dir, attempt.number, attempt.user_attrs.get("started"), settings, backend,
                                   dataset)
        if cut_short is None:
            continue
        run_of[0] = attempt.number  # the run is named after the attempt that began it
        run_dir = _finish(cut_short, dataset, callbacks, pruned_note)
        if run_dir is None:  # its settings are trained again, in a run of this trial's own
            run_of[0] = trial.number
        else:  # it ended where an attempt in this same run was pruned (one recorded before RUN_OF was: any run)
            pruned_at.extend(t.user_attrs["pruned_at"] for t in attempts if "pruned_at" in t.user_attrs
                             and t.user_attrs.get(RUN_OF, attempt.number) == attempt.number)
        break
    if run_dir is None:
        run_dir = train(settings, backend, runs_dir=study_dir, dataset=dataset, extra_callbacks=callbacks,
                        finished_note=pruned_note).run_dir
    history = artifacts.read_history(run_dir)
    for epoch, value in enumerate(history["val_loss"]):  # those of a finished run's earlier process
        if epoch not in reported:
            trial.report(value, epoch)
    best = (artifacts.best_epoch(history) or 1) - 1  # none when every val_loss is NaN: Optuna fails the trial
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr(RUN_OF, run_of[0])  # a run begun by an earlier attempt keeps that attempt's name
    trial.set_user_attr("epochs", len(history["val_loss"]))
    trial.set_user_attr("val_accuracy", history["val_accuracy"][best])
    if pruned_at:
        # Said where the run is read (fmnist runs, its report): it ended early by the study's hand, not by its own.
        # Its training wrote that, unless an earlier attempt's process was pruned there and cut short before it was.
        if "pruned" not in artifacts.read_json(run_dir / artifacts.STATUS):
            from fmnist.report import build_report

            runs.mark_pruned(run_dir, pruned_note()["pruned"])
            build_report(run_dir)
        raise optuna.TrialPruned(f"val_loss {history['val_loss'][-1]:.4f} after epoch {pruned_at[0] + 1}")
    # The validation split only: the test set never chooses between trials.
    return history["val_loss"][best]


def flag_text(name: str, value: Any) -> str:
    """A setting as the flag that gives it, its value as typed (``--hidden-sizes 512,256``) and quoted for a shell:
    every command tune prints builds its flags so."""
    return f"{flag(name)} {runs.shell_word(flag_value(value))}"


def study_flags(recorded: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Of a study's fixed settings as its storage keeps them, those among ``names`` that a flag gives and that differ
    from the spec's, by name: what a command repeats to train as its trials did."""
    spec = TrainSettings()
    return {k: recorded[k] for k in sorted(names) if k in FLAG_SETTINGS and recorded.get(k) is not None
            and recorded[k] != getattr(spec, k)}


def trial_name(number: int) -> str:
    """The name of a trial's run (its folder is ``<UTC time>-<name>`` in the study's runs directory)."""
    return f"{defaults.TRIAL_PREFIX}{number:04d}"


def _earlier_attempts(trial: optuna.Trial) -> list[optuna.trial.FrozenTrial]:
    """The earlier attempts at these settings, newest first, if ``trial`` is queued to finish their run: a retry cut
    short too may have begun a run of its own, where its first attempt's could not be finished."""
    first = trial.user_attrs.get("retry_of")
    return [] if first is None else sorted(
        (t for t in trial.study.get_trials(deepcopy=False) if _first_drawn(t) == first and t.number < trial.number),
        key=lambda t: t.number, reverse=True)


def _cut_short_run(study_dir: Path, number: int, started: str | None, settings: TrainSettings, backend: str,
                   dataset: Dataset) -> Path | None:
    """The run of trial ``number`` (``started`` then, in UTC), which a stop, a refused file or a dead worker cut short,
    if it can be finished rather than trained again: same settings, backend, data."""
    # A run already finished, by 'fmnist train --resume', is returned too.
    from fmnist.resume import read_resumable, require_same_data

    if started is None:
        return None
    # Not one left by an earlier study of the same name (its journal deleted): begun after the trial was.
    found = [run for run in runs.runs_named(study_dir, trial_name(number)) if _created(run) >= started]
    if len(found) != 1 or run_locks.being_trained(found[0]):
        return None
    try:
        config, trained = read_resumable(found[0] / artifacts.CONFIG, {"settings": dict}, backend, "")
        require_same_data(dataset, config, found[0])
        if runs.diverged(found[0]):
            return None
    except FmnistError:  # another backend or data, or damaged by hand: the settings are trained again instead
        return None
    return found[0] if dataclasses.replace(trained, name=settings.name) == settings else None


def _created(run_dir: Path) -> str:
    """When a run began, as its config.json says (UTC, ISO 8601); "" when that cannot be read."""
    try:
        return str(artifacts.read_json(run_dir / artifacts.CONFIG).get("created", ""))
    except FmnistError:
        return ""


def _finish(run_dir: Path, dataset: Dataset, callbacks: list[Any],
            finished_note: Callable[[], dict[str, str]]) -> Path | None:
    """Finish a cut-short trial's run where it stopped, and return it (one already finished and scored is counted as
    it is); ``None`` if it cannot be, and its settings are to be trained again."""
    from fmnist.resume import resume_run

    run_dir = runs.absolute(run_dir)  # named so in each line below, as the training's own lines name it
    waited_until, told = time.monotonic() + BUSY_WAIT_S, False
    while True:
        try:  # a status.json damaged by hand too is a run that cannot be finished
            if runs.complete(run_dir):  # by 'fmnist train --resume', or scored by hand while this worker waited
                log.info("%s, cut short, was finished since (by 'fmnist train --resume', say): counted as it is",
                         run_dir)
                return run_dir
            if not told:  # said once, not again after a wait
                log.info("finishing %s where it was cut short", run_dir)
            return resume_run(run_dir, dataset=dataset, extra_callbacks=callbacks, finished_note=finished_note).run_dir
        except run_locks.RunInUse as exc:  # scored or exported by hand just now: it is finished once that ends
            if run_locks.being_trained(run_dir):  # a training by hand: not waited for
                log.warning("%s is being trained by another process: its settings are trained again", run_dir)
                return None
            if time.monotonic() > waited_until:
                log.warning("%s is still in use after %d s (%s): its settings are trained again", run_dir,
                            BUSY_WAIT_S, exc)
                return None
            if not told:
                log.info("%s is in use by another process: waiting for it (at most %d s)", run_dir, BUSY_WAIT_S)
                told = True
            time.sleep(BUSY_POLL_S)
        except FmnistError as exc:
            # The settings' fault, as in a run trained from its first epoch; or the system's, which a new run would
            # meet alike: the trial is cut short again, and its run taken up once more.
            if isinstance(exc, (Diverged, WriteRefused)):
                raise
            # Damaged by hand, say, or found diverged by another process since it was picked: that refusal is no
            # Diverged (which ends only the trial), so raised it would end the whole study.
            log.warning("%s cannot be finished (%s): its settings are trained again", run_dir, exc)
            return None


def _check_name(name: str) -> None:
    if name.startswith(".") or not is_plain_name(name):
        raise FmnistError(
            f"study name {name!r} may hold only letters, digits, '-', '_' and '.', and not start with '.'")


def best_trial(study: optuna.Study) -> dict[str, Any] | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    trial = min(complete, key=lambda t: t.value)
    return {"number": trial.number, "val_loss": trial.value, "params": trial.params, **trial.user_attrs}


# A trial's user attribute naming the file the system refused (a full disk, say), which cut it short.
SYSTEM_ERROR = "system_error"
# The state people read for a trial that failed by no fault of its settings (but divergence), by its attribute.
FAILED_AS = {"stopped": "stopped", "diverged": "diverged", runs.KILLED: runs.KILLED, SYSTEM_ERROR: "system error"}
# The attributes of a failed trial whose settings a continued study runs again (a killed one's: when found dead).
TAKEN_UP = ("stopped", SYSTEM_ERROR)


def trial_state(trial: optuna.trial.FrozenTrial) -> str:
    """A trial's state as people read it: Optuna's, but "stopped", "system error" or "diverged" for one failed by
    Ctrl-C, a file the system refused or a NaN loss, and "killed" for one whose worker has ended."""
    # To Optuna the first three are all failed. "killed": still running in a journal whose worker on this machine has
    # ended, as `fmnist runs` says (and once a worker continuing the study has failed it).
    if trial.state == optuna.trial.TrialState.FAIL:
        for attribute, state in FAILED_AS.items():
            if trial.user_attrs.get(attribute):
                return state
    if trial.state == optuna.trial.TrialState.RUNNING and worker_gone(trial.user_attrs):
        return runs.KILLED  # until a worker continuing the study fails it and takes its settings up again
    return trial.state.name.lower()


def study_states(study: optuna.Study) -> dict[str, int]:
    return dict(collections.Counter(trial_state(trial) for trial in study.get_trials(deepcopy=False)))


def tune(
    base: TrainSettings, backend: str | None, trials: int, study_name: str, storage: str | None = None,
    runs_dir: Path | None = None, data_dir: Path | None = None, dataset: Dataset | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Run ``trials`` more trials of the study (made on first use) in this process, on ``backend`` (None: the default),
    started once the storage and study are checked."""
    # The same command in other processes, here or on machines sharing a database, works on the study in parallel.
    from fmnist.backend import activate

    _check_name(study_name)
    if len(study_name.encode("utf-8")) > defaults.MAX_STUDY_NAME_BYTES:  # else refused only at --train-best
        raise FmnistError(f"study name {study_name[:20]!r}... is {len(study_name.encode('utf-8'))} bytes long: at "
                          f"most {defaults.MAX_STUDY_NAME_BYTES}, as the best trial's run is named after it")
    # Our own lines instead: the study, then one per trial. A failed trial's error ends the study as one line,
    # without the traceback Optuna logs as a warning.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    runs_dir = runs_dir or default_runs_dir(storage)
    # Refused before the journal or the study folder exists, not as each trial's failure.
    study_dir = Path(runs_dir) / study_name
    runs.refuse_inside_run(study_dir, "the study's runs directory")
    if runs.is_seed_group(study_dir):  # its first trial would be refused there, mid-study
        raise FmnistError(f"--study {study_name}: its trials' runs go in the folder {study_dir}, which is a group "
                          "made by 'fmnist train --seeds'; choose another study name")
    if study_dir.exists() and not study_dir.is_dir():
        raise FmnistError(f"--study {study_name}: its trials' runs go in the folder {study_dir}, but a file is there; "
                          "choose another study name")
    stored_in = storage_file(storage, runs_dir)
    if stored_in is not None:
        kind = "database" if is_database(storage) else "journal"
        runs.refuse_inside_run(stored_in.parent, f"the study's {kind} folder")
    store = None
    if stored_in is None or stored_in.is_file():  # a study there with other settings is refused before the data load
        store, shown = open_storage(storage, runs_dir, on_stale_trial=queue_retry, writes=True)
        try:
            _refuse_other_settings(optuna.load_study(study_name=study_name, storage=store), base)
        except KeyError:  # a new study
            pass
    backend = activate(backend, base.architecture)
    dataset = dataset or load_dataset(data_dir)
    check_inputs(base, dataset)
    if store is None:
        store, shown = open_storage(storage, runs_dir, on_stale_trial=queue_retry, writes=True)
    study = open_study(study_name, store, shown, base)
    if "lr_factor" not in trial_params(base):
        log.info("the plateau factor is not searched: no epoch of a trial would train at a lowered learning rate "
                 "(%d epochs; the rate drops after %d without a better val_loss, early stopping after %d); "
                 "--train-best trains with the factor %g; for another, run the best trial's 'fmnist train' line, from "
                 "the page of 'fmnist tune --report %s --storage %s', with --lr-factor added", base.epochs,
                 base.lr_patience, base.early_stopping_patience, base.lr_factor, runs.shell_word(study_name),
                 runs.shell_word(shown))
    done: list[int] = []

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done.append(trial.number)
        log.info("trial %d %s: val_loss %s", trial.number, trial_state(trial),
                 f"{trial.value:.4f}" if trial.value is not None else "-")
        # A worker beside this one died meanwhile, or was stopped: its trial is this one's next, if it has one.
        _take_up_cut_short(study, store, "next" if len(done) < trials else "by the next worker to continue the study")

    unfailed: list[int] = []
    try:
        study.optimize(_objective(base, backend, study_dir, dataset, unfailed, is_database(storage)),
                       n_trials=trials, timeout=timeout, callbacks=[record], catch=(Diverged,))
    # Optuna's "Cannot tell a FAIL trial": another worker failed the trial while this one trained it (found on a
    # write to it), or once it was trained, before its result was told, when Optuna's logging of it then fails its
    # own assertion ("Should not reach", Optuna 5.0).
    except (ValueError, AssertionError) as exc:
        last = next((t for t in study.get_trials(deepcopy=False) if unfailed and t.number == unfailed[-1]), None)
        if last is None or last.state != optuna.trial.TrialState.FAIL:  # a trial's own error, Optuna re-raising it
            if isinstance(exc, AssertionError) and str(exc) == "Should not reach." and exc.__context__ is not None:
                # The storage refused to record the trial's end too (a folder made read-only, a full disk), and
                # Optuna's logging of that fails its assertion, which would hide why: the storage's error instead.
                raise exc.__context__ from None
            raise
        raise FmnistError(
            f"trial {unfailed[-1]} was failed by another worker of the study, to which this worker seemed gone (it "
            f"was suspended, or could not reach the storage, for over {GRACE_S} s): its run is kept, and the trial "
            "queued in its place finishes it; run this command again to go on") from None
    # As a command in another folder reaches it (a script reads --json), the password of a server's URL hidden.
    spec = TrainSettings()
    budget = " ".join(flag_text(k, getattr(base, k)) for k in TRIAL_BUDGET if getattr(base, k) != getattr(spec, k))
    return TuneResult(study_name, absolute_storage(storage or shown, shown), len(done), study_states(study),
                      best_trial(study), budget)


def open_study(name: str, store: optuna.storages.BaseStorage, shown: str, base: TrainSettings) -> optuna.Study:
    """The study, made on first use with the recipe's own settings as its first trial; a continued one must have the
    same fixed settings, and runs again the trials a stop, a refused file or a dead worker cut short."""
    try:
        study = optuna.create_study(study_name=name, storage=store, direction="minimize", **_sampler_and_pruner())
        study.set_user_attr(FIXED_SETTINGS, _fixed(base))
        # The recipe's own settings go first, so the study shows whether tuning beats them.
        study.enqueue_trial(trial_params(base))
        log.info("new study %r in %s", name, shown)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=store, **_sampler_and_pruner())
    # A worker that made the study this instant records them next; one made by an older fmnist, or by a worker
    # killed before it could record them, takes this command's.
    for _ in range(FIXED_SETTINGS_WAITS):
        if study.user_attrs.get(FIXED_SETTINGS) is not None:
            break
        time.sleep(0.1)
    else:
        study.set_user_attr(FIXED_SETTINGS, _fixed(base))
    _refuse_other_settings(study, base)
    log.info("continuing study %r in %s (%d trial%s so far)", name, shown, len(study.trials),
             "" if len(study.trials) == 1 else "s")
    _take_up_cut_short(study, store, "first")
    return study


def _take_up_cut_short(study: optuna.Study, store: optuna.storages.BaseStorage, when: str) -> None:
    """Queue again the trials a stop, a refused file or a dead worker cut short (:func:`_retry_cut_short`), saying
    which."""
    retried = _retry_cut_short(study, store)
    if retried:
        one = len(retried) == 1
        log.info("%s, cut short (stopped, by a file the system refused, or %s died), %s taken up again %s",
                 f"trial {retried[0]}" if one else f"trials {', '.join(map(str, retried))}",
                 "its worker" if one else "their workers", "is" if one else "are", when)


def _fixed(base: TrainSettings) -> dict[str, Any]:
    """The settings every trial of a study shares: trials on other data, epochs or patience could not be compared,
    by the pruner or by the best trial. Through JSON, as the storage keeps them (tuples come back as lists)."""
    return json.loads(json.dumps({k: v for k, v in base.to_dict().items() if k not in trial_params(base)
                                  and k != "name"}))


def _refuse_other_settings(study: optuna.Study, base: TrainSettings) -> None:
    """Refuse to continue ``study`` with fixed settings other than those it recorded, naming them."""
    recorded, fixed = study.user_attrs.get(FIXED_SETTINGS) or {}, _fixed(base)
    # As a --seeds group's runs are compared, but the seed too: one this fmnist does not know could not be given the
    # same here.
    differ = [_difference(flag(k) if k in FLAG_SETTINGS else k, recorded[k], fixed[k]) if k in fixed else
              f"{k} {recorded[k]}, a setting this fmnist does not know (continue it with the fmnist that began it)"
              for k in run_settings.settings_differ(recorded, fixed, ignored=("name",))]
    if differ:
        raise FmnistError(f"study {study.study_name!r} was started with {'; '.join(sorted(differ))}: its trials "
                          "could not be compared with these; give the same settings to continue it, or start a new "
                          "one (--study NAME)")


def _retry_cut_short(study: optuna.Study, store: optuna.storages.BaseStorage) -> list[int]:
    """Fail the running trials whose worker process on this machine has ended, marked killed, and queue the settings of
    each trial a stop, a refused file or a dead worker cut short; return the trials they were first drawn for."""
    # Judged by their worker process: a journal has no heartbeat.
    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    trials = study.get_trials(deepcopy=False)
    dead = {t.number for t in trials if t.state == running and worker_gone(t.user_attrs)}
    study_id = store.get_study_id_from_name(study.study_name)
    for number in sorted(dead):
        try:  # another worker continuing the study now may have failed it first
            trial_id = store.get_trial_id_from_study_id_trial_number(study_id, number)
            store.set_trial_user_attr(trial_id, runs.KILLED, True)
            study.tell(number, state=failed, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    cut_short = [t for t in trials if t.number in dead
                 or (t.state == failed and any(t.user_attrs.get(attribute) for attribute in TAKEN_UP))]
    return [_first_drawn(t) for t in cut_short if queue_retry(study, t)]


def _first_drawn(trial: optuna.trial.FrozenTrial) -> int:
    return trial.user_attrs.get("retry_of", trial.number)


def queue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue the settings of ``trial``, which a stop, a refused file or a dead worker cut short, once more to finish
    its run, unless a later attempt at them exists or they have had MAX_TRIAL_ATTEMPTS; whether it was queued."""
    first = _first_drawn(trial)
    # Read just before queueing, so that two workers continuing the study together seldom both queue one.
    attempts = [t.number for t in study.get_trials(deepcopy=False) if _first_drawn(t) == first]
    fixed = study.user_attrs.get(FIXED_SETTINGS) or {}
    searched = {k for k in trial_params(TrainSettings())  # not a trial stopped before its settings were all drawn
                if k != "lr_factor" or lowers_rate(fixed.get("epochs"), fixed.get("lr_patience"),
                                                   fixed.get("early_stopping_patience"))}
    # A trial may hold more: one of a study begun before fmnist left the factor out where it does nothing.
    if (max(attempts) != trial.number or len(attempts) >= defaults.MAX_TRIAL_ATTEMPTS
            or not searched <= set(trial.params)):
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": first})
    return True


def value_text(value: Any, name: str = "") -> str:
    """A parameter as people read it: a float to 4 significant digits (the storage and --json keep it whole), hidden
    sizes as `fmnist runs` and the reports write them, 512-256."""
    if name == "hidden_sizes" and isinstance(value, str):
        return value.replace(",", "-")
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k} {value_text(v, k)}" for k, v in params.items())


def states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def _difference(name: str, recorded: Any, given: Any) -> str:
    """How a fixed setting of a study differs from this command's: "--epochs 2, not 3"; an unset one (no --limit:
    all the images) is said so, not shown as None."""
    if recorded is None:
        return f"no {name}, not {given}"
    return f"{name} {recorded}, not {'without it' if given is None else given}"


def summary(result: TuneResult) -> str:
    trials = f"{result.trials_run} trial{'' if result.trials_run == 1 else 's'}"
    lines = [f"study {result.study} ({result.storage}): {trials} run now; all: {states_text(result.states)}"]
    if result.best:
        best = result.best
        begun_by = best.get(RUN_OF, best["number"])
        lines.append(f"best: trial {best['number']}  val_loss {best['val_loss']:.4f}  "
                     f"val_accuracy {best.get('val_accuracy', float('nan')):.4f}  run {best.get('run_dir', '-')}"
                     + ("" if begun_by == best["number"] else f" (begun by trial {begun_by}, which was cut short)"))
        lines.append("  " + params_text(best["params"]))
        # The URL as shown hides its password: the user gives it again.
        storage = "URL" if "***" in result.storage else runs.shell_word(result.storage)
        lines.append(f"next: fmnist tune --report {result.study} --storage {storage}   the page: best trials, plots, "
                     "the commands that train them")
        lines.append(f"      fmnist tune --train-best {result.study} --storage {storage}   the best "
                     + full_training_text(result.budget))
    return "\n".join(lines)


def full_training_text(budget: str) -> str:
    """What --train-best trains without a study's ``budget`` (its trials' --epochs and --limit), and what to add."""
    return (f"on every training image for up to {TrainSettings().epochs} epochs, as long as a full 'fmnist train'"
            + (f" (add {budget} to train it as its trial did)" if budget else ""))


# A trial's budget, not the recipe: the best trial's run gets the spec's (all the data, its epochs) unless given.
TRIAL_BUDGET = ("epochs", "limit")


def train_best(
    study_name: str, given: dict[str, Any], backend: str | None, storage: str | None = None,
    runs_dir: Path | None = None, data_dir: Path | None = None, dataset: Dataset | None = None,
) -> TrainResult:
    """Train the best trial's settings as a normal run, with the settings ``given`` as flags, else the study's fixed
    ones (seed, split, patience) but its budget; in the study's runs folder unless ``runs_dir`` says."""
    from fmnist.backend import activate
    from fmnist.recipes import recipe_settings

    study, shown, runs_dir = load_study(study_name, storage, runs_dir)
    best = best_trial(study)
    recorded = study.user_attrs.get(FIXED_SETTINGS) or {}
    if best is None:  # the command that runs its trials, with the settings they share
        fixed = "".join(f" {flag_text(k, v)}" for k, v in study_flags(recorded, recorded).items())
        raise FmnistError(f"study {study_name!r} in {shown} has no finished trial yet: "
                          f"'fmnist tune --study {study_name} --storage {runs.shell_word(shown)}{fixed}' runs them")
    kept = {k: v for k, v in study_flags(recorded, recorded).items() if k not in TRIAL_BUDGET and k not in given}
    carried = ", ".join(flag_text(k, v) for k, v in sorted(kept.items()))
    if kept:
        log.info("as the study's trials: %s", carried)
    recipe_settings("spec", **given)  # a flag refused as it stands: the command line's error (status 2)
    try:
        base = recipe_settings("spec", **kept, **given)
    except FmnistError as exc:  # it may name a setting not typed now: say where that came from
        raise FmnistError(f"{exc} (carried over from the study: {carried})") from None
    settings = settings_for(base, best["params"], name=f"{study_name}{defaults.BEST_SUFFIX}")
    # ``backend`` (None: the trial's, else the default) starts once the trial is found.
    backend = activate(backend or best.get("backend"), base.architecture)
    log.info("training trial %d's settings on %s: %s", best["number"], backend, params_text(best["params"]))
    return train(settings, backend, runs_dir=runs_dir, data_dir=data_dir, dataset=dataset)
