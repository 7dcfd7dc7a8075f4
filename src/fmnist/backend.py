"""Pick the Keras backend before Keras is imported, and make its runs repeatable."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterator

import numpy as np

from fmnist.errors import FmnistError
from fmnist.settings import BACKENDS, DEFAULT_BACKEND, PREFERRED_BACKEND


def resolve(requested: str | None, architecture: str = "dense", fallback: str | None = None) -> str:
    """The backend to use: the flag, else KERAS_BACKEND, else ``fallback`` or the one measured fastest for the
    architecture."""
    default = fallback or PREFERRED_BACKEND.get(architecture, DEFAULT_BACKEND)
    name = (requested or os.environ.get("KERAS_BACKEND") or default).lower()
    if name not in BACKENDS:
        source = "" if requested else " (from the environment variable KERAS_BACKEND)"
        raise FmnistError(f"unknown backend {name!r}{source}: choose one of {', '.join(BACKENDS)}")
    return name


def activate(requested: str | None = None, architecture: str = "dense") -> str:
    """Set KERAS_BACKEND for this process; Keras fixes its backend at import, so this must come first. Where Keras
    already runs (imported by a program of one's own), it is the backend unless another is ``requested``."""
    if "keras" in sys.modules:
        import keras

        running = keras.backend.backend()
        name = resolve(requested or running, architecture)
        if running != name:
            raise FmnistError(f"Keras is already running on {running} in this process; start a new process for {name}")
        return name
    name = resolve(requested, architecture)
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide TensorFlow's start-up chatter
        logging.getLogger("tensorflow").addFilter(hide_retracing_warning)
    try:
        with _hidden(KERAS_EXTRAS):
            import keras  # noqa: F401
    except ImportError as exc:
        raise FmnistError(f"the {name} backend is not installed ({exc}); run the setup script in README.md") from None
    return name


# Keras imports these whenever they are installed, for its pandas inputs, scikit-learn wrappers and image gallery,
# none of which fmnist uses: 2 of the 5.3-5.9 s Keras took to import in a fresh install on the 2-core machine. fmnist
# imports scikit-learn and matplotlib itself where it uses them (scoring, pictures), so `predict` and `serve` start
# without them. Those three Keras features stay off in a process whose Keras came through activate(); the modules
# themselves import as usual.
KERAS_EXTRAS = ("pandas", "sklearn", "matplotlib.pyplot")


@contextlib.contextmanager
def _hidden(modules: tuple[str, ...]) -> Iterator[None]:
    """Within the block, importing any of ``modules`` not yet imported fails as if it were not installed."""
    hidden = [name for name in modules if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:  # so that a later import finds the module
                del sys.modules[name]


def hide_retracing_warning(record: logging.LogRecord) -> bool:
    """Drop TensorFlow's "triggered tf.function retracing" warning: each seed of ``--seeds`` builds a new model and
    so new compiled functions by design, which TensorFlow counts as retracing."""
    return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def tensorflow_hidden_from_keras(backend: str) -> Iterator[None]:
    """On a backend other than TensorFlow, have Keras take TensorFlow as absent for the block."""
    # Keras imports TensorFlow whenever it is installed, only to seed it and to look for its objects while saving:
    # seconds, memory and its C++ start-up lines, for nothing a JAX run uses. No public switch exists, so this sets
    # the answer of Keras' lazy module, and clears it after: `fmnist export` needs TensorFlow on JAX.
    from keras.src.utils import module_utils

    lazy = getattr(module_utils, "tensorflow", None)
    if backend == "tensorflow" or getattr(lazy, "module", True) is not None or "tensorflow" in sys.modules:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend, and ask the backend for deterministic ops where it has them."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def fit_inputs(
    train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
    batch_size: int, validation_batch_size: int, seed: int, initial_epoch: int = 0,
) -> dict[str, Any]:
    """``model.fit``'s data arguments. On TensorFlow, our own tf.data pipeline with autotuning off: Keras' own
    autotuned one made whole epochs 1.5 times slower at random on a 2-core CPU (docs/speed.md)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return dict(x=train[0], y=train[1], batch_size=batch_size,
                    **validation_inputs(validation, validation_batch_size))
    return dict(x=_tensorflow_batches(train, batch_size, (seed, initial_epoch)), shuffle=False,
                **validation_inputs(validation, validation_batch_size))


def validation_inputs(validation: tuple[np.ndarray, np.ndarray], batch_size: int) -> dict[str, Any]:
    """``model.fit``'s validation arguments, in ``fit_inputs``' pipeline; also beside training batches made elsewhere
    (a distilled student's mixup views, which Keras' own adapter reads, autotuned, on TensorFlow)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return dict(validation_data=validation, validation_batch_size=batch_size)
    return dict(validation_data=_tensorflow_batches(validation, batch_size))


def _tensorflow_batches(arrays: tuple[np.ndarray, np.ndarray], size: int,
                        shuffled: tuple[int, int] | None = None) -> Any:
    """A tf.data pipeline of ``arrays`` in batches, autotuning off; ``shuffled`` = (seed, epochs already run): a new
    order every epoch, fixed by the seed, whole batches gathered at once, as Keras does."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    tensors = tuple(tf.constant(a) for a in arrays)
    indices = tf.data.Dataset.range(len(arrays[0]))
    if shuffled:
        seed, initial_epoch = shuffled
        indices = indices.shuffle(len(arrays[0]), seed=seed, reshuffle_each_iteration=True)
        # Each new iterator draws the next order, and Keras makes two an epoch (one at its start, one more at its
        # end): a resumed run skips the orders its first epochs drew (tests/test_resume.py checks this).
        for _ in range(2 * initial_epoch):
            iter(indices)
    gathered = indices.batch(size).map(lambda i: tuple(tf.gather(t, i) for t in tensors))
    return gathered.prefetch(2).with_options(options)
