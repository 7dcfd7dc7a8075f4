import json
import random

import keras
import numpy as np
import pytest

from fmnist.backup import restore, save
from fmnist.backup_file import read_meta
from fmnist.errors import FmnistError


def _model(width: int = 8) -> keras.Model:
    keras.backend.clear_session()  # layer names, which the backup checks, as in a new process
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.random.default_rng(0).random((10, 4)), np.arange(10) % 3, epochs=1, verbose=0)  # builds the optimizer
    return model


def _callbacks(model: keras.Model) -> list[keras.callbacks.Callback]:
    callbacks = [keras.callbacks.EarlyStopping(patience=5), keras.callbacks.ReduceLROnPlateau(patience=3)]
    for callback in callbacks:  # as fit starts them
        callback.set_model(model)
        callback.on_train_begin()
    return callbacks


def test_a_restore_brings_back_the_weights_the_optimizer_the_callbacks_and_the_random_generators(tmp_path):
    model = _model()
    callbacks = _callbacks(model)
    stopping, plateau = callbacks
    stopping.wait, stopping.best, stopping.best_epoch = 2, 0.25, 3
    stopping.best_weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.get_weights()]
    plateau.wait, plateau.cooldown_counter, plateau.best = 1, 0, 0.3
    np.random.seed(7)
    random.seed(7)
    save(tmp_path / "backup.npz", model, callbacks, epochs_done=4, stopped=False)
    weights = [w.copy() for w in model.get_weights()]
    optimizer_state = [np.asarray(keras.ops.convert_to_numpy(v)).copy() for v in model.optimizer.variables]
    next_draws = (np.random.random(3), random.random())

    fresh_model = _model()  # other weights, Adam moments and callback counters
    fresh_callbacks = _callbacks(fresh_model)
    np.random.seed(99)
    random.seed(99)
    assert restore(tmp_path / "backup.npz", fresh_model, fresh_callbacks) == (4, False)

    for saved, restored in zip(weights, fresh_model.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    for saved, variable in zip(optimizer_state, fresh_model.optimizer.variables):
        np.testing.assert_array_equal(saved, keras.ops.convert_to_numpy(variable))
    stopping, plateau = fresh_callbacks
    assert (stopping.wait, stopping.best, stopping.best_epoch) == (2, 0.25, 3)
    for saved, restored in zip(weights, stopping.best_weights):
        np.testing.assert_array_equal(saved, restored)
    assert (plateau.wait, plateau.cooldown_counter, plateau.best) == (1, 0, 0.3)
    np.testing.assert_array_equal(np.random.random(3), next_draws[0])
    assert random.random() == next_draws[1]
    assert read_meta(tmp_path / "backup.npz")["epochs_done"] == 4


def test_a_backup_of_another_model_or_other_callbacks_is_refused(tmp_path):
    model = _model()
    save(tmp_path / "backup.npz", model, _callbacks(model), epochs_done=1, stopped=False)
    with pytest.raises(FmnistError, match="different model"):
        other = _model(width=16)
        restore(tmp_path / "backup.npz", other, _callbacks(other))
    with pytest.raises(FmnistError, match="other callbacks"):
        same = _model()
        restore(tmp_path / "backup.npz", same, _callbacks(same)[:1])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not a backup at all"])
def test_a_damaged_backup_is_one_line_saying_what_to_do(tmp_path, content):
    (tmp_path / "backup.npz").write_bytes(content)
    model = _model()
    with pytest.raises(FmnistError, match="backup.npz is damaged, so the run cannot continue from it; remove "
                                          "backup.npz and history.csv, and 'fmnist train --resume .*' trains the run "
                                          "again from its first"):
        restore(tmp_path / "backup.npz", model, _callbacks(model))



@pytest.mark.parametrize("cut", ["callbacks", "numpy_random", "python_random", "epochs_done", "model_variables",
                                 "numpy_random_keys", "callback0_best_weights_0", "python_random_malformed"])
def test_a_backup_missing_part_of_its_record_is_one_line_and_leaves_the_model_as_it_was(tmp_path, cut):
    model = _model()
    callbacks = _callbacks(model)
    callbacks[0].best_weights = model.get_weights()
    save(tmp_path / "backup.npz", model, callbacks, epochs_done=1, stopped=False)
    with np.load(tmp_path / "backup.npz") as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["meta"]))
    if cut == "python_random_malformed":  # of the right shape, but a state Python's generator refuses
        meta["python_random"] = [3, [0] * 3, None]
    elif cut in meta:
        del meta[cut]
    else:
        del arrays[cut]
    np.savez(tmp_path / "backup.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    fresh = _model()
    fresh_callbacks = _callbacks(fresh)
    weights = fresh.get_weights()
    np.random.seed(5)
    random.seed(5)
    generators = np.random.get_state()[1].copy(), random.getstate()
    with pytest.raises(FmnistError, match="backup.npz is damaged, so the run cannot continue from it; remove "
                                          "backup.npz and history.csv"):
        restore(tmp_path / "backup.npz", fresh, fresh_callbacks)
    for before, after in zip(weights, fresh.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert fresh_callbacks[0].best_weights is None
    np.testing.assert_array_equal(np.random.get_state()[1], generators[0])
    assert random.getstate() == generators[1]


def test_a_backup_names_its_optimizer_and_seed_generators_however_keras_numbered_them(tmp_path):
    """Keras numbers an unnamed optimizer or seed generator by those made before it in the process ("adam_1"), so the
    same model's backup may carry other numbers than the process that resumes it."""
    import re

    model = _model()
    save(tmp_path / "backup.npz", model, _callbacks(model), epochs_done=2, stopped=False)
    with np.load(tmp_path / "backup.npz") as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["optimizer_variables"] = [re.sub(r"^adam/", "adam_3/", path) for path in meta["optimizer_variables"]]
    assert any(path.startswith("adam_3/") for path in meta["optimizer_variables"])
    np.savez(tmp_path / "renumbered.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    fresh = _model()
    assert restore(tmp_path / "renumbered.npz", fresh, _callbacks(fresh)) == (2, False)
    meta["optimizer_variables"] = [re.sub(r"^adam_3/", "sgd/", path) for path in meta["optimizer_variables"]]
    np.savez(tmp_path / "other.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    with pytest.raises(FmnistError, match="was written for a different optimizer"):
        restore(tmp_path / "other.npz", fresh, _callbacks(fresh))
