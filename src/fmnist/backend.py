"""Pick the Keras backend before Keras is imported, and make its runs repeatable."""

from __future__ import annotations

import os
import sys

from fmnist.errors import FmnistError
from fmnist.settings import BACKENDS, DEFAULT_BACKEND, PREFERRED_BACKEND


def resolve(requested: str | None, architecture: str = "dense") -> str:
    """The backend to use: the flag, else KERAS_BACKEND, else the one measured fastest for the architecture."""
    name = (requested or os.environ.get("KERAS_BACKEND") or PREFERRED_BACKEND.get(architecture, DEFAULT_BACKEND)).lower()
    if name not in BACKENDS:
        raise FmnistError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def activate(requested: str | None = None, architecture: str = "dense") -> str:
    """Set KERAS_BACKEND for this process; Keras fixes its backend at import, so this must come first."""
    name = resolve(requested, architecture)
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise FmnistError(
                f"Keras is already running on {keras.backend.backend()} in this process; "
                f"start a new process for {name}"
            )
        return name
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide TensorFlow's start-up chatter
    try:
        import keras  # noqa: F401
    except ImportError as exc:
        raise FmnistError(f"the {name} backend is not installed ({exc}); run the setup script in README.md") from None
    return name


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend, and ask the backend for deterministic ops where it has them."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
