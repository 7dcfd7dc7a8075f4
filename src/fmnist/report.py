"""`fmnist report`: rebuild a run's pictures and its self-contained report.html from the run's own files."""

from __future__ import annotations

import html
import logging
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fmnist import artifacts, defaults, plots, run_list, run_locks, run_lookup, runs
from fmnist.recipes import closest_recipe, recipe_changes, unused_settings
from fmnist.errors import DamagedFile, FmnistError, first_line
from fmnist.explain import FAINT_BELOW, PATCH
from fmnist.facts import CLASS_NAMES, IMAGE_SIDE
from fmnist.html_page import image_html, page, table_html
from fmnist.metrics import CALIBRATION_BINS, classification_report_text, most_confused, recall_shares
from fmnist.settings import setting_text

if TYPE_CHECKING:
    from fmnist.train import TrainResult

log = logging.getLogger(__name__)
HISTORY_ADVICE = "restore it from a copy, or delete it to draw the report without learning curves"
# The model carries its own architecture: predict and serve do without the run's settings.
CONFIG_ADVICE = "restore it from a copy ('fmnist predict' and 'fmnist serve' take the run without it)"


EVIDENCE_NOTE = (
    f"<p>Occlusion maps: each {PATCH}x{PATCH} patch of the image is blanked in turn; red where that lowers the "
    "probability of the class named on the left (the pixels speak for it), blue where it raises it; above each map, "
    "its peak: the largest mean change of that probability at a pixel, over the patches that cover it (a map whose "
    f"peak is under {FAINT_BELOW:.0%} is faded in proportion: no one region holds the answer). First each class's "
    "most confidently right test image, then the most confident mistakes, for the class predicted and for the true "
    "one.</p>"
)


def _load_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / artifacts.PREDICTIONS
    if not path.is_file():
        raise FmnistError(f"{path} is missing: run 'fmnist evaluate {run_dir}' first")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except OSError as exc:  # the system's refusal (permissions, a disk error), not the file's content
        raise FmnistError(f"cannot read {path}: {exc.strerror or first_line(exc)}; make it readable for this user, or "
                          f"'fmnist evaluate {run_dir}' writes it again") from None
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error):  # cut, not an archive, pickled, garbled
        arrays = {}
    if not set(artifacts.PREDICTION_ARRAYS) <= set(arrays) or not _explanations_fit(arrays):
        raise FmnistError(f"{path} is damaged: run 'fmnist evaluate {run_dir}' to write it again")
    return arrays


def _explanations_fit(arrays: dict[str, np.ndarray]) -> bool:
    """The occlusion maps are all there and fit the rest, or none is (a run evaluated before fmnist drew them)."""
    present = [name for name in artifacts.EXPLANATION_ARRAYS if name in arrays]
    if not present:
        return True
    if len(present) < len(artifacts.EXPLANATION_ARRAYS):
        return False
    indices, images, maps, mistake_maps = (arrays[name] for name in artifacts.EXPLANATION_ARRAYS)
    side = (IMAGE_SIDE, IMAGE_SIDE)
    return bool(
        indices.ndim == 1 and np.issubdtype(indices.dtype, np.integer)
        and ((indices >= 0) & (indices < len(arrays["y_true"]))).all()
        and images.shape == (len(indices), *side) and maps.shape == (len(indices), *side)
        and mistake_maps.ndim == 4 and mistake_maps.shape[1:] == (2, *side)
        and len(mistake_maps) <= len(arrays["mistake_indices"])
        and all(np.issubdtype(m.dtype, np.floating) and np.isfinite(m).all() for m in (maps, mistake_maps))
    )


def _exports(run_dir: Path) -> list[tuple[str, str]]:
    """The Exports section, when the run has any: each file with its SHA-256 and parity check."""
    from fmnist.export import list_exports

    rows = [
        [e["format"], e["file"], e["sha256"], e["backend"],
         f"{e['parity']['max_abs_diff']:.2e}", f"{e['parity']['top_class_agreement']:.2%}", e["created"]]
        for e in list_exports(run_dir)
    ]
    header = ["format", "file", "SHA-256", "backend", "max |Δp|", "top class agrees", "created"]
    return [("Exports", table_html(header, rows))] if rows else []


def _html(run_dir: Path, config: dict, metrics: dict, history: dict, status: dict,
          predictions: dict[str, np.ndarray]) -> str:
    from fmnist.evaluate import chance_verdict

    rows = [(name, metrics["per_class"][name]) for name in CLASS_NAMES] + [
        ("macro avg", metrics["macro_avg"]), ("weighted avg", metrics["weighted_avg"])
    ]  # in label order: metrics.json stores its keys sorted
    per_class = [
        [label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1-score']:.4f}", int(m["support"])]
        for label, m in rows
    ]
    recorded = config.get("settings", {})
    shown = {k: v for k, v in recorded.items() if k not in unused_settings(recorded)}
    recipe = [["recipe (closest)", closest_recipe(recorded)]] if recorded else []
    changed = set(recipe_changes(recorded)[1]) if recorded else set()  # some may have no row: an unused setting
    settings = recipe + [[k, _teacher_text(v) if k == "teacher" and v else setting_text(v)]
                         for k, v in shown.items()] + [
        ["backend", run_list.cell(config.get("backend"))],
        ["data", run_list.cell(config.get("data", {}).get("source"))],
        ["versions", ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items())],
    ]
    marked = {i for i, row in enumerate(settings) if row[0] in changed}
    state = runs.state_now(run_dir, status.get("state", "-"))  # as `fmnist runs` shows it
    if status.get("pruned"):
        state = f"{state}, pruned {status['pruned']}"
    verdict = chance_verdict(run_dir, metrics)
    headline = [
        ["test accuracy", f"{metrics['test_accuracy']:.4f}"],
        ["95% bootstrap interval", accuracy_interval_text(metrics)],
        *([["warning", verdict]] if verdict else []),
        # The trained network's loss (what Keras would report) and the calibrated model's, as saved.
        # Against the plain labels, whatever the training loss was against (smoothed labels, a teacher's answers).
        ["test loss (against the plain labels), before / after temperature scaling",
         f"{run_list.cell(metrics.get('test_loss_before_scaling'), '{:.4f}')} / {metrics['test_loss']:.4f}"],
        [f"ECE ({CALIBRATION_BINS} bins), before / after temperature scaling",
         _calibration(metrics, "{before} / {after} (T = {temperature})")],
        ["macro F1", f"{metrics['macro_f1']:.4f}"], ["weakest class (F1)",
         f"{metrics['weakest_class']} ({metrics['per_class'][metrics['weakest_class']]['f1-score']:.4f})"],
        ["epochs run / kept",
         f"{len(history['loss'])} / {_kept_text(run_dir, history, status, config)}" if history.get("loss")
         else f"- ({artifacts.HISTORY} is missing or empty)"],
        ["images (--limit)", images_text(run_dir, config.get("settings", {}))],  # a subset's scores are not the spec's
        ["training seconds", run_list.cell(artifacts.json_number(status.get("train_seconds")), "{:.1f}")],
        ["status", state],
        *_group_row(run_dir),
        ["scored", f"{metrics.get('evaluated', '-')} on {metrics.get('evaluated_backend', '-')}"],
        ["model SHA-256", metrics.get("model_sha256", "-")],
    ]
    sections = [
        ("Headline", table_html(["measure", "value"], headline)),
        ("Per class", table_html(["class", "precision", "recall", "F1", "support"], per_class)),
        ("Confusion matrix", CONFUSION_NOTE + image_html(run_dir / artifacts.CONFUSION_MATRIX_PNG,
                                                         _confusion_alt(metrics["confusion_matrix"]))),
        ("Learning curves", _loss_note(recorded) + image_html(run_dir / artifacts.CURVES_PNG,
                                                               "loss and accuracy curves")),
        ("Calibration", _calibration_note(metrics) + image_html(run_dir / artifacts.RELIABILITY_PNG,
                                                                 "reliability diagram")),
        ("Most confident mistakes", image_html(run_dir / artifacts.MISCLASSIFIED_PNG, "most confident mistakes")),
        ("What the model looks at", _evidence_html(run_dir, predictions)),
        # The settings the run changed in its recipe marked, as "spec with 4 settings changed" counts them unnamed.
        ("Settings (those changed from its recipe highlighted)" if marked else "Settings",
         table_html(["setting", "value"], settings, highlight=marked)),
    ] + _exports(run_dir)
    return page(f"fmnist run {run_dir.name}", sections)


CONFUSION_NOTE = ("<p>A row for each true class, a column for each class predicted: the counts, then each row's "
                  "shares, coloured by their square root so that a few confusions show beside the full diagonal (an "
                  "empty cell is blank; a share under 0.005 reads &lt;.01).</p>")


def _calibration_note(metrics: dict[str, Any]) -> str:
    """What temperature scaling and the ECE are, with this run's temperature where it was fitted."""
    temperature = artifacts.json_number(metrics.get("temperature"))
    fitted = "" if temperature is None else f", here T = {temperature:.3f}"
    return ("<p>Temperature scaling divides the network's logits by one number T, fitted on the validation split so "
            f"that its confidence matches how often it is right{fitted}; the saved model predicts with it. ECE, the "
            f"expected calibration error: over {CALIBRATION_BINS} bins of confidence, the gap between a bin's "
            "confidence and its accuracy, weighted by its share of the test images.</p>")


def _teacher_text(teacher: str) -> str:
    """A distilled run's teacher, with its own test accuracy where its scores read: the first figure a student is
    judged against."""
    try:
        accuracy = float(artifacts.read_json(run_lookup.teacher_run_dir(teacher) / artifacts.METRICS)["test_accuracy"])
    except (FmnistError, OSError, KeyError, TypeError, ValueError):  # moved, not scored, or damaged: the path alone
        return setting_text(teacher)
    return f"{setting_text(teacher)} (its test accuracy {accuracy:.4f})"


def loss_target(settings: dict[str, Any]) -> str:
    """What a run's loss measures its answers against: a loss against smoothed labels or a teacher's answers has
    another floor than the plain one."""
    if not isinstance(settings, dict):
        return "the plain labels"
    return ("smoothed labels" if settings.get("label_smoothing") else "a teacher's answers"
            if settings.get("teacher") else "the plain labels")


def _loss_note(settings: dict[str, Any]) -> str:
    """For a run whose loss is not against the plain labels, that said over its curves; else nothing."""
    target = loss_target(settings)
    if target == "the plain labels":
        return ""
    return (f"<p>Its loss and val_loss are measured against {html.escape(target)}, not the plain labels: their "
            "floor is another, so they do not compare with a plain run's; its accuracy is against the labels.</p>")


def _group_row(run_dir: Path) -> list[list[str]]:
    """For a run of a ``--seeds`` group, a row naming the group and how its seeds are compared; none for another."""
    group = runs.in_seed_group(Path(run_dir).resolve())
    if group is None:
        return []
    return [["--seeds group", f"{group.name}: 'fmnist runs compare {runs.shell_word(str(runs.absolute(group)))}' sets "
                              "its seeds side by side, with their mean and interval"]]


def _kept_text(run_dir: Path, history: dict[str, list[float]], status: dict[str, Any], config: dict[str, Any]) -> str:
    """The kept epoch and why it is kept; where history.csv holds other than the epochs status.json records (cut or
    edited by hand since), saying so: the curves and the kept epoch are the file's. Logged too."""
    kept = artifacts.kept_epoch(history, config)
    said = [] if kept is None else [artifacts.kept_because(artifacts.scheduled(config))]
    recorded, drawn = artifacts.json_number(status.get("epochs")), len(history["loss"])
    if status.get("state") == runs.FINISHED and recorded is not None and recorded != drawn:
        note = (f"{artifacts.HISTORY} holds {drawn} of the {recorded:g} epochs {artifacts.STATUS} records: cut or "
                "edited since? The curves and kept epoch are the file's; restore it from a copy")
        log.warning("%s: %s", run_dir, note)
        said.append(note)
    return ("-" if kept is None else str(kept)) + (f" ({'; '.join(said)})" if said else "")


def _evidence_html(run_dir: Path, predictions: dict[str, np.ndarray]) -> str:
    pictures = [(run_dir / artifacts.EVIDENCE_CLASSES_PNG, "occlusion maps of each class's clearest test image"),
                (run_dir / artifacts.EVIDENCE_MISTAKES_PNG, "occlusion maps of the most confident mistakes")]
    if not any(path.is_file() for path, _ in pictures):
        return f"<p>(not computed for this run: 'fmnist evaluate {html.escape(str(run_dir))}' adds them)</p>"
    unshown = ""
    if "example_indices" in predictions:  # a class none of whose test images the model got right has no clearest one
        y_true = np.asarray(predictions["y_true"])
        shown, present = set(y_true[predictions["example_indices"]].tolist()), set(y_true.tolist())
        missing = [name for c, name in enumerate(CLASS_NAMES) if c in present and c not in shown]
        if missing:
            they = "it has" if len(missing) == 1 else "they have"
            unshown = f"<p>No test image of {', '.join(missing)} was classified right, so {they} no map below.</p>"
    return EVIDENCE_NOTE + unshown + "".join(image_html(path, alt) for path, alt in pictures)


def report_command(run: Path, runs_dir: Path = Path(defaults.RUNS_DIR)) -> Path:
    """`fmnist report`: rebuild the report of ``run`` (a folder, or a name in ``runs_dir``), kept from training
    meanwhile; return the page's path."""
    with run_lookup.idle_run(run, runs_dir, "rebuild its report") as run_dir:
        return build_report(run_dir)


def build_report(run_dir: Path) -> Path:
    """Draw the pictures and write report.html from the run's files alone (no model, no dataset)."""
    try:
        return write_report(run_dir)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:  # edited by hand
        raise FmnistError(f"{run_dir / artifacts.METRICS} or {artifacts.PREDICTIONS} beside it is damaged "
                          f"({type(exc).__name__}: {exc}): run 'fmnist evaluate {run_dir}' to write both again"
                          ) from exc


def write_report(run_dir: Path, write_scores: Callable[[], None] = lambda: None) -> Path:
    """build_report after evaluate has scored the run, ``write_scores`` writing its metrics and predictions under the
    drawing's lock."""
    # The other files are checked for what the report reads, so an error left is a bug, and is not called damage.
    run_dir = runs.require_run_dir(run_dir)
    config = read_config(run_dir)
    # One drawing at a time: two drawn at once (an export's and another's) could leave the page of the one that read
    # the run's files first; and two evaluations at once, one's metrics beside the other's predictions.
    with run_locks.queued_lock(run_dir / artifacts.REPORT_LOCK,
                               f"waiting for another process drawing {run_dir}'s report"):
        history = checked_history(run_dir, config)  # refused before new scores replace those the report shows
        write_scores()
        run_list.require_scored(run_dir, "its report")
        return _write_report(run_dir, config, history)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json; damaged, refused with what to do (fmnist writes it once, as the training begins)."""
    try:
        return artifacts.read_json(run_dir / artifacts.CONFIG)
    except DamagedFile as exc:
        raise DamagedFile(f"{exc}: {CONFIG_ADVICE}") from None


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json; damaged, refused with the command that writes it again."""
    try:
        return artifacts.read_json(run_dir / artifacts.METRICS)
    except DamagedFile as exc:
        raise DamagedFile(f"{exc}: run 'fmnist evaluate {run_dir}' to write it again") from None


def checked_history(run_dir: Path, config: dict[str, Any], history_advice: str = HISTORY_ADVICE
                    ) -> dict[str, list[float]]:
    """The run's history as the report draws it (none where the file is gone), its config and history checked."""
    try:
        history = artifacts.read_history(run_dir) if (run_dir / artifacts.HISTORY).is_file() else {}
    except DamagedFile as exc:
        raise DamagedFile(f"{exc}: {history_advice}") from None
    check_config_and_history(run_dir, config, history, history_advice)
    return history


def _write_report(run_dir: Path, config: dict[str, Any], history: dict[str, list[float]]) -> Path:
    metrics = read_metrics(run_dir)
    try:  # the report only shows its training time and the like: not worth refusing the rest for
        status = artifacts.read_json(run_dir / artifacts.STATUS) if (run_dir / artifacts.STATUS).is_file() else {}
    except FmnistError as exc:
        log.warning("%s; the report leaves out what it says", exc)
        status = {}
    predictions = _load_predictions(run_dir)
    _draw(run_dir, metrics, predictions, history, config)
    path = run_dir / artifacts.REPORT_HTML
    artifacts.write_text(path, _html(run_dir, config, metrics, history, status, predictions))
    return path


def check_config_and_history(run_dir: Path, config: dict[str, Any], history: dict[str, list[float]],
                             history_advice: str = HISTORY_ADVICE) -> None:
    """Refuse, naming the file, a config.json or history.csv edited into a shape fmnist never writes."""
    odd = [key for key in ("settings", "data", "versions") if not isinstance(config.get(key, {}), dict)]
    if odd:
        raise FmnistError(f"{run_dir / artifacts.CONFIG} is damaged ({', '.join(odd)} not a JSON object): "
                          f"{CONFIG_ADVICE}")
    missing = artifacts.missing_history_columns(history)
    if missing:
        raise FmnistError(f"{run_dir / artifacts.HISTORY} is damaged (no {', '.join(missing)} column): "
                          f"{history_advice}")


def training_summary(result: TrainResult) -> tuple[str, dict[str, Any]]:
    """A finished training's closing lines, and the same as a record for --json."""
    outcome = training_outcome(result.run_dir)
    kept = "" if outcome["epoch_kept"] is None else f" (epoch {outcome['epoch_kept']} kept)"  # the model's weights
    text = (headline(result.run_dir, result.metrics)
            + f"\nepochs {result.epochs_run}{kept}, training {result.train_seconds:.1f}s on {outcome['backend']}"
            + ("" if outcome["recipe"] is None else f"; recipe {outcome['recipe']}"))  # its changes a list
    return text, {
        "run_dir": result.run_dir, "epochs": result.epochs_run, **outcome,
        "train_seconds": round(result.train_seconds, 2),
        **{k: result.metrics[k] for k in ("test_accuracy", "test_loss", "macro_f1", "weakest_class")},
        # As evaluate --json gives them; a run scored by an older fmnist may lack the interval.
        **{k: result.metrics[k] for k in ("test_accuracy_ci95", "ece_before_scaling", "ece", "temperature")
           if k in result.metrics},
        "report": result.run_dir / artifacts.REPORT_HTML,
    }


def training_outcome(run_dir: Path) -> dict[str, Any]:
    """What a finished training's closing lines add to its scores: its backend, the epoch its model is from and its
    recipe, as `fmnist runs` names it (None where a file that tells was lost since: the training's result stands)."""
    try:
        config = artifacts.read_json(Path(run_dir) / artifacts.CONFIG)
    except (FmnistError, OSError):
        config = {}
    try:
        history = artifacts.read_history(run_dir)
    except (FmnistError, OSError):
        history = {}
    settings = config.get("settings")
    return {"backend": config.get("backend"), "epoch_kept": artifacts.kept_epoch(history, config),
            "recipe": closest_recipe(settings) if isinstance(settings, dict) and settings else None}


def _draw(run_dir: Path, metrics: dict[str, Any], predictions: dict[str, np.ndarray], history: dict,
          config: dict[str, Any]) -> None:
    y_true, probabilities = predictions["y_true"], predictions["probabilities"]
    artifacts.write_text(run_dir / artifacts.CLASSIFICATION_REPORT, classification_report_text(y_true, probabilities))
    plots.confusion_matrix_png(metrics["confusion_matrix"], recall_shares(metrics["confusion_matrix"]),
                               run_dir / artifacts.CONFUSION_MATRIX_PNG)
    plots.curves_png(history, artifacts.kept_epoch(history, config), run_dir / artifacts.CURVES_PNG,
                     artifacts.scheduled(config))
    drawn = set()
    reliability = metrics.get("reliability")
    if reliability:
        drawn.add(artifacts.RELIABILITY_PNG)
        plots.reliability_png(reliability["before"], reliability["after"], run_dir / artifacts.RELIABILITY_PNG)
    idx = predictions["mistake_indices"]
    y_pred = probabilities[idx].argmax(axis=1)
    plots.mistakes_png(
        predictions["mistake_images"], y_true[idx], y_pred, probabilities[idx, y_pred],
        run_dir / artifacts.MISCLASSIFIED_PNG, total=int(np.sum(probabilities.argmax(axis=1) != y_true)),
    )
    examples = predictions.get("example_indices", ())  # none in a run evaluated before fmnist drew occlusion maps
    if len(examples):
        drawn.add(artifacts.EVIDENCE_CLASSES_PNG)
        plots.evidence_png(predictions["example_images"] / 255, [CLASS_NAMES[c] for c in y_true[examples]],
                           {"for its class": predictions["example_maps"]}, run_dir / artifacts.EVIDENCE_CLASSES_PNG)
    shown = len(predictions.get("mistake_maps", ()))
    if shown:
        drawn.add(artifacts.EVIDENCE_MISTAKES_PNG)
        plots.evidence_png(
            predictions["mistake_images"][:shown] / 255,
            plots.mistake_titles(y_true[idx[:shown]], y_pred[:shown], probabilities[idx[:shown], y_pred[:shown]]),
            {"for pred": predictions["mistake_maps"][:, 0], "for true": predictions["mistake_maps"][:, 1]},
            run_dir / artifacts.EVIDENCE_MISTAKES_PNG,
        )
    for name in {artifacts.RELIABILITY_PNG, artifacts.EVIDENCE_CLASSES_PNG, artifacts.EVIDENCE_MISTAKES_PNG} - drawn:
        (run_dir / name).unlink(missing_ok=True)  # one left from an earlier evaluation would show other numbers


def headline(run_dir: Path, metrics: dict[str, Any]) -> str:
    weakest = metrics["weakest_class"]
    ci = accuracy_interval(metrics)
    return (
        f"test accuracy {metrics['test_accuracy']:.4f} (95% CI {'-' if ci is None else f'{ci[0]:.4f}-{ci[1]:.4f}'})  "
        f"macro F1 {metrics['macro_f1']:.4f}  "
        f"weakest class {weakest} (F1 {metrics['per_class'][weakest]['f1-score']:.4f})\n"
        f"{_calibration(metrics, 'ECE {before} -> {after} after temperature scaling (T = {temperature})')}\n"
        f"report: {runs.absolute(Path(run_dir) / artifacts.REPORT_HTML)}"  # as train and --json say it
    )


def images_text(run_dir: Path, settings: dict[str, Any]) -> str:
    """A run's --limit ("all" without one), and how its split divided the images, as its split.npz holds them."""
    limit = settings.get("limit") or "all"
    try:
        return (f"{limit}: {len(artifacts.read_split(run_dir, 'train'))} training, "
                f"{len(artifacts.read_split(run_dir, 'validation'))} validation")
    except (OSError, DamagedFile):  # a run of an older fmnist, or its split.npz damaged: the flag alone
        return str(limit)


def _confusion_alt(matrix: list[list[int]]) -> str:
    """The confusion matrix's text for a screen reader: what the picture shows first, its largest mistake."""
    top = most_confused(matrix)
    return "confusion matrix" + ("" if top is None else f"; the most frequent mistake: {CLASS_NAMES[top[0]]} taken "
                                                         f"for {CLASS_NAMES[top[1]]}, {top[2]:,} times")


def accuracy_interval_text(metrics: dict[str, Any]) -> str:
    """The test accuracy's 95% interval as tables give it, "0.8915 to 0.9034"; "-" where the metrics have none."""
    ci = accuracy_interval(metrics)
    return "-" if ci is None else f"{ci[0]:.4f} to {ci[1]:.4f}"


def accuracy_interval(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """The test accuracy's 95% interval; none in the metrics of a run scored before fmnist computed it."""
    ci = metrics.get("test_accuracy_ci95")
    return (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 else None


def _calibration(metrics: dict[str, Any], text: str) -> str:
    """``text`` with the ECE before and after temperature scaling, and the temperature; "-" for each a run scored
    before fmnist calibrated has not (its temperature is not known: not 1)."""
    return text.format(before=run_list.cell(metrics.get("ece_before_scaling"), "{:.4f}"),
                       after=run_list.cell(metrics.get("ece"), "{:.4f}"),
                       temperature=run_list.cell(metrics.get("temperature"), "{:.3f}"))

