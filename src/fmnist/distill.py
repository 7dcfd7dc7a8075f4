"""Knowledge distillation: a student learns from a trained teacher run's softened probabilities as well as labels."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import ops

from fmnist import model_files, runs
from fmnist.calibration import PROBABILITY_FLOOR, apply_temperature, folded_temperature
from fmnist.data import NUM_CLASSES
from fmnist.errors import FmnistError
from fmnist.inference import predict_probabilities

log = logging.getLogger(__name__)


def teacher_targets(teacher: str, features: np.ndarray, temperature: float, sha256: str | None = None) -> np.ndarray:
    """softmax(teacher logits / T) for each of ``features``, from a checksum-verified teacher run (with ``sha256``,
    the one the student's run recorded when it began)."""
    # The teacher's own calibration temperature is folded into its logits: undo it before softening.
    folded = folded_temperature(runs.teacher_run_dir(teacher))
    model, loaded = model_files.load_model(Path(teacher))
    require_same_teacher(teacher, sha256, loaded, "this run")  # replaced since the run checked it a moment ago
    # A ConvNet teacher takes a while.
    log.info("the teacher %s answers for the %d images the student trains and validates on", teacher, len(features))
    probabilities = predict_probabilities(model, features)
    return apply_temperature(probabilities, temperature / folded).astype(np.float32)


def require_same_teacher(teacher: str, recorded: str | None, sha256: str, run: str) -> None:
    """A student learns from the teacher its run began with (``recorded``): another one's soft targets would mix
    two teachers."""
    if recorded and recorded != sha256:
        raise FmnistError(f"--teacher {teacher}: its model changed since {run} began (SHA-256 {recorded} then, "
                          f"{sha256} now); restore that teacher's model, or train a new run")


def distillation_labels(labels: np.ndarray, soft_targets: np.ndarray) -> np.ndarray:
    """One row per image: the one-hot label, then the teacher's soft targets (20 columns)."""
    return np.concatenate([np.eye(NUM_CLASSES, dtype=np.float32)[labels], soft_targets], axis=1)


@keras.saving.register_keras_serializable(package="fmnist")
class DistillationLoss(keras.losses.Loss):
    """(1 - alpha) CE(label, p) + alpha T^2 KL(teacher_T || softmax(log p / T)), as in Hinton et al. (2015). KL, not
    the cross-entropy: the same gradients, without the teacher's own entropy (about 2.3 at T = 4) in the loss, so
    the curves read near other runs' losses and reach 0 where the student matches the teacher."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature, self.alpha = temperature, alpha

    def call(self, y_true, y_pred):
        hard, soft = y_true[:, :NUM_CLASSES], y_true[:, NUM_CLASSES:]
        # The student's logits, up to a constant per row. Floored where float32 ends, not at Keras' 1e-7: below a
        # floor a class gets no gradient, and a student sure of an image (a logit gap over 16) would learn nothing
        # more from the teacher's view of it.
        log_p = ops.log(ops.clip(y_pred, PROBABILITY_FLOOR, 1.0))
        hard_ce = -ops.sum(hard * log_p, axis=-1)
        # A target of 0 adds 0 (its log clipped only so that 0 * log 0 stays finite).
        soft_kl = ops.sum(soft * (ops.log(ops.clip(soft, 1e-12, 1.0)) - ops.log_softmax(log_p / self.temperature,
                                                                                        axis=-1)), axis=-1)
        return (1 - self.alpha) * hard_ce + self.alpha * self.temperature**2 * soft_kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="fmnist")
def label_accuracy(y_true, y_pred):
    """Accuracy against the one-hot label part of distillation targets."""
    return ops.cast(ops.argmax(y_true[:, :NUM_CLASSES], axis=-1) == ops.argmax(y_pred, axis=-1), "float32")
