"""Knowledge distillation: a student learns from a trained teacher run's softened probabilities as well as labels."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from fmnist import artifacts, model_files, run_lookup
from fmnist.calibration import PROBABILITY_FLOOR, apply_temperature, folded_temperature
from fmnist.data import to_features
from fmnist.errors import FmnistError
from fmnist.facts import NUM_CLASSES
from fmnist.inference import predict_probabilities
from fmnist.settings import DISTILL_VIEW_POOL, TrainSettings

log = logging.getLogger(__name__)
TEACHER_PART = 60000  # pixels converted to features for the teacher at a time (188 MB of float32)


class Teacher(NamedTuple):
    """A teacher run's model, loaded once for all its answers, and the temperature folded into it."""
    path: str
    model: Any
    folded_temperature: float


def load_teacher(teacher: str, sha256: str | None = None) -> Teacher:
    """The checksum-verified teacher model of run ``teacher``; with ``sha256``, refused unless it is the one the
    student's run recorded when it began."""
    folded = folded_temperature(run_lookup.teacher_run_dir(teacher))
    model, loaded = model_files.load_model(Path(teacher))
    require_same_teacher(teacher, sha256, loaded, "this run")  # replaced since the run checked it a moment ago
    return Teacher(teacher, model, folded)


def taught_to_the_teacher(teacher: str, indices: np.ndarray) -> int | None:
    """How many of ``indices`` (of the training set's images) the teacher trained on; None where its split.npz
    cannot be read."""
    try:
        taught = artifacts.read_split(run_lookup.teacher_run_dir(teacher), "train")
    except (OSError, FmnistError):  # a teacher moved, or its split.npz damaged
        return None
    return int(np.isin(indices, taught).sum())


def teacher_targets(teacher: Teacher, rows: np.ndarray, temperature: float,
                    what: str = "images the student trains and validates on") -> np.ndarray:
    """softmax(teacher logits / T) for each of ``rows`` (features, or uint8 pixels)."""
    # A ConvNet teacher takes a while.
    log.info("the teacher %s answers for the %s %s", teacher.path, f"{len(rows):,}", what)
    if rows.dtype == np.uint8:  # pixels, a part at a time: a pool of views all as float32 would take 4 times its memory
        parts = np.array_split(rows, -(-len(rows) // TEACHER_PART))
        probabilities = np.concatenate([predict_probabilities(teacher.model, to_features(part)) for part in parts])
    else:
        probabilities = predict_probabilities(teacher.model, rows)
    # The teacher's own calibration temperature is folded into its logits: undo it before softening.
    return apply_temperature(probabilities, temperature / teacher.folded_temperature).astype(np.float32)


def teacher_answers(settings: TrainSettings, run_dir: Path, features: np.ndarray, train_pixels: np.ndarray,
                    sha256: str | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The teacher's soft targets for ``features``, and the pool of views of ``train_pixels`` (uint8 rows) with
    their labels, if any; kept in the run until it finishes, so that a resume need not ask the teacher again."""
    views = pool_views(train_pixels, settings.seed, settings.distill_cutmix) if settings.distill_views else None
    # What the answers are for, row by row: a config.json edited since, or another NumPy's views, gives another key.
    digest = hashlib.sha256(f"{sha256} {settings.distill_temperature!r}".encode())
    for rows in (features, views) if views is not None else (features,):
        digest.update(f" {rows.shape} {rows.dtype} ".encode())
        digest.update(np.ascontiguousarray(rows).data)
    key = digest.hexdigest()
    path = run_dir / artifacts.TEACHER_ANSWERS
    answers = kept_answers(path, key)
    if answers is None:
        teacher = load_teacher(settings.teacher, sha256)
        answers = {"images": teacher_targets(teacher, features, settings.distill_temperature),
                   "views": np.zeros((0, NUM_CLASSES), np.float32) if views is None else
                   teacher_targets(teacher, views, settings.distill_temperature, "views of them")}
        try:
            artifacts.write_atomic(path, lambda tmp: np.savez(tmp, key=np.array(key), **answers))
        except (OSError, FmnistError) as exc:  # only a resume would have needed them: the training goes on
            log.warning("could not keep the teacher's answers for a resume (%s): a resume will ask the teacher again",
                        exc)
    return answers["images"], views, None if views is None else distillation_labels(None, answers["views"])


def kept_answers(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The teacher's answers an earlier process of the run kept for the same rows (``key``), if they are whole."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as kept:
            answers = {name: kept[name] for name in ("key", "images", "views")}
    # Anything a damaged file can raise (zipfile's, zlib's, NumPy's, a stray .npy's TypeError): the answers can
    # always be asked for again.
    except Exception:
        answers = {}
    if answers and str(answers.pop("key")) == key and all(
            array.dtype == np.float32 and array.ndim == 2 and np.isfinite(array).all() for array in answers.values()):
        log.info("the teacher's answers kept by the run's earlier training (%s)", path.name)
        return answers
    log.warning("%s is damaged or not for this run's images: the teacher answers again", path)
    return None


def pool_views(images: np.ndarray, seed: int, cutmix: float = 0.0) -> np.ndarray:
    """DISTILL_VIEW_POOL views of each of ``images`` (uint8 rows of square pictures), each mixed with another drawn at
    random, keeping a uniform random share of itself: blended (mixup), or for a ``cutmix`` share, pasted."""
    rng = np.random.default_rng([seed, 0])  # apart from the seed's other draws (ViewEpochs' are [seed, 1, epoch])
    cut_rng = np.random.default_rng([seed, 2])  # its own, so that the blends are those of a pool without cutmix
    views = np.empty((DISTILL_VIEW_POOL * len(images), images.shape[1]), np.uint8)
    for copy in range(DISTILL_VIEW_POOL):
        share = rng.uniform(0.0, 1.0, (len(images), 1)).astype(np.float32)
        others = images[rng.permutation(len(images))]
        view = np.rint(share * images + (1 - share) * others).astype(np.uint8)
        # Cutmix: in a share of the views, picked at random, a square of the other's pixels pasted over the rest of its
        # area.
        if cutmix:
            cut = cut_rng.random(len(images)) < cutmix
            view[cut] = pasted(images[cut], others[cut], 1 - share[cut, 0], cut_rng)
        views[copy * len(images):(copy + 1) * len(images)] = view
    return views


def pasted(images: np.ndarray, others: np.ndarray, area: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``images`` (rows of square pictures), each with a square of its row of ``others`` covering ``area`` of it
    (to a whole pixel's side) pasted in at a random place, wholly inside."""
    side = math.isqrt(images.shape[1])
    box = np.rint(side * np.sqrt(area)).astype(int)
    top, left = ((rng.random((2, len(images))) * (side - box + 1)).astype(int))
    pixels = np.arange(side)
    rows = (pixels >= top[:, None]) & (pixels < (top + box)[:, None])
    columns = (pixels >= left[:, None]) & (pixels < (left + box)[:, None])
    inside = (rows[:, :, None] & columns[:, None, :]).reshape(len(images), -1)
    return np.where(inside, others, images)


def require_same_teacher(teacher: str, recorded: str | None, sha256: str, run: str) -> None:
    """A student learns from the teacher its run began with (``recorded``): another one's soft targets would mix
    two teachers."""
    if recorded and recorded != sha256:
        raise FmnistError(f"--teacher {teacher}: its model changed since {run} began (SHA-256 {recorded} then, "
                          f"{sha256} now); restore that teacher's model, or train a new run")


def distillation_labels(labels: np.ndarray | None, soft_targets: np.ndarray) -> np.ndarray:
    """One row per image: the one-hot label (zeros for a view, which has none: the teacher's answer alone counts),
    then the teacher's soft targets (20 columns)."""
    hard = np.zeros_like(soft_targets) if labels is None else np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    return np.concatenate([hard, soft_targets], axis=1)


class ViewEpochs(keras.utils.PyDataset):
    """The student's training batches, epoch after epoch without end: each epoch every training image and the next
    ``per_epoch`` of its pool of views, in an order drawn from the seed and the epoch."""
    # ``fit`` cuts them with ``steps_per_epoch = batches_per_epoch``. A batch follows from its index alone, counted from
    # ``initial_epoch``: a resumed run sees what it would have, whenever Keras calls back or TensorFlow reads ahead.

    def __init__(self, features: np.ndarray, labels: np.ndarray, views: np.ndarray, view_labels: np.ndarray,
                 per_epoch: int, batch_size: int, seed: int, initial_epoch: int = 0):
        super().__init__()
        self.features, self.labels, self.views, self.view_labels = features, labels, views, view_labels
        self.per_epoch, self.batch_size, self.seed, self.initial_epoch = per_epoch, batch_size, seed, initial_epoch
        self.batches_per_epoch = -(-len(features) * (1 + per_epoch) // batch_size)
        self._orders: dict[int, np.ndarray] = {}

    @property
    def num_batches(self) -> None:
        return None  # endless, as the docstring says

    def order(self, epoch: int) -> np.ndarray:
        """The rows of ``epoch``: index i < n is training image i, n + k the pool's view k."""
        order = self._orders.get(epoch)
        if order is None:
            n, pool = len(self.features), len(self.views) // len(self.features)
            copies = [(epoch * self.per_epoch + k) % pool for k in range(self.per_epoch)]  # the pool's, in turn
            chosen = np.concatenate([np.arange(n)] + [n + copy * n + np.arange(n) for copy in copies])
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(chosen)
            # Batches are read in turn, so only the epoch being read is kept (replaced whole: a reader Keras dropped
            # may still be reading on another thread).
            self._orders = {epoch: order}
        return order

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, batch = divmod(index, self.batches_per_epoch)
        rows = self.order(self.initial_epoch + epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
        n, original = len(self.features), rows < len(self.features)
        x = np.empty((len(rows), self.features.shape[1]), np.float32)
        y = np.empty((len(rows), self.labels.shape[1]), np.float32)
        x[original], y[original] = self.features[rows[original]], self.labels[rows[original]]
        if not original.all():  # a batch of training images alone can happen
            x[~original] = to_features(self.views[rows[~original] - n])
            y[~original] = self.view_labels[rows[~original] - n]
        return x, y


@keras.saving.register_keras_serializable(package="fmnist")
class DistillationLoss(keras.losses.Loss):
    """(1 - alpha) CE(label, p) + alpha T^2 KL(teacher_T || softmax(log p / T)), as in Hinton et al. (2015)."""
    # KL, not the cross-entropy: the same gradients, without the teacher's own entropy (about 2.3 at T = 4) in the loss,
    # so the curves read near other runs' losses and reach 0 where the student matches the teacher.

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
class LabelAccuracy(keras.metrics.Metric):
    """Accuracy against the one-hot label part of distillation targets, over the rows that have a label (a mixup
    view has none: counted, it would pull the training accuracy down by its share of the batch)."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable(shape=(), initializer="zeros", name="right")
        self.labelled = self.add_variable(shape=(), initializer="zeros", name="labelled")

    def update_state(self, y_true, y_pred, sample_weight=None):
        hard = y_true[:, :NUM_CLASSES]
        labelled = ops.sum(hard, axis=-1)  # 1 for a training image, 0 for a view
        right = ops.cast(ops.argmax(hard, axis=-1) == ops.argmax(y_pred, axis=-1), "float32") * labelled
        self.right.assign_add(ops.sum(right))
        self.labelled.assign_add(ops.sum(labelled))

    def result(self):
        return ops.divide_no_nan(self.right, self.labelled)

    def reset_state(self):
        self.right.assign(0.0)
        self.labelled.assign(0.0)
