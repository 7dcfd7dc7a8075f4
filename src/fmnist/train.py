"""`fmnist train`: fit the network with the spec's callbacks, save the run, evaluate and report."""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fmnist import artifacts, defaults, model_files, run_locks, run_lookup, runs, stopping
from fmnist.backup_file import training_over
from fmnist.data import Dataset, data_record, load_dataset, locate, to_features
from fmnist.errors import DamagedFile, FmnistError, WriteRefused, warn_once
from fmnist.facts import NUM_CLASSES
from fmnist.settings import RECIPES, TrainSettings, images_per_epoch, split_problem

log = logging.getLogger(__name__)

# Batches per call between Keras' callbacks: 16 took a spec epoch from 5.2 s to 4.6 s on JAX and, with the
# validation batch below, from 8.4 s to 6.8 s on TensorFlow (2-core CPU, docs/speed.md). Epoch-end callbacks
# still run after every epoch.
STEPS_PER_EXECUTION = 16
# Validation only runs the model forward, so it goes in large batches: the mean loss is the same as at the
# training batch size, and a spec epoch on JAX drops from 5.2 s to 4.4 s.
VALIDATION_BATCH_SIZE = 1024
PACKAGES = ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "numpy", "scikit-learn")
SPLIT_PACKAGES = ("numpy", "scikit-learn")  # the train/validation split is theirs


class Diverged(FmnistError):
    """The loss became NaN or infinite: resuming would diverge again, the run needs other settings."""

    def __init__(self, epoch: int, loss: float, learning_rate: float):
        self.what = f"training diverged in epoch {epoch}: the loss became {loss}"  # without the flag to change
        super().__init__(f"{self.what}; lower the learning rate (--learning-rate, now {learning_rate:g})")


@dataclass(frozen=True)
class TrainResult:
    """A finished run: its folder (absolute), its test metrics as metrics.json holds them, the epochs it trained and
    their seconds."""

    run_dir: Path
    metrics: dict[str, Any]
    epochs_run: int
    train_seconds: float

    def __post_init__(self) -> None:  # whichever path made it: a caller may change folders before reading it
        object.__setattr__(self, "run_dir", runs.absolute(self.run_dir))


def split_indices(labels: np.ndarray, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/validation split (after an optional stratified ``limit`` subset)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if settings.limit is not None and len(labels) - NUM_CLASSES < settings.limit < len(labels):
        # Too few left out to hold every class, as stratifying would need: those few are left out at random.
        indices = np.sort(np.random.default_rng(settings.seed).choice(indices, settings.limit, replace=False))
    elif settings.limit is not None and settings.limit < len(labels):
        indices, _ = train_test_split(
            indices, train_size=settings.limit, stratify=labels, random_state=settings.seed
        )
    problem = split_problem(len(indices), settings.validation_fraction, settings.limit is not None)
    if problem:
        raise FmnistError(problem)
    n_val = round(len(indices) * settings.validation_fraction)
    train_idx, val_idx = train_test_split(
        indices, test_size=n_val, stratify=labels[indices], random_state=settings.seed
    )
    return np.sort(train_idx), np.sort(val_idx)


# Teacher models (by place and SHA-256) this process has loaded: a --seeds group's teacher is checked once, not again
# per seed.
_loadable_teachers: set[tuple[str, str]] = set()


def check_inputs(settings: TrainSettings, dataset: Dataset) -> str | None:
    """Refuse what would only fail or mislead mid-run before a run directory is made: a --limit beyond the data,
    too small a split, a missing or unusable teacher; return the teacher model's SHA-256, if any."""
    if settings.limit is not None and settings.limit > len(dataset.y_train):
        raise FmnistError(f"--limit {settings.limit}: the training set has {len(dataset.y_train):,} images; "
                          "leave --limit out to use them all")
    split_indices(dataset.y_train, settings)
    if not settings.teacher:
        return None
    try:
        sha256 = model_files.verified_model_path(Path(settings.teacher))[1]
        teacher_dir = run_lookup.teacher_run_dir(settings.teacher)
        # One stopped after its model was saved has one already, but its resume saves another (with another
        # checksum), which its students would then refuse to resume with.
        if not runs.finished(teacher_dir):
            raise FmnistError(f"{teacher_dir} has not finished training: {runs.how_to_finish(teacher_dir)}; then "
                              "give it as the teacher")
        checked = (str(Path(settings.teacher).resolve()), sha256)  # in its run: checked against its settings too
        if checked not in _loadable_teachers:  # one Keras cannot load (another run's, say): refused now
            model_files.load_model(Path(settings.teacher))
            _loadable_teachers.add(checked)
    except FmnistError as exc:
        raise FmnistError(f"--teacher {settings.teacher}: {exc}") from None
    from fmnist.evaluate import teacher_learned_nothing

    untaught = teacher_learned_nothing(settings.teacher)
    if untaught:  # taught anyway, as asked: a test, say
        warn_once(log, settings.teacher, "--teacher %s: %s; the student learns mostly from its answers (distill_alpha "
                  "%g): give a teacher that scored well", settings.teacher, untaught, settings.distill_alpha)
    return sha256


def recorded_teacher(run_dir: Path) -> str | None:
    """The SHA-256 of the teacher model checked when the run began, if it has one."""
    return artifacts.read_json(run_dir / artifacts.CONFIG).get("teacher_sha256")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def make_callbacks(settings: TrainSettings, run_dir: Path) -> list:
    import keras

    from fmnist.recipes import schedule_callbacks

    class EpochLog(keras.callbacks.Callback):
        """Adds seconds and the epoch's learning rate to the logs, for the history that keeps them."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            # At the epoch's start: a plateau's rate for the whole epoch; a cosine schedule's, lowered every step,
            # where this epoch began (at its end it is the next step's: 0 after the last).
            self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def on_epoch_end(self, epoch, logs=None):
            stopping.check()  # a Ctrl-C swallowed during the epoch stops the run here, before the epoch is kept
            if not np.isfinite(logs["loss"]):  # every later epoch, and the saved model, would be NaN too
                raise Diverged(epoch + 1, logs["loss"], settings.learning_rate)
            logs["seconds"] = round(time.perf_counter() - self.started, 3)
            logs["learning_rate"] = self.learning_rate

    class EpochKept(keras.callbacks.Callback):
        """One progress line per epoch, once the history and the backup keep it: a stop after the line loses nothing
        the line showed."""

        def on_epoch_end(self, epoch, logs=None):
            seconds = logs["seconds"]  # a tiny run's epochs take hundredths: "0.0s" each would say nothing
            log.info(
                "epoch %3d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.1e  %s",
                epoch + 1, settings.epochs, logs["loss"], logs["accuracy"], logs["val_loss"],
                logs["val_accuracy"], logs["learning_rate"], f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s",
            )

    from fmnist.backup import TrainingBackup

    callbacks = [
        EpochLog(),  # first, so the seconds and learning rate are in the logs the others see
        *schedule_callbacks(settings),
        keras.callbacks.CSVLogger(str(run_dir / artifacts.HISTORY), append=True),
    ]
    # Last but the line, so it saves the epoch as the others left it, and restores their state after they reset it.
    return callbacks + [TrainingBackup(run_dir / artifacts.BACKUP, callbacks), EpochKept()]


def epochs_in_history(run_dir: Path) -> int:
    """The epochs in the run's history.csv, so far (a resumed run's include those before its restart)."""
    return len(artifacts.read_history(run_dir).get("loss", [])) if (Path(run_dir) / artifacts.HISTORY).is_file() else 0


def require_same_split(run_dir: Path, val_idx: np.ndarray) -> None:
    """Refuse to resume a run on a split other than the one it began on (scikit-learn's or NumPy's, changed since,
    may pick other images for the same seed): it would train on images it has validated on."""
    try:
        saved = artifacts.read_split(run_dir, "validation")
    except (OSError, DamagedFile):  # missing or damaged: made again, as it was made
        recorded = artifacts.read_json(run_dir / artifacts.CONFIG).get("versions")
        now = package_versions()
        changed = [f"{name} {recorded[name]} then, {now.get(name, 'none')} now" for name in SPLIT_PACKAGES
                   if isinstance(recorded, dict) and name in recorded and recorded[name] != now.get(name)]
        if changed:  # and by other code, which may pick other images for the same seed
            raise FmnistError(
                f"{run_dir}: its {artifacts.SPLIT} is missing or damaged, and the split made again may hold other "
                f"images, as {'; '.join(changed)}: resumed, it could train on images it validated on; resume it with "
                "those versions, or train it anew")
        return
    if not np.array_equal(saved, val_idx):
        differs = len(np.setdiff1d(saved, val_idx)) if len(saved) == len(val_idx) else len(saved)
        raise FmnistError(
            f"{run_dir}: its training and validation images are not the ones this fmnist picks now ({differs} of the "
            f"{len(saved)} validation images {'differs' if differs == 1 else 'differ'}), as when scikit-learn or NumPy "
            f"changed since it began (its {artifacts.CONFIG} lists their versions then): resumed, it would train on "
            "images it validated on; resume it with those versions, or train it anew")


def fit(
    settings: TrainSettings, dataset: Dataset, run_dir: Path, backend: str, extra_callbacks: Sequence[Any] = (),
) -> tuple[Any, int, float]:
    """Build, compile and fit the model in ``run_dir`` (from its backup, if any); return it, epochs run and seconds
    of training (a resumed run's with those of the epochs it had already run)."""
    from fmnist.backend import fit_inputs, seed_everything, validation_inputs
    from fmnist.model import build_model
    from fmnist.recipes import compile_model, recipe_text, training_labels

    train_idx, val_idx = split_indices(dataset.y_train, settings)
    initial_epoch = epochs_in_history(run_dir)  # a resumed run's, its history cut back to its backup by fmnist.resume
    if initial_epoch:
        require_same_split(run_dir, val_idx)
    artifacts.write_atomic(run_dir / artifacts.SPLIT, lambda tmp: np.savez(tmp, train=train_idx, validation=val_idx))
    # Only the images this run trains and validates on (a teacher answers for each: all 60,000 under --limit took
    # as long as a short training); the training ones first.
    used = np.concatenate([train_idx, val_idx])
    features = to_features(dataset.x_train[used])
    n_train = len(train_idx)
    soft_targets = views = None
    if settings.teacher:
        from fmnist.distill import ViewEpochs, taught_to_the_teacher, teacher_answers

        taught = taught_to_the_teacher(settings.teacher, val_idx)
        if taught:  # the student never trains on them: only its val_loss, against the teacher's answers, is the worse
            log.warning(
                "%d of the %d validation images are ones the teacher trained on (its split is another: another seed, "
                "--validation-fraction or --limit). The student never trains on them, so its validation accuracy "
                "and calibration stay fair, but its val_loss compares it with the teacher's answers there, which "
                "the teacher learnt; give the student the teacher's seed, fraction and limit to validate on images "
                "neither trained on", taught, len(val_idx))

        soft_targets, views, view_labels = teacher_answers(
            settings, run_dir, features, dataset.x_train[train_idx].reshape(n_train, -1), recorded_teacher(run_dir))
    labels = training_labels(dataset.y_train[used], settings, soft_targets)
    batches = None  # the distilled student's endless batches with views, else the arrays as they are
    if views is not None:
        batches = ViewEpochs(features[:n_train], labels[:n_train], views, view_labels, settings.distill_views,
                             settings.batch_size, settings.seed, initial_epoch)
    epoch_images = images_per_epoch(n_train, settings.to_dict())
    # Steps an epoch: the arrays' batches, or as many as the views' endless batches are cut into.
    steps = -(-epoch_images // settings.batch_size) if batches is None else batches.batches_per_epoch

    seed_everything(settings.seed)
    model = build_model(settings)
    # The views' endless batches are cut into epochs by count: an execution of several steps must not run past one.
    compile_model(model, settings, steps, STEPS_PER_EXECUTION if batches is None else
                  max(d for d in range(1, STEPS_PER_EXECUTION + 1) if steps % d == 0))
    log.info("recipe: %s", recipe_text(settings.to_dict()))
    epochs = f"{settings.epochs} epoch{'' if settings.epochs == 1 else 's'}"
    log.info(
        "training on %s images%s, validating on %s (%s backend, batch %d, %s)", f"{len(train_idx):,}",
        "" if batches is None else f" and {epoch_images - n_train:,} views of them an epoch", f"{len(val_idx):,}",
        backend, settings.batch_size,
        epochs if artifacts.scheduled({"settings": settings.to_dict()}) else f"up to {epochs}",  # or early stopping
    )
    if settings.batch_size > epoch_images:
        log.warning("the batch of %d is larger than the %d %s: each epoch is one step on them all",
                    settings.batch_size, epoch_images,
                    "training images" if batches is None else "images and views an epoch")
    started = time.perf_counter()
    # Its earlier processes' epochs (their set-up outside the epochs is not recorded, so not counted).
    earlier_seconds = sum(artifacts.read_history(run_dir).get("seconds", [])) if initial_epoch else 0.0
    if batches is None:
        data = fit_inputs(
            (features[:n_train], labels[:n_train]), (features[n_train:], labels[n_train:]),
            settings.batch_size, VALIDATION_BATCH_SIZE, settings.seed, initial_epoch=initial_epoch,
        )
    else:
        data = dict(x=batches, steps_per_epoch=steps, shuffle=False,  # shuffled by the batches themselves
                    **validation_inputs((features[n_train:], labels[n_train:]), VALIDATION_BATCH_SIZE))
    model.fit(
        **data, epochs=settings.epochs, callbacks=make_callbacks(settings, run_dir) + list(extra_callbacks), verbose=0,
    )
    return model, epochs_in_history(run_dir), earlier_seconds + time.perf_counter() - started


def calibrate_run(model: Any, dataset: Dataset, run_dir: Path) -> float:
    """Fit temperature scaling on the run's validation images, fold it into the model, record it."""
    from fmnist.calibration import apply_temperature, fit_temperature, fold_temperature, nll
    from fmnist.inference import predict_probabilities

    val_idx = artifacts.read_split(run_dir, "validation")
    y_val = dataset.y_train[val_idx]
    probabilities = predict_probabilities(model, to_features(dataset.x_train[val_idx]))
    temperature = fit_temperature(probabilities, y_val)
    mistakes = int((probabilities.argmax(axis=1) != y_val).sum())
    if not mistakes:  # a --limit small enough, say
        log.warning("temperature scaling: every one of the %d validation images is classified right, so no "
                    "temperature can be fitted; T = 1 (none)", len(val_idx))
    fold_temperature(model, temperature)
    artifacts.write_json(run_dir / artifacts.CALIBRATION, {
        "temperature": temperature, "fitted_on": f"{len(val_idx)} validation images", "validation_mistakes": mistakes,
        "validation_nll_before": nll(probabilities, y_val),
        "validation_nll_after": nll(apply_temperature(probabilities, temperature), y_val),
    })
    if mistakes:
        log.info("temperature scaling: T = %.3f (fitted on the validation split)", temperature)
    return temperature


def train_command(settings: TrainSettings | None, backend: str | None = None, resume: Path | None = None,
                  seeds: int | None = None, runs_dir: Path = Path(defaults.RUNS_DIR),
                  data_dir: Path | None = None) -> tuple[str, dict[str, Any]]:
    """`fmnist train`: continue the run or ``--seeds`` group ``resume`` (a folder, or a name in ``runs_dir``), else
    train ``settings``, as a group of ``seeds`` if given; return the closing lines, and the same as a record."""
    from fmnist.backend import activate
    from fmnist.report import training_summary
    from fmnist.seeds import resume_seeds, seed_members, summary_record, summary_text, train_seeds

    if resume is not None:
        from fmnist.resume import resume_run

        target = run_lookup.resolve_resumable(resume, runs_dir)
        if runs.is_seed_group(target):
            group, summary = resume_seeds(target, backend=backend, data_dir=data_dir)
            return summary_text(group, summary), summary_record(group, summary)
        return training_summary(resume_run(target, backend=backend, data_dir=data_dir))
    # What would only fail once Keras has started (5 s), said first: a seed past the last, a data folder amiss.
    runs.require_runs_dir_place(runs_dir)
    if settings.name not in RECIPES:  # a name of the user's, which commands take for the run: said if it is taken
        run_lookup.warn_if_named_already(settings.name, runs_dir)
    if seeds:
        seed_members(settings, seeds)
    if data_dir:
        locate(data_dir)
    active = activate(backend, settings.architecture)
    if seeds:
        group, summary = train_seeds(settings, active, seeds, runs_dir=runs_dir, data_dir=data_dir)
        return summary_text(group, summary), summary_record(group, summary)
    return training_summary(train(settings, active, runs_dir=runs_dir, data_dir=data_dir))


def train(
    settings: TrainSettings, backend: str, runs_dir: Path = Path(defaults.RUNS_DIR), data_dir: Path | None = None,
    dataset: Dataset | None = None, resume_dir: Path | None = None, extra_callbacks: Sequence[Any] = (),
    finished_note: Callable[[], dict[str, Any]] = dict,
) -> TrainResult:
    """Run the whole recipe: data, fit, save, evaluate on the test set, report, on ``backend``; with ``resume_dir``,
    continue that run from its last finished epoch (fmnist.resume) instead of a new one."""
    # ``finished_note()`` adds to the finished run's status what the report is to say of how it ended.
    from fmnist.backend import activate, tensorflow_hidden_from_keras
    from fmnist.evaluate import evaluate_run
    from fmnist.resume import keep_finished_epochs, require_unfinished
    from fmnist.seeds import refuse_other_runs

    if not isinstance(settings, TrainSettings):  # a dict of settings, say
        raise TypeError(f"settings must be a TrainSettings, not a {type(settings).__name__}: make one with "
                        "fmnist.recipes.recipe_settings('spec', epochs=3, ...)")
    # ``backend`` is activated here, or refused where Keras runs another in this process.
    backend = activate(backend, settings.architecture)  # the one the run records is the one Keras runs
    dataset = dataset or load_dataset(data_dir)
    teacher_sha256 = check_inputs(settings, dataset)
    if resume_dir is None:
        refuse_other_runs(runs_dir, settings, backend, dataset)
        # Made before the folder, so that a stop leaves it without its config.json for the shortest time.
        config = {
            "settings": settings.to_dict(),
            "backend": backend,
            "versions": package_versions(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "data": data_record(dataset),
            **({"teacher_sha256": teacher_sha256} if teacher_sha256 else {}),
            "created": runs.utc_now(),
        }
    run_dir = resume_dir or runs.create_run_dir(runs_dir, settings.name)
    begun = contextlib.nullcontext() if resume_dir else runs.removed_unless_begun(run_dir, artifacts.CONFIG)
    with begun, run_locks.claim_run(run_dir):
        if resume_dir is None:
            artifacts.write_json(run_dir / artifacts.CONFIG, config)
            log.info("run directory %s (data: %s)", runs.absolute(run_dir), dataset.source)  # as the closing lines
        else:
            require_unfinished(run_dir)  # again under the lock: another process may have finished it meanwhile
            if teacher_sha256:
                from fmnist.distill import require_same_teacher

                require_same_teacher(settings.teacher, recorded_teacher(run_dir), teacher_sha256, run_dir.name)
            kept = keep_finished_epochs(run_dir)
            log.info("resuming %s %s", runs.absolute(run_dir),
                     f"after epoch {kept}" if kept else "from its start (no epoch was kept)")
        runs.set_status(run_dir, runs.RUNNING)
        try:
            with tensorflow_hidden_from_keras(backend):
                model, epochs_run, seconds = fit(settings, dataset, run_dir, backend, extra_callbacks)
                calibrate_run(model, dataset, run_dir)
                model_files.save_model(model, run_dir)
        except Diverged as exc:
            runs.set_status(run_dir, runs.FAILED, error=str(exc), diverged=True)
            with contextlib.suppress(OSError):  # never in place of the divergence's own error
                artifacts.remove_resume_files(run_dir)  # a diverged run is never resumed: it would diverge again
            raise
        except BaseException as exc:
            # A stop, though a library may have turned it into an error of its own (as TensorFlow's saving does).
            if not (isinstance(exc, KeyboardInterrupt) or stopping.requested()):
                refused = isinstance(exc, (OSError, WriteRefused))  # a full disk, say: the error line says no more
                if refused:  # before the status, which the system may refuse too
                    if training_over(run_dir, settings.epochs):
                        way_on = "saves and scores its model"
                    elif (run_dir / artifacts.BACKUP).is_file():
                        way_on = "continues the run from its last finished epoch"
                    else:
                        way_on = "trains the run from its first epoch (none was finished)"
                    log.warning("the system refused a file: once it lets fmnist write there again, '%s' %s",
                                runs.resume_command(run_dir), way_on)
                # A status refused too leaves the run "running", which `fmnist runs` then calls killed: resumable.
                with contextlib.suppress(OSError, WriteRefused) if refused else contextlib.nullcontext():
                    runs.set_status(run_dir, runs.FAILED, error=str(exc), resume=runs.resume_command(run_dir),
                                    **({"refused": True} if refused else {}))
                raise
            command = runs.resume_command(run_dir)
            runs.set_status(run_dir, runs.INTERRUPTED, resume=command)
            log.warning("stopped after its training: '%s' saves and scores its model"
                        if training_over(run_dir, settings.epochs) else
                        "stopped: '%s' continues from the last finished epoch", command)
            raise stopping.RunStopped(run_dir, runs.INTERRUPTED, command) from None
        # Finished first: a kill between the two must not leave a "running" run without its backup.
        seconds = round(seconds, 2)  # as status.json keeps them: the closing line and `fmnist runs` round them alike
        runs.set_status(run_dir, runs.FINISHED, epochs=epochs_run, train_seconds=seconds, **finished_note())
        artifacts.remove_resume_files(run_dir)  # the saved model supersedes them
        with stop_while_scoring_reported(run_dir):
            metrics = evaluate_run(run_dir, data_dir=data_dir, model=model, dataset=dataset)
    return TrainResult(run_dir, metrics, epochs_run, seconds)


def _scores_written(run_dir: Path) -> bool:
    from fmnist.resume import fully_scored

    try:
        return fully_scored(artifacts.read_json(run_dir / artifacts.METRICS))
    except (FmnistError, OSError):  # missing, damaged or unreadable
        return False


@contextlib.contextmanager
def stop_while_scoring_reported(run_dir: Path) -> Iterator[None]:
    """A stop while the trained ``run_dir`` is scored or its report drawn, logged and raised as
    :class:`stopping.RunStopped` with the command that finishes it."""
    try:
        yield
    except (OSError, WriteRefused):  # a full disk, say: the error line says no more
        doing, done_by = (("drawing the report", "draws it") if _scores_written(run_dir) else
                          ("scoring the trained model", "scores it"))
        log.warning("the system refused a file while %s: once it lets fmnist write there again, '%s' %s", doing,
                    runs.resume_command(run_dir), done_by)
        raise
    except KeyboardInterrupt:
        command = runs.resume_command(run_dir)
        if _scores_written(run_dir):
            log.warning("stopped while drawing the report: '%s' draws it", command)
            raise stopping.RunStopped(run_dir, f"{runs.FINISHED}, scored, no report", command) from None
        log.warning("stopped while scoring the trained model: '%s' scores it", command)
        raise stopping.RunStopped(run_dir, f"{runs.FINISHED}, not scored", command) from None
