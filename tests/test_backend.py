import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fmnist.backend import resolve
from fmnist.errors import FmnistError


def test_flag_beats_environment_beats_the_measured_default(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve(None) == "jax"
    assert resolve(None, "cnn") == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert resolve(None) == "tensorflow"
    assert resolve("jax", "cnn") == "jax"


def test_unknown_backend_is_refused(monkeypatch):
    with pytest.raises(FmnistError, match="unknown backend 'torch': choose one of"):
        resolve("torch")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(FmnistError, match=r"unknown backend 'torch' \(from the environment variable KERAS_BACKEND\)"):
        resolve(None)


TF_PIPELINE_CHECK = """
import json
import numpy as np
import tensorflow as tf
from fmnist.backend import fit_inputs

features = np.arange(50, dtype=np.float32).reshape(25, 2)
labels = np.arange(25, dtype=np.int32)
data = fit_inputs((features, labels), (features[:7], labels[:7]), 4, 3, seed=5)
again = fit_inputs((features, labels), (features[:7], labels[:7]), 4, 3, seed=5)
epochs = [[(x.numpy().tolist(), y.numpy().tolist()) for x, y in data["x"]] for _ in range(2)]
print(json.dumps({
    "epochs": epochs,
    "again": [y.numpy().tolist() for _, y in again["x"]],
    "validation": [y.numpy().tolist() for _, y in data["validation_data"]],
    "autotune": data["x"].options().autotune.enabled,
    "keys": sorted(data),
}))
"""


def test_tensorflow_pipeline_shuffles_whole_epochs_by_seed_without_autotuning():
    result = subprocess.run([sys.executable, "-c", TF_PIPELINE_CHECK], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    orders = []
    for epoch in out["epochs"]:
        assert [len(y) for _, y in epoch] == [4] * 6 + [1]  # batch size kept, last batch partial
        order = [label for _, y in epoch for label in y]
        assert sorted(order) == list(range(25))  # every image once per epoch
        assert all(x == [2 * label, 2 * label + 1] for xs, y in epoch for x, label in zip(xs, y))  # pairs kept
        orders.append(order)
    assert orders[0] != orders[1] and orders[0] != list(range(25))  # a new order each epoch
    assert [label for y in out["again"] for label in y] == orders[0]  # the seed fixes it
    assert out["validation"] == [[0, 1, 2], [3, 4, 5], [6]]  # validation in order, at its own batch size
    assert out["autotune"] is False
    assert out["keys"] == ["shuffle", "validation_data", "x"]


def test_other_backends_get_the_arrays_themselves():
    import numpy as np

    from fmnist.backend import fit_inputs

    features, labels = np.zeros((5, 2), np.float32), np.arange(5)
    validation = (features[:2], labels[:2])
    data = fit_inputs((features, labels), validation, 4, 3, seed=5)
    assert data["x"] is features and data["y"] is labels and data["batch_size"] == 4
    assert data["validation_batch_size"] == 3 and data["validation_data"] is validation


JAX_RUN_CHECK = """
import json, sys
from pathlib import Path
import keras
from keras.src.utils import module_utils
from fmnist.data import load_dataset
from fmnist.settings import TrainSettings
from fmnist.train import train

folder, checksums = Path(sys.argv[1]), json.loads(sys.argv[2])
dataset = load_dataset(folder, checksums=checksums)
result = train(TrainSettings(hidden_sizes=(8,), epochs=2, batch_size=16, name="notf"), "jax",
               runs_dir=folder / "runs", dataset=dataset)
loaded = keras.saving.load_model(result.run_dir / "model.keras")
print(json.dumps({
    "tensorflow_imported": "tensorflow" in sys.modules,
    "answer_cleared": module_utils.tensorflow._available is None,
    "epochs": result.epochs_run, "loaded_layers": len(loaded.layers),
}))
"""


def test_a_jax_run_trains_and_saves_without_importing_tensorflow(tmp_path):
    from conftest import write_idx_set

    checksums = write_idx_set(tmp_path)
    result = subprocess.run([sys.executable, "-c", JAX_RUN_CHECK, str(tmp_path), json.dumps(checksums)],
                            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tensorflow_imported"] is False and out["answer_cleared"] is True
    assert out["epochs"] == 2 and out["loaded_layers"] > 0
    assert "oneDNN" not in result.stderr  # TensorFlow's C++ start-up lines never appear


def test_predict_starts_without_what_keras_would_import_for_nothing_and_leaves_it_importable(tiny_run_dir, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.float32))
    extras = ("pandas", "sklearn", "matplotlib.pyplot")  # Keras' pandas inputs, scikit-learn wrappers, image gallery
    check = ("import json, sys; from fmnist.cli import main; "
             f"status = main(['predict', {str(tiny_run_dir)!r}, {str(tmp_path / 'x.npy')!r}]); "
             f"imported = [name for name in {extras!r} if name in sys.modules]; "
             "import sklearn.base, matplotlib.pyplot, keras.src.trainers.data_adapters.array_slicing as s; "
             "print(json.dumps([status, imported, s.pandas is None]))")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr
    # Answered without them; fmnist's own two import afterwards; Keras took pandas as absent (pandas is no dependency
    # of fmnist, but Keras imports it where a user's environment has it).
    assert json.loads(result.stdout.splitlines()[-1]) == [0, [], True]


def test_tensorflow_retracing_warning_is_dropped_and_other_warnings_kept(caplog):
    import logging

    from fmnist.backend import hide_retracing_warning

    logger = logging.getLogger("tensorflow.test_backend")
    logger.addFilter(hide_retracing_warning)
    try:
        with caplog.at_level(logging.WARNING):
            logger.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is ...")
            logger.warning("something else went wrong")
    finally:
        logger.removeFilter(hide_retracing_warning)
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_where_keras_already_runs_its_backend_is_taken_unless_another_is_asked_for():
    """A program of one's own imported Keras first (its default backend, TensorFlow), then calls fmnist without one."""
    script = ("import os, keras; from fmnist.backend import activate; from fmnist.errors import FmnistError\n"
              "assert activate(None) == activate(None, 'cnn') == activate('TensorFlow') == 'tensorflow'\n"
              "try:\n    activate('jax')\nexcept FmnistError as exc:\n    print(exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Keras is already running on tensorflow in this process; start a new process for jax\n"
