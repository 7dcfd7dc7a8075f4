"""A named recipe with flags applied, and how its settings compile a model, label its data and pick its callbacks."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import defaults
from fmnist.errors import FmnistError, UsageError
from fmnist.facts import NUM_CLASSES
from fmnist.settings import FLAG_SETTINGS, RECIPES, TrainSettings, flag, setting_text

# Settings that a cosine schedule (fixed epochs, no plateau callbacks) or the ConvNet never reads.
PLATEAU_ONLY = ("early_stopping_patience", "lr_patience", "lr_factor")
DENSE_ONLY = ("hidden_sizes", "input_dropout")


NAMED_CHANGES = 2  # up to this many settings changed from a recipe are named, more are counted


def closest_recipe(settings: dict[str, Any]) -> str:
    """The recipe these settings come from (config.json does not name it): the one they differ from least, not counting
    the run's size and name, with the settings changed named or counted."""
    # ``"spec with dropout 0.1"`` names a setting changed and its value, ``"spec with 3 settings changed"`` counts more
    # than two.
    best, changed = recipe_changes(settings)
    if not changed:
        return best
    return f"{best} with " + (changes_text(changed, settings) if len(changed) <= NAMED_CHANGES else
                              f"{len(changed)} settings changed")


def changes_text(names: list[str], settings: dict[str, Any]) -> str:
    """The settings ``names`` with their values in ``settings`` (the spec's where missing), a float to three
    significant digits as `fmnist runs` gives the rate (a tuned one has sixteen): "dropout 0.284, ..."."""
    spec = _preset("spec")

    def text(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else setting_text(value)

    return ", ".join(f"{name} {text(settings.get(name, spec[name]))}" for name in names)


def recipe_changes(settings: dict[str, Any]) -> tuple[str, list[str]]:
    """:func:`closest_recipe`'s recipe, and every setting these settings change in it."""
    def changes(recipe: str) -> list[str]:
        return _differ(settings, _preset(recipe))

    # Only "distilled" takes a teacher, and needs one: a run is of it exactly when it had one.
    changed = {recipe: changes(recipe) for recipe in RECIPES
               if (recipe == "distilled") == bool(settings.get("teacher"))}
    best = min(changed, key=lambda recipe: len(changed[recipe]))
    return best, changed[best]


@functools.cache  # read, never changed: `fmnist runs` names a recipe for every run it lists
def _preset(recipe: str) -> dict[str, Any]:
    return {**TrainSettings().to_dict(), **TrainSettings.from_dict(RECIPES[recipe]).to_dict()}


# What a recipe is not: a run's size, name and seed (and teacher, which distilled alone has) are its own.
NOT_RECIPE = {"name", "seed", "epochs", "limit", "teacher"}


def _differ(settings: dict[str, Any], preset: dict[str, Any]) -> list[str]:
    spec = _preset("spec")
    return sorted(k for k, v in preset.items() if k not in NOT_RECIPE and settings.get(k, spec[k]) != v)


def recipe_text(settings: dict[str, Any]) -> str:
    """The recipe of these settings in words: which it is, what it changes in the spec's, what the run changed in it."""
    recipe, changed = recipe_changes(settings)
    if recipe == "spec":
        return "the spec's" + (f", with {changes_text(changed, settings)}" if changed else "")
    preset = _preset(recipe)
    said = f"{recipe} (the spec's with {changes_text(_differ(preset, _preset('spec')), preset)})"
    return said + (f", and this run's {changes_text(changed, settings)}" if changed else "")


def unused_settings(recorded: dict[str, Any]) -> set[str]:
    """Settings that did nothing in a run: listed, they would read as if they had (a ConvNet's unused dense sizes,
    a fixed schedule's plateau patience, the distillation's without a teacher)."""
    unused = set() if recorded.get("teacher") else {k for k in recorded if k.startswith("distill_")}
    if recorded.get("architecture") == "cnn":
        unused.update(DENSE_ONLY)
    if recorded.get("schedule") == "cosine":
        unused.update(PLATEAU_ONLY)
    return unused


def recipe_settings(recipe: str, runs_dir: str | Path = defaults.RUNS_DIR, **overrides: Any) -> TrainSettings:
    """The recipe's settings with ``overrides`` applied; an unknown recipe or setting, or one it ignores, is a usage
    error. A distilled recipe's teacher, a run's path or its name in ``runs_dir``, is kept as an absolute path."""
    # UsageError: a value out of range is the command line's, refused with status 2 as argparse refuses --epochs 0.
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    if isinstance(overrides.get("teacher"), os.PathLike):  # a Path from Python, kept as the text a config.json holds
        overrides = {**overrides, "teacher": os.fspath(overrides["teacher"])}
    try:
        settings = TrainSettings.from_dict({**RECIPES[recipe], **overrides})
    except FmnistError as exc:  # said in the flags the user typed: --validation-fraction, not validation_fraction
        message = str(exc)
        for name in set(overrides) & set(FLAG_SETTINGS) if message.startswith("invalid setting: ") else ():
            # The subject, not "2 epochs" later, nor the flag an advice already names ("raise --limit").
            message = re.sub(rf"(?<!-)\b{name}\b", flag(name), message, count=1)
        raise UsageError(message) from None
    for why, applies, names in (("is a ConvNet", settings.architecture == "cnn", DENSE_ONLY),
                                ("runs a cosine schedule for its fixed epochs", settings.schedule == "cosine",
                                 PLATEAU_ONLY)):
        unread = [name for name in overrides if applies and name in names]
        if unread:
            flags = ", ".join(map(flag, unread))
            raise UsageError(f"--recipe {recipe} {why}, so {flags} would do nothing: leave {flags} out")
    if settings.teacher and recipe != "distilled":
        raise UsageError(f"--teacher is for --recipe distilled (a dense network taught by a trained run); "
                         f"--recipe {recipe} learns from the labels alone: leave --teacher out")
    if recipe == "distilled" and not settings.teacher:
        raise UsageError("--recipe distilled needs --teacher RUN, a trained run to learn from (e.g. --recipe cnn)")
    if settings.teacher:
        from fmnist.run_lookup import resolve_model

        try:  # absolute, so that a resume from another folder finds it
            teacher = resolve_model(settings.teacher, Path(runs_dir)).resolve()
        except FmnistError as exc:  # which of the flags' runs it is
            raise FmnistError(f"--teacher: {exc}") from None
        settings = dataclasses.replace(settings, teacher=str(teacher))
    return settings


def training_labels(labels: np.ndarray, settings: TrainSettings, soft_targets: np.ndarray | None = None) -> np.ndarray:
    """Integer labels; one-hot where label smoothing needs them (Keras' sparse loss has none); with the teacher's
    ``soft_targets`` beside them when distilling."""
    labels = labels.astype(np.int32)
    if soft_targets is not None:
        from fmnist.distill import distillation_labels

        return distillation_labels(labels, soft_targets)
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels] if settings.label_smoothing else labels


def compile_model(model: Any, settings: TrainSettings, steps_per_epoch: int, steps_per_execution: int) -> None:
    import keras

    learning_rate: Any = settings.learning_rate
    if settings.schedule == "cosine":
        warmup = settings.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            settings.learning_rate / 20 if warmup else settings.learning_rate,
            settings.epochs * steps_per_epoch - warmup,
            warmup_target=settings.learning_rate if warmup else None, warmup_steps=warmup,
        )
    # Named, as the layers are: Keras numbers a second unnamed optimizer in one process ("adam_1"), and a backup
    # names each variable, so a run resumed in the process that built another model would not match its backup.
    if settings.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=settings.weight_decay, name="adamw")
    else:
        optimizer = keras.optimizers.Adam(learning_rate, name="adam")
    metrics: list[Any] = ["accuracy"]
    if settings.teacher:
        from fmnist.distill import DistillationLoss, LabelAccuracy

        loss = DistillationLoss(settings.distill_temperature, settings.distill_alpha)
        metrics = [LabelAccuracy()]
    elif settings.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution)


def schedule_callbacks(settings: TrainSettings) -> list:
    """The spec's ReduceLROnPlateau and EarlyStopping; a cosine recipe runs its fixed epochs instead."""
    import keras

    if settings.schedule == "cosine":
        return []
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=settings.lr_patience, factor=settings.lr_factor),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.early_stopping_patience, restore_best_weights=True
        ),
    ]
