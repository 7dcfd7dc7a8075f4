"""The one frozen settings dataclass that describes a training run, and its named recipes."""

from __future__ import annotations

import dataclasses
import math
import re
import numbers
from dataclasses import dataclass
from typing import Any

from fmnist import defaults
from fmnist.errors import FmnistError
from fmnist.facts import NUM_CLASSES, NUM_FEATURES, TRAINING_IMAGES

BACKENDS = ("jax", "tensorflow")
# Chosen by measurement on a 2-core CPU: JAX trains the dense network faster (docs/speed.md), TensorFlow the
# ConvNet (docs/recipes.md: 10.7 s against 37.5 s per epoch of 18,000 images).
DEFAULT_BACKEND = "jax"
PREFERRED_BACKEND = {"dense": "jax", "cnn": "tensorflow"}
# The settings `fmnist train` takes as flags (--hidden-sizes, ...); the others come only from a recipe.
FLAG_SETTINGS = ("hidden_sizes", "dropout", "learning_rate", "batch_size", "epochs", "validation_fraction", "seed",
                 "limit", "name", "early_stopping_patience", "lr_patience", "lr_factor", "teacher")
ARCHITECTURES = ("dense", "cnn")
# Distillation's views (mixup or cutmix): so many of each training image are made, and the teacher answers for, once;
# each epoch takes the next distill_views of them, so the student sees the pool around in a few epochs (the teacher
# took about 90 s for a pool of 10 on TensorFlow here).
DISTILL_VIEW_POOL = 10
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "cosine")
# A sanity bound on a dense network's size: a typing slip like 99999999999,8 is refused, not an out-of-memory crash
# at the end of a long first epoch. Training holds about six copies: the weights, Adam's two moments, the gradients,
# early stopping's best weights and the backup's.
MAX_WEIGHTS = 10**8
MAX_BATCH_SIZE = 2**31 - 1  # what TensorFlow's and JAX's indices hold
# Why a batch of one image learns nothing: BatchNorm is in every architecture.
ONE_IMAGE_BATCH = "BatchNorm normalises each feature over the batch, and in a batch of one image every feature is 0"
MAX_EPOCHS = 10**6
MIN_LEARNING_RATE = 1.1754944e-38  # float32's smallest normal number: Keras keeps the rate in float32


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is letters, digits, '-', '_' and '.' only, and not empty: a run's or study's folder name."""
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


def split_problem(images: int, fraction: float, limited: bool = True) -> str | None:
    """Why ``images`` (``limited`` by --limit, else all there are) cannot be split with ``fraction`` of them for
    validation, every class on each side, if so."""
    n_val = round(images * fraction)
    if min(n_val, images - n_val) >= NUM_CLASSES:
        return None
    advice = "raise --limit or change --validation-fraction" if limited else "change --validation-fraction"
    return (f"a split of {images} images into {images - n_val} for training and {n_val} for validation cannot hold "
            f"all {NUM_CLASSES} classes on each side; {advice}")


def dense_weights(hidden_sizes: tuple[int, ...]) -> int:
    """The weights (biases aside) of a dense network with these hidden layers."""
    widths = (NUM_FEATURES, *hidden_sizes, NUM_CLASSES)
    return sum(a * b for a, b in zip(widths, widths[1:]))


def flag_value(value: Any) -> str:
    """A setting's value as a flag gives it: hidden sizes "512,-1", a number as typed."""
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the field's type (NumPy's numbers become Python's), or an error naming what it must be."""
    kind = annotation.removesuffix(" | None")
    if value is None and kind != annotation:
        return None
    if kind == "tuple[int, ...]" and isinstance(value, (list, tuple)) and all(_whole(v) for v in value):
        return tuple(int(v) for v in value)
    if kind == "int" and _whole(value):
        return int(value)
    if kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise FmnistError(f"invalid setting: {name} must be a number within float's range (about 1.8e308), "
                              "not an integer that large") from None
    if kind == "str" and isinstance(value, str):
        return value
    words = {"tuple[int, ...]": "a list of whole numbers", "int": "a whole number", "float": "a number", "str": "text"}
    raise FmnistError(f"invalid setting: {name} must be {words[kind]}, not {value!r}")


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of a training run; the defaults are the spec's recipe."""

    hidden_sizes: tuple[int, ...] = (512, 256, 64, 32)
    dropout: float = 0.3
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 100
    early_stopping_patience: int = 5
    lr_patience: int = 3
    lr_factor: float = 0.1
    validation_fraction: float = 0.2
    seed: int = 1234
    limit: int | None = None
    name: str = "spec"
    # Beyond the spec (issue "a better dense network"): the defaults keep the spec's recipe exactly.
    architecture: str = "dense"  # "dense" (the spec's) or "cnn" (a small ConvNet, as a reference point)
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    schedule: str = "plateau"  # "plateau" (ReduceLROnPlateau + EarlyStopping, the spec's) or "cosine" (fixed epochs)
    label_smoothing: float = 0.0
    input_dropout: float = 0.0  # dropout on the 784 pixels themselves
    warmup_epochs: int = 0  # cosine schedule only: linear warm-up from a twentieth of the peak learning rate
    teacher: str | None = None  # a run directory to distil from
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9  # weight of the teacher's soft targets against the labels
    # Views of each training image (mixup: two images blended; or cutmix, below) the student also learns on each
    # epoch, from the teacher's answers alone: more of the teacher's function to match than the 54,000 images show.
    distill_views: int = 0
    # The share of the pool's views that are cutmix instead of mixup (a box of the other image pasted in, of the
    # area the blend would have given it), picked at random per view.
    distill_cutmix: float = 0.0

    def __post_init__(self) -> None:
        # A hand-edited config.json must not train another network: "16" as hidden_sizes would be layers 1 and 6.
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _typed(field.name, field.type, getattr(self, field.name)))
        unbounded = [f.name for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        checks = [
            (not unbounded, f"{', '.join(unbounded)} must be a finite number"),
            (len(self.hidden_sizes) > 0 and all(s > 0 for s in self.hidden_sizes),
             "hidden_sizes must be one or more positive integers, e.g. 512,256,64,32"),
            (dense_weights(self.hidden_sizes) <= MAX_WEIGHTS,
             f"hidden_sizes {','.join(map(str, self.hidden_sizes))} would need "
             f"{dense_weights(self.hidden_sizes):,} weights; at most {MAX_WEIGHTS:,} "
             "(training holds about six copies of them: 2.4 GB of float32 at the most)"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.learning_rate >= MIN_LEARNING_RATE,
             f"learning_rate must be positive, at least {MIN_LEARNING_RATE:.3g} (Keras keeps it in float32, where "
             "a smaller one is 0)"),
            (self.batch_size != 1, f"batch_size must be 2 or more: {ONE_IMAGE_BATCH}, so the network learns nothing"),
            (1 < self.batch_size <= MAX_BATCH_SIZE, f"batch_size must be from 2 to {MAX_BATCH_SIZE:,}"),
            (0 < self.epochs <= MAX_EPOCHS, f"epochs must be from 1 to {MAX_EPOCHS:,}"),
            (self.early_stopping_patience > 0, "early_stopping_patience must be positive"),
            (self.lr_patience > 0, "lr_patience must be positive"),
            (0.0 < self.lr_factor < 1.0, "lr_factor must be in (0, 1)"),
            (0.0 < self.validation_fraction < 1.0, "validation_fraction must be in (0, 1)"),
            (0 <= self.seed < 2**32, "seed must be an integer from 0 to 2**32 - 1 (what NumPy's generators take)"),
            (self.limit is None or self.limit > 0, "limit must be positive"),
            (self.architecture in ARCHITECTURES, f"architecture must be one of {', '.join(ARCHITECTURES)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.weight_decay >= 0 and (self.weight_decay == 0 or self.optimizer == "adamw"),
             "weight_decay must be >= 0, and needs optimizer adamw"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (0.0 <= self.input_dropout < 1.0, "input_dropout must be in [0, 1)"),
            (self.distill_temperature > 0 and 0.0 <= self.distill_alpha <= 1.0,
             "distill_temperature must be positive and distill_alpha in [0, 1]"),
            (0 <= self.distill_views <= DISTILL_VIEW_POOL,
             f"distill_views must be from 0 to {DISTILL_VIEW_POOL} (the views made of each image)"),
            (0.0 <= self.distill_cutmix <= 1.0, "distill_cutmix must be in [0, 1]"),
            (self.warmup_epochs >= 0 and (self.warmup_epochs == 0 or self.schedule == "cosine"),
             "warmup_epochs must be >= 0, and needs schedule cosine"),
            (self.warmup_epochs < self.epochs,
             f"epochs must be more than the recipe's learning-rate warm-up ({self.warmup_epochs} "
             f"epoch{'s' if self.warmup_epochs != 1 else ''}): "
             f"{self.warmup_epochs + 1} or more"),
            (is_plain_name(self.name),
             f"name {'is empty: give one made of' if not self.name else 'may hold only'} letters, digits, '-', '_' "
             "and '.'"),
            # A name holding surrogates (a byte of a command line not UTF-8) is refused above; measured all the same.
            (len(self.name.encode("utf-8", "surrogatepass")) <= defaults.MAX_NAME_BYTES,
             f"name must be at most {defaults.MAX_NAME_BYTES} bytes in UTF-8 (the run's folder is named by it)"),
        ]
        for ok, message in checks:
            if not ok:
                raise FmnistError(f"invalid setting: {message}{self._given(message)}")
        # Checked against the whole training set (fmnist.train checks the split again on the set it loads): the limit
        # capped, so as not to be multiplied as a float (10**400 would overflow).
        images = TRAINING_IMAGES if self.limit is None else min(self.limit, TRAINING_IMAGES)
        split = split_problem(images, self.validation_fraction, self.limit is not None)
        if split:
            raise FmnistError(f"invalid setting: {split}")

    def _given(self, message: str) -> str:
        """" (given X)": the value of the one setting a refusal names, where it does not say it already."""
        named = [name for name in self.names() if re.search(rf"\b{name}\b", message)]
        if len(named) != 1 or not message.startswith(named[0]):  # of two settings together, or of none
            return ""
        value = flag_value(getattr(self, named[0]))
        if re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", message):
            return ""
        value = value if len(value) <= 40 else value[:39] + "…"
        value = re.sub("[\ud800-\udfff]", "\ufffd", value)  # a surrogate (a byte not UTF-8) as U+FFFD: printable
        return f" (given {value!r})" if isinstance(getattr(self, named[0]), str) else f" (given {value})"  # 'my run'

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values

    @classmethod
    def names(cls) -> set[str]:
        """The settings this fmnist knows."""
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def mistyped(cls, values: dict[str, Any]) -> str | None:
        """Why a setting among ``values`` is not of its type (a config.json edited by hand: hidden_sizes "512,256"),
        or None; values of the right type that this fmnist's limits refuse, an older or newer one's, are let be."""
        for field in dataclasses.fields(cls):
            try:
                if field.name in values:
                    _typed(field.name, field.type, values[field.name])
            except FmnistError as exc:
                return str(exc)
        return None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """Build settings from a dict; an unknown key is an error, never ignored."""
        known = cls.names()
        unknown = sorted(set(values) - known)
        if unknown:
            raise FmnistError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


# Each recipe is a set of overrides on the spec's defaults; explicit flags override the recipe in turn.
RECIPES: dict[str, dict[str, Any]] = {
    "spec": {},
    # Chosen on a 90/10 validation split (docs/recipes.md); the split is kept for calibration.
    "best": dict(
        name="best", hidden_sizes=(1024, 1024), dropout=0.3, input_dropout=0.1, optimizer="adamw",
        weight_decay=5e-4, schedule="cosine", learning_rate=4e-3, warmup_epochs=1, label_smoothing=0.1,
        batch_size=512, epochs=40, validation_fraction=0.1,
    ),
    # Distilled from a trained ConvNet run: give it with --teacher RUN (e.g. a run of --recipe cnn).
    "distilled": dict(
        name="distilled", hidden_sizes=(1024, 1024, 1024), dropout=0.2, optimizer="adamw", weight_decay=5e-4,
        schedule="cosine", learning_rate=2.8e-3, batch_size=256, epochs=30, validation_fraction=0.1,
        distill_temperature=4.0, distill_alpha=0.9, distill_views=3, distill_cutmix=0.5,
    ),
    "cnn": dict(
        name="cnn", architecture="cnn", dropout=0.5, optimizer="adamw", weight_decay=5e-4, schedule="cosine",
        learning_rate=2e-3, label_smoothing=0.1, batch_size=128, epochs=15, validation_fraction=0.1,
    ),
}


def images_per_epoch(training_images: int, settings: dict[str, Any]) -> int:
    """The images an epoch of a run with these settings trains on: each training image, and a distilled student's
    ``distill_views`` views of each besides."""
    views = int(settings.get("distill_views") or 0) if settings.get("teacher") else 0
    return training_images * (1 + views)


def setting_text(value: Any) -> str:
    """A setting as tables and the log show it: a list (hidden sizes) joined by "-", a value missing (None) as "-"."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value)
    return "-" if value is None else str(value)


def flag(name: str) -> str:
    """The command-line flag that sets a setting: hidden_sizes -> --hidden-sizes."""
    return "--" + name.replace("_", "-")
