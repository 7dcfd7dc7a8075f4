"""`fmnist evaluate`: score a run's checksum-verified model on the 10,000 test images."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts, defaults, model_files, run_lookup, runs
from fmnist.data import Dataset, load_dataset, to_features
from fmnist.errors import FmnistError
from fmnist.explain import report_explanations
from fmnist.facts import CLASS_NAMES
from fmnist.inference import predict_probabilities
from fmnist.metrics import (
    bootstrap_accuracy_interval, calibration_bins, compute_metrics, mean_log_loss, most_confident_mistakes,
)
from fmnist.run_list import learned_next_to_nothing
from fmnist.seeds import SUMMARY_RUN_SCORES, summary_entries
from fmnist.settings import images_per_epoch

log = logging.getLogger(__name__)


def calibration_metrics(run_dir: Path, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """ECE and reliability bins of the (calibrated) model, and of the model before its temperature was folded in."""
    from fmnist.calibration import apply_temperature, folded_temperature

    temperature = folded_temperature(run_dir)
    trained = apply_temperature(probabilities, 1.0 / temperature)  # the network as it was trained
    before = calibration_bins(y_true, trained)
    after = calibration_bins(y_true, probabilities)
    return {"temperature": temperature, "ece": after["ece"], "ece_before_scaling": before["ece"],
            "test_loss_before_scaling": mean_log_loss(y_true, trained),
            "reliability": {"after": after, "before": before}}


def evaluate_run(
    run_dir: Path, data_dir: Path | None = None, model: Any = None, dataset: Dataset | None = None
) -> dict[str, Any]:
    """Predict the test set, write metrics and predictions into the run, rebuild its report; return the metrics."""
    import keras

    from fmnist.report import checked_history, read_config, write_report

    run_dir = runs.require_run_dir(run_dir)
    checked_history(run_dir, read_config(run_dir))  # refused now, not after the scoring
    if model is None:
        model, checksum = model_files.load_model(run_dir)
    else:
        checksum = model_files.verified_model_path(run_dir)[1]
    dataset = dataset or load_dataset(data_dir, test_only=True)

    predict = functools.partial(predict_probabilities, model)
    # The backend named: `evaluate --backend` may score on another than the one that trained the run.
    log.info("scoring %s on the %s test images (%s backend)", runs.absolute(run_dir), f"{len(dataset.y_test):,}",
             keras.backend.backend())
    probabilities = predict(to_features(dataset.x_test))
    metrics = compute_metrics(dataset.y_test, probabilities)
    metrics.update(model_sha256=checksum, evaluated=runs.utc_now(), evaluated_backend=keras.backend.backend(),
                   **calibration_metrics(run_dir, dataset.y_test, probabilities))
    low, high = bootstrap_accuracy_interval(dataset.y_test, probabilities.argmax(axis=1))
    metrics["test_accuracy_ci95"] = [low, high]
    mistakes = most_confident_mistakes(dataset.y_test, probabilities)
    log.info("computing occlusion maps, then drawing the report")
    explanations = report_explanations(predict, dataset.x_test, dataset.y_test, probabilities, mistakes)

    def write_scores() -> None:
        artifacts.write_atomic(run_dir / artifacts.PREDICTIONS, lambda tmp: np.savez_compressed(
            tmp, y_true=dataset.y_test, probabilities=probabilities.astype(np.float32),
            mistake_indices=mistakes, mistake_images=dataset.x_test[mistakes], **explanations,
        ))
        artifacts.write_json(run_dir / artifacts.METRICS, metrics)

    write_report(run_dir, write_scores)  # from the files just written: a failure left is a bug, not damage
    verdict = chance_verdict(run_dir, metrics)
    if verdict:  # said, as its report and 'fmnist runs' say it, or the run looks like any other
        log.warning("%s", verdict)
    return metrics


def chance_verdict(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """For a run whose model learned next to nothing, that said with its figures and likely cause; else None."""
    if not learned_next_to_nothing(metrics):
        return None
    return (f"the model learned next to nothing: test accuracy {metrics['test_accuracy']:.4f} (95% interval up to "
            f"{metrics['test_accuracy_ci95'][1]:.4f}; guessing scores {1 / len(CLASS_NAMES):.2f}). "
            f"{likely_cause(run_dir)}")


def evaluate_command(run: Path, runs_dir: Path = Path(defaults.RUNS_DIR), data_dir: Path | None = None,
                     backend: str | None = None) -> tuple[Path, dict[str, Any]]:
    """`fmnist evaluate`: score ``run`` (a folder, or a name in ``runs_dir``) again on ``backend``; return its folder
    and metrics. A changed model or missing test data is refused before the backend's seconds."""
    from fmnist.backend import activate

    with run_lookup.idle_run(run, runs_dir, "evaluate it") as run_dir:
        model_files.verified_model_path(run_dir)
        dataset = load_dataset(data_dir, test_only=True)
        activate(backend)
        earlier = summarized_scores(run_dir)
        metrics = evaluate_run(run_dir, dataset=dataset)
    warn_of_group_summary(run_dir, earlier)
    return run_dir, metrics


def summarized_scores(run_dir: Path) -> dict[str, Any] | None:
    """What a ``--seeds`` group's summary.json takes of the run's metrics.json: the scores it lists for the run, and
    the per-class F1 it averages; None where the metrics cannot be read."""
    try:
        metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    except FmnistError:
        return None
    per_class = metrics.get("per_class")
    f1 = {name: scores.get("f1-score") for name, scores in per_class.items() if isinstance(scores, dict)} \
        if isinstance(per_class, dict) else None
    return {**{key: metrics.get(key) for key in SUMMARY_RUN_SCORES}, "per_class_f1": f1}


def warn_of_group_summary(run_dir: Path, earlier: dict[str, Any] | None) -> None:
    """A run of a ``--seeds`` group scored again leaves the group's summary.json with its old figures: where they are
    not the run's figures now, say how to compute it again."""
    # The run's figures: its per-class F1, which the summary averages, compared with ``earlier``, from
    # :func:`summarized_scores`. Not computed again here: evaluate writes only the run's own files.
    group = runs.in_seed_group(run_dir)
    if group is None or not (group / artifacts.SEED_SUMMARY).is_file():
        return
    try:
        listed = summary_entries(artifacts.read_json(group / artifacts.SEED_SUMMARY))
    except FmnistError:  # damaged: computed again all the same
        listed = []
    entry = next((item for item in listed if item.get("run_dir") == run_dir.name), None)
    now = summarized_scores(run_dir)
    held = (entry is not None and now is not None and earlier is not None
            and now["per_class_f1"] == earlier["per_class_f1"]
            and all(entry.get(key) == now[key] for key in SUMMARY_RUN_SCORES))
    if not held:
        log.warning("%s still holds this run's earlier scores: 'fmnist train --resume %s' computes it again from "
                    "its runs' scores, training nothing", group / artifacts.SEED_SUMMARY, group)


def teacher_learned_nothing(teacher: str | Path) -> str | None:
    """Where a teacher run's own scores say it learned next to nothing, that said with its test accuracy; else None
    (a teacher not scored, or whose scores cannot be read, is taken as it is)."""
    try:
        teacher_dir = run_lookup.teacher_run_dir(teacher)
        metrics = artifacts.read_json(teacher_dir / artifacts.METRICS)
    except (FmnistError, OSError):
        return None
    if not learned_next_to_nothing(metrics):
        return None
    return f"the teacher {teacher_dir} learned next to nothing itself (test accuracy {metrics['test_accuracy']:.4f})"


def likely_cause(run_dir: Path) -> str:
    """Why a run scores near chance, from its history and settings, for the warning above."""
    from fmnist.settings import RECIPES, TrainSettings

    spec_rate = TrainSettings().learning_rate
    try:
        settings = artifacts.read_json(run_dir / artifacts.CONFIG).get("settings")
        rate = float(settings["learning_rate"])
    except (FmnistError, AttributeError, KeyError, TypeError, ValueError):  # a config damaged since: the spec's alone
        settings, rate = {}, None
    if rate is not None and not np.isfinite(rate):  # edited by hand: no rate to judge
        rate = None
    teacher = settings.get("teacher") if isinstance(settings, dict) else None
    untaught = teacher_learned_nothing(teacher) if isinstance(teacher, str) and teacher else None
    if untaught:  # its answers are most of what the student learns from
        return f"The usual cause: {untaught}, and the student learns from its answers; distil from one that scored well"
    try:
        history = artifacts.read_history(run_dir)
    except (FmnistError, OSError):  # no history to tell
        history = {}
    fitted = max(history.get("accuracy") or [None])
    limited = isinstance(settings, dict) and settings.get("limit")
    more = "train for more epochs" + (" on more images (a larger --limit)" if limited else "")
    if fitted is not None and fitted >= 0.5:  # it learned its own images, yet answers others as if it had not
        batch = settings.get("batch_size") if isinstance(settings, dict) else None
        smaller = "" if batch == 2 else ", or with a smaller --batch-size"  # 2: the least that BatchNorm takes
        return (f"It reached {fitted:.2f} on its training images: too few training steps, most often, leave the "
                f"running statistics of BatchNorm, which the model predicts with, far from the data's; {more}"
                f"{smaller}")
    working = {name: recipe.get("learning_rate", spec_rate) for name, recipe in RECIPES.items()}
    recipe = next((name for name, known in working.items() if rate == known), None)
    steps = _training_steps(run_dir, settings, len(history.get("loss", ())))
    reached = "" if fitted is None else f"It reached only {fitted:.2f} on its training images, "
    too_few = f"too few training steps{'' if steps is None else f' ({steps} in all)'} are the usual cause; {more}"
    if recipe:  # a rate known to work: too little to learn from, or too little time
        return f"{reached}at the {recipe} recipe's learning rate ({rate:g}), a working one: {too_few}"
    near = rate is not None and spec_rate / 10 <= rate <= spec_rate * 10  # as tune searches
    if near and steps is not None and steps < FEW_STEPS:
        return f"{reached}at a learning rate of {rate:g}, within ten times the spec's {spec_rate:g}: {too_few}"
    if near:
        took = "" if steps is None else f" and it trained for {steps} steps"
        return (f"Its learning rate ({rate:g}) lies within ten times the spec's ({spec_rate:g}){took}: its learning "
                "curves tell what held it back")  # said in its report too, and on the command line
    if rate is None:  # its config.json cannot tell
        return (f"A learning rate far from a working one is the usual cause (the spec's {spec_rate:g}): its learning "
                "curves tell")
    from fmnist.recipes import recipe_changes

    closest = recipe_changes(settings)[0]  # its recipe's rate, the one to go back towards
    whose, target = "the spec's" if closest == "spec" else f"the {closest} recipe's", working[closest]
    way = "too large, its steps overshoot" if rate > target else "too small, its steps barely move the weights"
    return (f"A learning rate far from a working one is the usual cause (this run's {rate:g}; {whose} {target:g}): "
            f"{way}; train again with one nearer it, --learning-rate {target:g}")


# Training steps under which a run at a workable rate has not had time to learn (the spec's recipe: 750 an epoch).
FEW_STEPS = 1000


def _training_steps(run_dir: Path, settings: Any, epochs: int) -> int | None:
    """The optimizer steps the run took: its epochs times the batches in its training split (a distilled student's
    views of its images too); None if unknown."""
    if not epochs:  # no history to count them by
        return None
    try:
        trained_on = images_per_epoch(len(artifacts.read_split(run_dir, "train")), settings)
        return epochs * -(-trained_on // int(settings["batch_size"]))
    # No split, or a config damaged by hand (a batch size of 0, or none).
    except (OSError, FmnistError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
