"""`fmnist train`: fit the network with the spec's callbacks, save the run, evaluate and report."""

from __future__ import annotations

import csv
import logging
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts, runs
from fmnist.data import Dataset, load_dataset, to_features
from fmnist.settings import TrainSettings

log = logging.getLogger(__name__)

# Batches run per compiled call; measured by `fmnist bench` (README, "Speed"). Callbacks still run every epoch.
STEPS_PER_EXECUTION = {"jax": 1, "tensorflow": 1}
PACKAGES = ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "numpy", "scikit-learn")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    epochs_run: int
    train_seconds: float


def split_indices(labels: np.ndarray, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/validation split (after an optional stratified ``limit`` subset)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if settings.limit is not None and settings.limit < len(labels):
        indices, _ = train_test_split(
            indices, train_size=settings.limit, stratify=labels, random_state=settings.seed
        )
    train_idx, val_idx = train_test_split(
        indices, test_size=settings.validation_fraction, stratify=labels[indices], random_state=settings.seed
    )
    return np.sort(train_idx), np.sort(val_idx)


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

    class EpochLog(keras.callbacks.Callback):
        """Adds seconds and the epoch's learning rate to the logs, and logs one progress line per epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs["seconds"] = round(time.perf_counter() - self.started, 3)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            log.info(
                "epoch %3d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.1e  %.1fs",
                epoch + 1, settings.epochs, logs["loss"], logs["accuracy"], logs["val_loss"],
                logs["val_accuracy"], logs["learning_rate"], logs["seconds"],
            )

    return [
        EpochLog(),  # first, so the learning rate logged is the one this epoch used
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=settings.lr_patience, factor=settings.lr_factor),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(run_dir / artifacts.HISTORY), append=True),
    ]


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """The per-epoch history as columns of floats."""
    with open(Path(run_dir) / artifacts.HISTORY, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def fit(settings: TrainSettings, dataset: Dataset, run_dir: Path, backend: str) -> tuple[Any, int, float]:
    """Build, compile and fit the model in ``run_dir``; return it, epochs run and training seconds."""
    import keras

    from fmnist.backend import seed_everything
    from fmnist.model import build_dense

    train_idx, val_idx = split_indices(dataset.y_train, settings)
    np.savez(run_dir / artifacts.SPLIT, train=train_idx, validation=val_idx)
    features = to_features(dataset.x_train)
    labels = dataset.y_train.astype(np.int32)

    seed_everything(settings.seed)
    model = build_dense(settings.hidden_sizes, settings.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION[backend],
    )
    log.info(
        "training on %d images, validating on %d (%s backend, batch %d, up to %d epochs)",
        len(train_idx), len(val_idx), backend, settings.batch_size, settings.epochs,
    )
    started = time.perf_counter()
    history = model.fit(
        features[train_idx], labels[train_idx],
        validation_data=(features[val_idx], labels[val_idx]),
        batch_size=settings.batch_size, epochs=settings.epochs,
        callbacks=make_callbacks(settings, run_dir), verbose=0,
    )
    return model, len(history.epoch), time.perf_counter() - started


def train(
    settings: TrainSettings, backend: str, runs_dir: Path = Path("runs"), data_dir: Path | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Run the whole recipe: data, fit, save, evaluate on the test set, report. ``backend`` must be active."""
    from fmnist.evaluate import evaluate_run

    dataset = dataset or load_dataset(data_dir)
    run_dir = runs.create_run_dir(runs_dir, settings.name)
    log.info("run directory %s (data: %s)", run_dir, dataset.source)
    artifacts.write_json(run_dir / artifacts.CONFIG, {
        "settings": settings.to_dict(),
        "backend": backend,
        "versions": package_versions(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "data": {"source": dataset.source, "sha256": dataset.checksums},
        "created": runs.utc_now(),
    })
    runs.set_status(run_dir, "running")
    try:
        model, epochs_run, seconds = fit(settings, dataset, run_dir, backend)
        artifacts.save_model(model, run_dir)
    except KeyboardInterrupt:
        runs.set_status(run_dir, "interrupted")
        raise
    except BaseException as exc:
        runs.set_status(run_dir, "failed", error=str(exc))
        raise
    runs.set_status(run_dir, "finished", epochs=epochs_run, train_seconds=round(seconds, 2))
    metrics = evaluate_run(run_dir, data_dir=data_dir, model=model, dataset=dataset)
    return TrainResult(run_dir, metrics, epochs_run, seconds)
