"""`fmnist tune`: an Optuna study over the recipe's knobs, in which every trial is an ordinary training run."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import re
import shlex
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from fmnist import artifacts, defaults, runs
from fmnist.data import Dataset
from fmnist.errors import FmnistError, first_line
from fmnist.report import page, table_html
from fmnist.settings import FLAG_SETTINGS, TrainSettings, flag

log = logging.getLogger(__name__)

# The searched knobs of TrainSettings; the recipe's own values are inside every range.
HIDDEN_SIZES = ("512,256,64,32", "128,64", "256,128", "512,256", "1024,512", "512,256,128", "1024,512,256,128")
BATCH_SIZES = (32, 64, 128, 256)
# A trial whose val_loss is worse than the median of earlier trials' at the same epoch stops there;
# not before 4 trials have finished, nor in a trial's first epoch.
PRUNER = dict(n_startup_trials=4, n_warmup_steps=1)
# Workers on a database beat this often; a trial whose worker died is marked failed after the grace period.
HEARTBEAT_S, GRACE_S = 60, 180
RDB_ATTEMPTS = 3
# A journal's lock that a killed worker left is taken over once the journal has not changed for this long.
JOURNAL_LOCK_GRACE_S = 30
STUDY_NAME_CHARS = "-_."
# The study's user attribute that keeps the settings every trial shares.
FIXED_SETTINGS = "fixed_settings"


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    trials_run: int
    states: dict[str, int]
    best: dict[str, Any] | None


def suggest(trial: optuna.trial.BaseTrial) -> None:
    """Draw a value for each searched knob; they are then in ``trial.params``."""
    trial.suggest_categorical("hidden_sizes", HIDDEN_SIZES)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    trial.suggest_float("lr_factor", 0.1, 0.5)


def trial_params(settings: TrainSettings) -> dict[str, Any]:
    """The searched knobs of ``settings`` as Optuna stores them."""
    return {
        "hidden_sizes": ",".join(str(s) for s in settings.hidden_sizes), "dropout": settings.dropout,
        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size, "lr_factor": settings.lr_factor,
    }


def settings_for(base: TrainSettings, params: dict[str, Any], name: str) -> TrainSettings:
    """``base`` with a trial's parameters put in."""
    try:
        values = {**params, "hidden_sizes": tuple(int(s) for s in params["hidden_sizes"].split(","))}
        return dataclasses.replace(base, name=name, **values)
    except (KeyError, TypeError, ValueError, AttributeError):  # a study another program wrote into the storage
        raise FmnistError(f"the trial's parameters {params} are not those 'fmnist tune' searches "
                          f"({', '.join(sorted(trial_params(base)))})") from None


def open_storage(storage: str | None, runs_dir: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """The Optuna storage and how to name it (without password): a database URL, else a journal file.

    A journal file (the default, in ``runs_dir``) serves many processes on one machine; a database
    (``postgresql://user:password@host/db``) serves many machines.
    """
    if _is_database(storage):
        import sqlalchemy

        shown = _masked(_database_url(storage).render_as_string(hide_password=True))
        for attempt in range(1, RDB_ATTEMPTS + 1):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; we rely on them
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # A dead worker's trial is failed by the next worker, then run again once (its settings
                    # were not at fault), as a trial a stop cut short is (open_study).
                    store = optuna.storages.RDBStorage(
                        storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
                return store, shown
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
                # Workers started together on a fresh database race to create Optuna's tables; the loser
                # finds them made when it tries again.
                if attempt == RDB_ATTEMPTS:
                    raise FmnistError(f"cannot set up the study storage {shown}: {first_line(exc)}") from None
                time.sleep(attempt)
            except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
                raise FmnistError(f"cannot open the study storage {shown}: {first_line(exc)}") from None
    path = _journal_path(storage, runs_dir)
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
    if os.path.lexists(f"{path}.lock"):  # Optuna's lock is that symbolic link; its wait would be silent
        log.warning("the journal %s is locked (%s.lock): another worker is writing to it, or one that was killed left "
                    "the lock, which is taken over once the journal has not changed for %d s",
                    path, path.name, JOURNAL_LOCK_GRACE_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock)
        return optuna.storages.JournalStorage(backend), str(path)  # reads the whole journal
    except OSError as exc:
        raise FmnistError(f"cannot open the journal file {path}: {exc.strerror}") from None
    # Undecodable bytes, a line not JSON, JSON not Optuna's (an unknown operation fails Optuna's assert).
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise FmnistError(f"{path} is not an Optuna journal ({first_line(exc)}); give --storage a journal file "
                          "written by 'fmnist tune', or a database URL") from None


def _is_database(storage: str | None) -> bool:
    return bool(storage) and "://" in storage


def _masked(url: str) -> str:
    """A database URL without its password, in the user part (which may hold "/" or "@") or in the query string."""
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", re.sub(r"(://[^/:@]*:).*@", r"\1***@", url))


def _database_url(storage: str) -> Any:
    """The parsed database URL, or a one-line refusal without its password."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise FmnistError(f"{_masked(storage)!r} is not a database URL, "
                          "e.g. postgresql://user:password@host:5432/db") from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise FmnistError(f"{_masked(storage)} keeps the study in memory, lost when this process ends: give a file, "
                          "e.g. sqlite:///study.db")
    return url


def _storage_file(storage: str | None, runs_dir: Path) -> Path | None:
    """The file the study lives in: the journal, or an SQLite database's; ``None`` for a database server."""
    if not _is_database(storage):
        return _journal_path(storage, runs_dir)
    url = _database_url(storage)
    return Path(url.database) if url.get_backend_name() == "sqlite" else None


def _journal_path(storage: str | None, runs_dir: Path) -> Path:
    return Path(storage) if storage else Path(runs_dir) / artifacts.TUNE_JOURNAL


def _sampler_and_pruner() -> dict[str, Any]:
    # Unseeded on purpose: workers sharing a study must not all draw the same parameters.
    return {"sampler": optuna.samplers.TPESampler(), "pruner": optuna.pruners.MedianPruner(**PRUNER)}


def load_study(name: str, storage: str | None, runs_dir: Path) -> tuple[optuna.Study, str]:
    """An existing study, or a one-line error naming the studies that do exist there."""
    _check_name(name)
    stored_in = _storage_file(storage, runs_dir)
    if stored_in is not None and not stored_in.is_file():  # opening it would create it, empty
        kind = "database file" if _is_database(storage) else "journal"
        raise FmnistError(f"no study {name!r}: there is no {kind} {stored_in} "
                          "(pass --storage if the study is elsewhere)")
    store, shown = open_storage(storage, runs_dir)
    try:
        return optuna.load_study(study_name=name, storage=store, **_sampler_and_pruner()), shown
    except KeyError:
        names = optuna.get_all_study_names(store)
        raise FmnistError(
            f"no study {name!r} in {shown}; studies there: {', '.join(names) or 'none'} (pass --storage if it is elsewhere)"
        ) from None


def pruning_callback(trial: optuna.Trial, pruned_at: list[int]) -> Any:
    """A Keras callback that reports each epoch's val_loss to Optuna and stops a trial the pruner gives up on."""
    import keras

    def on_epoch_end(epoch: int, logs: dict) -> None:
        trial.report(logs["val_loss"], epoch)
        if trial.should_prune():
            pruned_at.append(epoch)
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    return callback


def _objective(base: TrainSettings, backend: str, runs_dir: Path, dataset: Dataset) -> Callable[[optuna.Trial], float]:
    from fmnist.train import train

    def objective(trial: optuna.Trial) -> float:
        # Who runs it: a continued study on this machine tells a dead worker's trial from a live one's.
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("worker", worker_key(os.getpid()))
        suggest(trial)
        pruned_at: list[int] = []
        settings = settings_for(base, trial.params, name=trial_name(trial.number))
        callbacks = [pruning_callback(trial, pruned_at)]
        cut_short = _cut_short_run(runs_dir, trial.user_attrs.get("retry_of"), settings, backend, dataset)
        try:
            if cut_short is None:
                run_dir = train(settings, backend, runs_dir=runs_dir, dataset=dataset, extra_callbacks=callbacks).run_dir
            else:
                run_dir = _finish(cut_short, dataset, callbacks)
        except KeyboardInterrupt:
            trial.set_user_attr("stopped", True)  # not the settings' fault: run again when the study is continued
            raise
        history = artifacts.read_history(run_dir)
        best = artifacts.best_epoch(history) - 1
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("epochs", len(history["val_loss"]))
        trial.set_user_attr("val_accuracy", history["val_accuracy"][best])
        if pruned_at:
            raise optuna.TrialPruned(f"val_loss {history['val_loss'][-1]:.4f} after epoch {pruned_at[0] + 1}")
        # The validation split only: the test set never chooses between trials.
        return history["val_loss"][best]

    return objective


def trial_name(number: int) -> str:
    """The name of a trial's run (its folder is ``<UTC time>-<name>`` in the study's runs directory)."""
    return f"trial-{number:04d}"


def _cut_short_run(runs_dir: Path, number: int | None, settings: TrainSettings, backend: str,
                   dataset: Dataset) -> Path | None:
    """The run of trial ``number``, which a stop or a dead worker cut short, if it can be finished (or already was,
    by 'fmnist train --resume') rather than trained again from its first epoch: same settings, backend and data."""
    from fmnist.resume import read_resumable, require_same_data

    found = [] if number is None else runs.runs_named(runs_dir, trial_name(number))
    if len(found) != 1 or runs.being_trained(found[0]) or runs.diverged(found[0]):
        return None
    try:
        config, trained = read_resumable(found[0] / artifacts.CONFIG, {"settings": dict}, backend, "")
        require_same_data(dataset, config, found[0])
    except FmnistError:  # another backend or data, or damaged by hand: the settings are trained again instead
        return None
    return found[0] if dataclasses.replace(trained, name=settings.name) == settings else None


def _finish(run_dir: Path, dataset: Dataset, callbacks: list[Any]) -> Path:
    """Finish a cut-short trial's run where it stopped; one already finished and scored is counted as it is."""
    from fmnist.resume import resume_run

    if runs.complete(run_dir):
        log.info("%s was finished by 'fmnist train --resume': counted as it is", run_dir)
        return run_dir
    log.info("finishing %s where it was cut short", run_dir)
    return resume_run(run_dir, dataset=dataset, extra_callbacks=callbacks).run_dir


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or not all(c.isalnum() or c in STUDY_NAME_CHARS for c in name):
        raise FmnistError(f"study name {name!r} may hold only letters, digits, '-', '_' and '.', and not start with '.'")


def _best(study: optuna.Study) -> dict[str, Any] | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    trial = min(complete, key=lambda t: t.value)
    return {"number": trial.number, "val_loss": trial.value, "params": trial.params, **trial.user_attrs}


def _states(study: optuna.Study) -> dict[str, int]:
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return states


def tune(
    base: TrainSettings, backend: str, trials: int, study_name: str, storage: str | None = None,
    runs_dir: Path = Path(defaults.RUNS_DIR), data_dir: Path | None = None, dataset: Dataset | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Run ``trials`` more trials of the study (made on first use) in this process; ``backend`` must be active.

    Start the same command in other processes, here or on other machines sharing a database, to work in parallel.
    """
    from fmnist.data import load_dataset
    from fmnist.train import check_inputs

    _check_name(study_name)
    # Our own lines instead: the study, then one per trial. A failed trial's error ends the study as one line,
    # without the traceback Optuna logs as a warning.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Refused before the journal or the study folder exists, not as each trial's failure.
    study_dir = Path(runs_dir) / study_name
    runs.refuse_inside_run(study_dir, "the study's runs directory")
    if study_dir.exists() and not study_dir.is_dir():
        raise FmnistError(f"--study {study_name}: its trials' runs go in the folder {study_dir}, but a file is there; "
                          "choose another study name")
    stored_in = _storage_file(storage, runs_dir)
    if stored_in is not None:
        kind = "database" if _is_database(storage) else "journal"
        runs.refuse_inside_run(stored_in.parent, f"the study's {kind} folder")
    dataset = dataset or load_dataset(data_dir)
    check_inputs(base, dataset)
    store, shown = open_storage(storage, runs_dir)
    study = open_study(study_name, store, shown, base)
    done: list[int] = []

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done.append(trial.number)
        log.info("trial %d %s: val_loss %s", trial.number, trial.state.name.lower(),
                 f"{trial.value:.4f}" if trial.value is not None else "-")

    study.optimize(_objective(base, backend, study_dir, dataset),
                   n_trials=trials, timeout=timeout, callbacks=[record])
    return TuneResult(study_name, shown, len(done), _states(study), _best(study))


def open_study(name: str, store: optuna.storages.BaseStorage, shown: str, base: TrainSettings) -> optuna.Study:
    """The study, made on first use with the recipe's own settings as its first trial; a continued one must have the
    same fixed settings, and runs again the trials a stop or a dead worker cut short."""
    # Trials on other data, epochs or patience could not be compared, by the pruner or by the best trial. Through
    # JSON, as the storage keeps them (tuples come back as lists).
    fixed = json.loads(json.dumps({k: v for k, v in base.to_dict().items() if k not in trial_params(base)
                                   and k != "name"}))
    try:
        study = optuna.create_study(study_name=name, storage=store, direction="minimize", **_sampler_and_pruner())
        study.set_user_attr(FIXED_SETTINGS, fixed)
        # The recipe's own settings go first, so the study shows whether tuning beats them.
        study.enqueue_trial(trial_params(base))
        log.info("new study %r in %s", name, shown)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=store, **_sampler_and_pruner())
    recorded = study.user_attrs.get(FIXED_SETTINGS)
    if recorded is None:  # a study made by an older fmnist, or by a worker killed before it could record them
        study.set_user_attr(FIXED_SETTINGS, fixed)
    else:  # settings a later fmnist added or dropped are not compared
        differ = [f"{flag(k) if k in FLAG_SETTINGS else k} {recorded[k]}, not {fixed[k]}"
                  for k in fixed.keys() & recorded.keys() if recorded[k] != fixed[k]]
        if differ:
            raise FmnistError(f"study {name!r} was started with {'; '.join(sorted(differ))}: its trials could not "
                              "be compared with these; give the same settings to continue it, or start a new one "
                              "(--study NAME)")
    log.info("continuing study %r in %s (%d trials so far)", name, shown, len(study.trials))
    retried = _retry_cut_short(study)
    if retried:
        log.info("the settings of trials cut short (stopped, or their worker died) run again first: %s",
                 ", ".join(map(str, retried)))
    return study


def _retry_cut_short(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker process on this machine has ended (a journal has no heartbeat), and
    queue once more the settings of each trial a stop or a dead worker cut short; return those trials' numbers."""
    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    trials = study.get_trials(deepcopy=False)
    dead = {t.number for t in trials if t.state == running and _worker_gone(t.user_attrs.get("worker"))}
    for number in sorted(dead):
        try:  # another worker continuing the study now may have failed it first
            study.tell(number, state=failed, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    searched = set(trial_params(TrainSettings()))  # not a trial stopped before its settings were all drawn
    # A retry cut short in its turn is not run a third time: settings that kill their worker would do it for ever.
    cut_short = [t for t in trials if (t.number in dead or (t.state == failed and t.user_attrs.get("stopped")))
                 and "retry_of" not in t.user_attrs and set(t.params) == searched]
    # Read again just before queueing, so that two workers continuing the study together seldom both queue one.
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    queued = []
    for trial in cut_short:
        if trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued.append(trial.number)
    return queued


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


def _worker_gone(key: Any) -> bool:
    """Whether the process that ran a trial has ended; one on another machine or in another container is left alone
    (a database's heartbeat covers those)."""
    parts = key.split(" ") if isinstance(key, str) else []
    here = worker_key(os.getpid())
    if len(parts) != 4 or not parts[2].isdigit() or here is None or here.split(" ")[:2] != parts[:2]:
        return False
    return worker_key(int(parts[2])) != key


def _states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def summary(result: TuneResult) -> str:
    lines = [f"study {result.study} ({result.storage}): {result.trials_run} trials run now; "
             f"all: {_states_text(result.states)}"]
    if result.best:
        best = result.best
        lines.append(f"best: trial {best['number']}  val_loss {best['val_loss']:.4f}  "
                     f"val_accuracy {best.get('val_accuracy', float('nan')):.4f}  run {best.get('run_dir', '-')}")
        lines.append("  " + "  ".join(f"{k} {v}" for k, v in best["params"].items()))
    return "\n".join(lines)


def train_best(
    study_name: str, base: TrainSettings, backend: str, storage: str | None = None,
    runs_dir: Path = Path(defaults.RUNS_DIR), data_dir: Path | None = None, dataset: Dataset | None = None,
) -> Any:
    """Train the best trial's settings as a normal run (``base`` supplies the rest, e.g. all data, 100 epochs)."""
    from fmnist.train import train

    study, shown = load_study(study_name, storage, runs_dir)
    best = _best(study)
    if best is None:
        raise FmnistError(f"study {study_name!r} in {shown} has no finished trial yet")
    settings = settings_for(base, best["params"], name=f"{study_name}-best")
    log.info("training trial %d's settings: %s", best["number"], best["params"])
    return train(settings, backend, runs_dir=runs_dir, data_dir=data_dir, dataset=dataset)


def _train_command(study_name: str, trial: optuna.trial.FrozenTrial) -> str:
    """`fmnist train` with the trial's settings: its searched knobs, and the study's others where not the spec's."""
    config = Path(trial.user_attrs.get("run_dir", "")) / artifacts.CONFIG
    settings = artifacts.read_json(config)["settings"] if config.is_file() else {}
    defaults = TrainSettings().to_dict()
    flags = [f"fmnist train --name {study_name}-best"]
    for name in (n for n in FLAG_SETTINGS if n not in ("name", "teacher")):
        value = trial.params.get(name, settings.get(name))
        if name not in trial.params and (value is None or value == defaults[name]):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value  # floats in full: the same run
        flags.append(f"{flag(name)} {shown}")
    return " ".join(flags)


def _figures(study: optuna.Study) -> list[tuple[str, Any]]:
    """Optuna's plots that this study has enough trials for; the others are named with the reason."""
    from optuna import visualization as vis

    figures = []
    for title, plot in (
        ("Optimisation history", vis.plot_optimization_history),
        ("Parameter importances", vis.plot_param_importances),
        ("Validation loss per epoch (pruned trials stop early)", vis.plot_intermediate_values),
        ("Parameters of every trial", vis.plot_parallel_coordinate),
        ("Timeline (one row per trial; overlapping bars ran in parallel)", vis.plot_timeline),
    ):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                figure = plot(study)
        except (ValueError, RuntimeError) as exc:  # too few finished trials, or parameters that never varied
            figures.append((title, first_line(exc)))
            continue
        # A plot Optuna warns about ("too small to compute importances") would mislead: its reason is shown instead.
        doubts = [w for w in caught if not issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
        figures.append((title, first_line(doubts[0].message) if doubts else figure))
    return figures


def write_report(study_name: str, storage: str | None = None, runs_dir: Path = Path(defaults.RUNS_DIR),
                 output: Path | None = None) -> Path:
    """A self-contained HTML page: the best trials, how to train the best, and Optuna's plots."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # plots that cannot be drawn say so on the page
    study, shown = load_study(study_name, storage, runs_dir)
    output = Path(output) if output else Path(runs_dir) / study_name / artifacts.TUNE_REPORT
    runs.prepare_output(output, "--output", ".html")  # before the plots are drawn
    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.value)
    names = list(complete[0].params) if complete else []
    rows = [[t.number, f"{t.value:.4f}", f"{t.user_attrs.get('val_accuracy', float('nan')):.4f}",
             t.user_attrs.get("epochs", "-"), *(t.params.get(n, "-") for n in names), t.user_attrs.get("run_dir", "-")]
            for t in complete[:10]]
    states = _states_text(_states(study))
    sections = [
        ("Study", f"<p>{html.escape(shown)}: {html.escape(states)}; objective: best val_loss on the validation split "
                  "(the test set is never used to choose).</p>"),
        ("Best trials", table_html(["trial", "val_loss", "val_accuracy", "epochs", *names, "run"], rows)
         if complete else "<p>none finished</p>"),
    ]
    if complete:
        # Commands to paste into a shell: the folder and storage this page was made from, quoted.
        where = "" if Path(runs_dir) == Path(defaults.RUNS_DIR) else f" --runs-dir {shlex.quote(str(runs_dir))}"
        storage_flag = f" --storage {shlex.quote(shown)}" if storage else ""
        hidden = "<p>(with the database's password where the URL shows ***)</p>" if "***" in storage_flag else ""
        sections.append((
            "Train the best trial's settings as a normal run",
            f"<pre>{html.escape(f'fmnist tune --train-best {study_name}{where}{storage_flag}')}</pre>{hidden}"
            "<p>with the study's settings given again (e.g. its --epochs), or, the same on its own:</p>"
            f"<pre>{html.escape(_train_command(study_name, complete[0]) + where)}</pre>",
        ))
    plotly_js: Any = True  # the first figure carries plotly.js, so the page needs no network
    for title, figure in _figures(study):
        if isinstance(figure, str):
            sections.append((title, f"<p>not drawn: {html.escape(figure)}</p>"))
        else:
            sections.append((title, figure.to_html(full_html=False, include_plotlyjs=plotly_js)))
            plotly_js = False
    artifacts.write_text(output, page(f"fmnist tune {study_name}", sections))
    return output
