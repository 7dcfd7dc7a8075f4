"""A per-epoch backup of the whole training state, so a killed run continues as if it never stopped."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fmnist import artifacts
from fmnist.backup_file import FORMAT, damaged, load, run_id
from fmnist.errors import FmnistError

log = logging.getLogger(__name__)

# What each callback's on_train_begin resets; restored after it, so a resumed run's early stopping and
# learning-rate drops decide as the uninterrupted run's would. Stateless callbacks need no entry.
CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}
# Keras names each dropout layer's random generator "seed_generator_N", N counting those made in the process so far,
# and so did it an optimizer before fmnist named it: the same model's names differ where another model was built
# first in the process (a resume after a training, a later run of a --seeds group).
NUMBERED_NAME = re.compile(r"^(seed_generator|adam|adamw)(_\d+)?/")


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class TrainingBackup(keras.callbacks.Callback):
    """Writes, atomically at each epoch's end, everything the next epoch depends on, and restores it at fit's start;
    it must come after the callbacks it saves, so it restores them after their own reset."""
    # Unlike keras' BackupAndRestore it also keeps the other callbacks' state (best value and weights, patience and
    # plateau counters), the random generators (dropout seeds, NumPy's shuffle order) and whether training had
    # already stopped: a resumed run then ends as the uninterrupted one would.

    def __init__(self, path: Path, callbacks: list[keras.callbacks.Callback]):
        super().__init__()
        self.path = Path(path)
        self.stateful = [cb for cb in callbacks if type(cb) in CALLBACK_STATE]
        self.run_id = run_id(self.path.parent)
        self.saved: tuple[int, bool] | None = None  # the epochs done and whether stopped, as last saved

    def on_train_begin(self, logs=None):
        if not self.path.is_file():
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        epoch, stopped = restore(self.path, self.model, self.stateful)
        # Keras' own hook for callbacks that resume (as BackupAndRestore uses it): fit starts at this epoch.
        self.model._initial_epoch = self.params["epochs"] if stopped else epoch
        # Beside "resuming RUN after epoch N": that the state itself came back, not only the epoch count.
        log.info("weights, optimizer, callbacks and random generators restored from the backup%s",
                 " (training had stopped early)" if stopped else "")

    def on_epoch_end(self, epoch, logs=None):
        self.saved = (epoch + 1, bool(self.model.stop_training))
        save(self.path, self.model, self.stateful, *self.saved, self.run_id)

    def on_train_end(self, logs=None):
        # A callback after this one (tune's pruner) stopped the training at the epoch saved as going on: saved again
        # as stopped, or a kill before the run is finished would have its resume train on. The weights are now the
        # best epoch's (EarlyStopping, earlier, restored them), as a resume that trains no more epochs ends with.
        if self.saved and self.model.stop_training and not self.saved[1]:
            self.saved = (self.saved[0], True)
            save(self.path, self.model, self.stateful, *self.saved, self.run_id)


def _names(paths: list[str]) -> list[str]:
    """Variable paths as they compare between processes: seed generators and optimizers unnumbered."""
    return [NUMBERED_NAME.sub(r"\1/", path) for path in paths]


def _values(variables: list) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]


def save(path: Path, model: keras.Model, callbacks: list, epochs_done: int, stopped: bool,
         run: str | None = None) -> None:
    """Write the state after ``epochs_done`` finished epochs (of the run ``run``, a :func:`run_id`), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for i, value in enumerate(_values(variables)):
            arrays[f"{prefix}_{i}"] = value
    callback_meta = []
    for j, cb in enumerate(callbacks):
        attrs = {}
        for name in CALLBACK_STATE[type(cb)]:
            value = getattr(cb, name)
            if isinstance(value, list):  # a list of weight arrays (EarlyStopping's best weights)
                for k, array in enumerate(value):
                    arrays[f"callback{j}_{name}_{k}"] = np.asarray(array)
                attrs[name] = {"arrays": len(value)}
            else:
                attrs[name] = {"value": _scalar(value)}
        callback_meta.append({"class": type(cb).__name__, "attrs": attrs})
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    arrays["numpy_random_keys"] = np_keys
    meta = {
        "format": FORMAT,
        "run": run,
        "epochs_done": epochs_done,
        "stopped": stopped,
        "model_variables": [v.path for v in model.variables],
        "optimizer_variables": [v.path for v in model.optimizer.variables],
        "callbacks": callback_meta,
        "numpy_random": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python_random": random.getstate(),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    artifacts.write_atomic(path, lambda tmp: np.savez(tmp, **arrays))


def restore(path: Path, model: keras.Model, callbacks: list) -> tuple[int, bool]:
    """Put the saved state back into the model, its optimizer, the callbacks and the random generators; a backup
    refused (damaged, or another run's) leaves every one of them as it was."""
    data, meta = load(path)
    try:
        callback_values, random_states, epochs_done, stopped = _checked(path, data, meta, model, callbacks)
    except (KeyError, TypeError, ValueError, IndexError):  # a record or an array missing, or of another kind
        raise damaged(path) from None
    before = np.random.get_state(), random.getstate()
    try:
        np.random.set_state(random_states[0])
        random.setstate(random_states[1])
    except (TypeError, ValueError):  # a generator's state of the wrong form
        np.random.set_state(before[0])
        random.setstate(before[1])
        raise damaged(path) from None
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for i, variable in enumerate(variables):
            variable.assign(data[f"{prefix}_{i}"])
    for cb, values in zip(callbacks, callback_values):
        for name, value in values.items():
            setattr(cb, name, value)
    return epochs_done, stopped


def _checked(path: Path, data: dict[str, Any], meta: dict[str, Any], model: keras.Model,
             callbacks: list) -> tuple[list[dict[str, Any]], tuple[Any, Any], int, bool]:
    """What the backup puts back, read and checked against the model and callbacks before anything is put back."""
    if [c["class"] for c in meta["callbacks"]] != [type(cb).__name__ for cb in callbacks]:
        raise FmnistError(f"{path} was written with other callbacks; it cannot resume this run")
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        keys = [f"{prefix}_{i}" for i in range(len(meta[f"{prefix}_variables"]))]
        shapes = [data[key].shape if key in data else None for key in keys]
        if _names(meta[f"{prefix}_variables"]) != _names([v.path for v in variables]) \
                or shapes != [v.shape for v in variables]:
            raise FmnistError(f"{path} was written for a different {prefix}; it cannot resume this run")
    callback_values = [{name: [data[f"callback{j}_{name}_{k}"] for k in range(entry["arrays"])] if "arrays" in entry
                        else entry["value"] for name, entry in saved["attrs"].items()}
                       for j, saved in enumerate(meta["callbacks"])]
    np_kind, np_pos, np_has_gauss, np_gauss = meta["numpy_random"]
    version, internal, gauss = meta["python_random"]
    random_states = ((np_kind, data["numpy_random_keys"], np_pos, np_has_gauss, np_gauss),
                     (version, tuple(internal), gauss))
    return callback_values, random_states, meta["epochs_done"], meta["stopped"]
