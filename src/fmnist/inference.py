"""Forward passes: compiled (one XLA program per batch shape, no `model.predict` overhead) for serving and
prediction, and through Keras' predict in large batches for whole splits."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# Batches are padded up to one of these sizes so that only a few shapes are ever compiled.
BUCKETS = (1, 8, 64, 256, 1024)
# Forward passes over a whole split go in large batches: faster, and the probabilities do not depend on it.
PREDICT_BATCH = 1024


def predict_probabilities(model: Any, rows: np.ndarray) -> np.ndarray:
    """The model's probabilities for many rows at once, through Keras' predict."""
    return np.asarray(model.predict(rows, batch_size=PREDICT_BATCH, verbose=0))


def compiled_forward(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(x) -> probabilities`` for float32 x of shape (n, 784), compiled for the active backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        # Copies: Keras' own predict/fit donate the variables' buffers, which would delete arrays we kept.
        trainable = [jax.numpy.array(v.value, copy=True) for v in model.trainable_variables]
        non_trainable = [jax.numpy.array(v.value, copy=True) for v in model.non_trainable_variables]
        step = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        run = lambda x: np.asarray(step(trainable, non_trainable, x))  # noqa: E731
    else:
        import tensorflow as tf

        step = tf.function(lambda x: model(x, training=False), jit_compile=True, reduce_retracing=True)
        run = lambda x: step(tf.constant(x)).numpy()  # noqa: E731

    def forward(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        if n > BUCKETS[-1]:
            return np.concatenate([forward(x[i:i + BUCKETS[-1]]) for i in range(0, n, BUCKETS[-1])])
        size = next(b for b in BUCKETS if b >= n)
        padded = x if size == n else np.concatenate([x, np.zeros((size - n, x.shape[1]), np.float32)])
        return run(padded)[:n]

    return forward
