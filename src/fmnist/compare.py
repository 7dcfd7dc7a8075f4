"""`fmnist runs compare`: one self-contained HTML page that sets two or more runs side by side."""

from __future__ import annotations

import html
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts, plots, run_list, run_lookup, run_settings, runs
from fmnist.errors import DamagedFile, FmnistError, UsageError
from fmnist.facts import CLASS_NAMES
from fmnist.html_page import image_html, page, table_html
from fmnist.recipes import recipe_changes, unused_settings
from fmnist.report import (accuracy_interval_text, checked_history, images_text, loss_target, read_config,
                           read_metrics)
from fmnist.seeds import interval_text, summary_entries
from fmnist.settings import TrainSettings, setting_text

log = logging.getLogger(__name__)
HISTORY_ADVICE = "restore it from a copy (the comparison draws each run's learning curves)"
TOP_CLASSES = 5


class NoEpochYet(FmnistError):
    """A run given to compare that has not finished an epoch: nothing of it to set beside the others yet."""


def flat_settings(config: dict[str, Any]) -> dict[str, str]:
    """Everything that shapes a run, one line each: its settings (those it read), backend, data and package
    versions."""
    settings = config.get("settings", {})
    unused = unused_settings(settings)
    flat = {key: setting_text(value) for key, value in settings.items() if key not in unused}
    flat["backend"] = setting_text(config.get("backend"))
    flat["data"] = setting_text(config.get("data", {}).get("source"))
    flat["python"] = setting_text(config.get("python"))
    flat.update({f"version {name}": setting_text(v) for name, v in config.get("versions", {}).items()})
    return flat


def settings_rows(configs: list[dict[str, Any]]) -> tuple[list[list[str]], set[int]]:
    """One row per setting, one column per run, and the indices of the rows whose values differ."""
    flats = [flat_settings(c) for c in configs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    rows = [[key, *(flat.get(key, "-") for flat in flats)] for key in keys]
    return rows, {i for i, row in enumerate(rows) if len(set(row[1:])) > 1}


def mistake_changes(matrices: list[np.ndarray], top: int = TOP_CLASSES) -> list[dict[str, Any]]:
    """The classes whose count of mistakes varies most between runs, each with the confusion that moved most."""
    stacked = np.stack([np.asarray(m) for m in matrices])  # runs x true x predicted
    off_diagonal = stacked * (1 - np.eye(len(CLASS_NAMES), dtype=stacked.dtype))
    errors = off_diagonal.sum(axis=2)  # runs x classes
    spread = errors.max(axis=0) - errors.min(axis=0)
    changes = []
    changed = [c for c in np.argsort(-spread, kind="stable") if spread[c] > 0]  # an unchanged class tells nothing
    for c in changed[:top]:
        cell_spread = off_diagonal[:, c].max(axis=0) - off_diagonal[:, c].min(axis=0)
        moved = int(np.argmax(cell_spread))
        changes.append({
            "class": CLASS_NAMES[c], "mistakes": errors[:, c].tolist(), "change": int(spread[c]),
            "most_moved": CLASS_NAMES[moved], "most_moved_counts": off_diagonal[:, c, moved].tolist(),
        })
    return changes


def runs_to_compare(names: list[str | Path], runs_dir: Path) -> list[Path]:
    """The run directories ``names`` give: each a run (a path, or a name in ``runs_dir``), or a ``--seeds`` group,
    which stands for the runs its summary.json averages."""
    found, of_group, alone = [], {}, set()
    for name in names:
        group = seed_group_named(name, runs_dir)
        if group is None:
            found.append(run_lookup.resolve_run(name, runs_dir, groups_too=True))
            alone.add(found[-1].resolve())
            continue
        members = _summarized_runs(group)
        of_group.update({run.resolve(): group for run in members})
        found += members
    for run in found:  # a group and one of its runs given alone: said so, rather than as a run given twice
        group = of_group.get(run.resolve())
        if group is not None and run.resolve() in alone:
            raise FmnistError(f"{run.name} is one of the runs of the --seeds group {group.name}, also given: give the "
                              "group or its runs, not both")
    return found


def seed_group_named(name: str | Path, runs_dir: Path) -> Path | None:
    """The ``--seeds`` group ``name`` gives (a path, a name in ``runs_dir``, or its --name there), if it gives one."""
    given = (Path(name), Path(runs_dir) / name)
    group = next((folder for folder in given if runs.is_seed_group(folder)), None)
    if group is None and not any(folder.exists() for folder in given):
        return run_lookup.named_one(name, runs_dir, groups_only=True)
    return group


def _summarized_runs(group: Path) -> list[Path]:
    """The runs of a ``--seeds`` group that its summary.json averages, one per seed."""
    summary_path = group / artifacts.SEED_SUMMARY
    if not summary_path.is_file():
        raise FmnistError(f"{group} is a --seeds group with no {artifacts.SEED_SUMMARY} yet: "
                          f"'{runs.resume_command(group)}' finishes it; or give its runs one by one")
    names = [entry.get("run_dir") for entry in summary_entries(artifacts.read_json(summary_path))]
    # A group has two seeds or more (seeds.check_count), each summarized.
    if len(names) < 2 or not all(isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
                                 for name in names):
        raise DamagedFile(f"{summary_path} is damaged (no list of two or more run folders): "
                          f"'{runs.resume_command(group)}' writes it again, training nothing")
    return [runs.require_run_dir(group / name) for name in names]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name (a ``--seeds`` group's run: its group's and its seed, as its runs share one name),
    numbered when two share one (a copy elsewhere), so no column overwrites another."""
    names = [_label(Path(r)) for r in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{i}: {name}" for i, name in enumerate(names, 1)]


def _label(run_dir: Path) -> str:
    group = runs.in_seed_group(run_dir.resolve())
    try:
        seed = run_settings.recorded_seed(artifacts.read_json(run_dir / artifacts.CONFIG))
    except FmnistError:  # said where the run is loaded
        seed = None
    return run_dir.name if group is None or seed is None else f"{group.name} seed {seed}"


def _load(run_dir: Path) -> dict[str, Any]:
    """The files a comparison needs. A run not scored (being trained, or stopped) has its settings and curves
    compared, with ``unscored`` saying why it has no scores; with no epoch finished either, it is refused."""
    summary = run_list.summarize(run_dir)
    try:
        run_list.require_scored(run_dir, "comparing its F1 and mistakes")
        unscored = None
    except FmnistError as exc:  # what to do about it, as any command that needs its scores says
        if not (run_dir / artifacts.HISTORY).is_file():
            raise
        unscored = exc
    if not (run_dir / artifacts.HISTORY).is_file():
        raise FmnistError(f"{run_dir / artifacts.HISTORY} is missing: {HISTORY_ADVICE}")
    config = read_config(run_dir)
    history = checked_history(run_dir, config, HISTORY_ADVICE)
    if unscored:
        if not history.get("loss"):
            raise NoEpochYet(f"{unscored}; and no epoch of it has finished, so it has no curves to compare either")
        return {"summary": {**summary, "epoch_kept": None, "accuracy_interval": None}, "history": history,
                "config": config, "f1": None, "confusion_matrix": None, "unscored": str(unscored)}
    metrics = read_metrics(run_dir)
    if not {"per_class", "confusion_matrix"} <= set(metrics):
        raise FmnistError(f"{run_dir / artifacts.METRICS} lacks per-class metrics; rerun 'fmnist evaluate {run_dir}'")
    try:  # what the page reads of them, in the shape evaluate writes
        f1 = [float(metrics["per_class"][name]["f1-score"]) for name in CLASS_NAMES]
        if not all(0 <= value <= 1 for value in f1):  # NaN too
            raise ValueError(f"an F1 of {next(v for v in f1 if not 0 <= v <= 1)}")
        matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
        if matrix.shape != (len(CLASS_NAMES),) * 2:
            raise ValueError(f"a confusion matrix of shape {matrix.shape}")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # edited by hand
        raise FmnistError(f"{run_dir / artifacts.METRICS} is damaged ({type(exc).__name__}: {exc}): run "
                          f"'fmnist evaluate {run_dir}' to write it again") from None
    # Its interval: whether two runs' accuracies differ by more than the test set's chance.
    return {"summary": {**summary, "epoch_kept": artifacts.kept_epoch(history, config),
                        "accuracy_interval": accuracy_interval_text(metrics)},
            "history": history, "config": config, "f1": f1, "confusion_matrix": matrix, "unscored": None}


def default_output(run_dirs: list[Path], runs_dir: Path) -> tuple[Path, str]:
    """Where the page goes without --output (and what a refusal names): the runs folder when the runs lie in it (as
    given, or where their links lead), else the one folder they share."""
    # So a comparison never starts a ./runs where the user merely stood.
    given = [runs.absolute(run) for run in run_dirs]
    if all(runs.absolute(runs_dir) in run.parents or runs_dir.resolve() in run.resolve().parents for run in given):
        return runs.absolute(runs_dir) / artifacts.COMPARISON_HTML, "--runs-dir, where the page goes without --output,"
    parents = {run.parent for run in given}
    if len(parents) > 1:
        raise FmnistError("the runs lie in different folders: name the page with --output (or give --runs-dir the "
                          "folder that holds them all)")
    return parents.pop() / artifacts.COMPARISON_HTML, "the runs' folder, where the page goes without --output,"


def compare_command(names: list[str | Path], output: Path | None, runs_dir: Path) -> dict[str, Any]:
    """`fmnist runs compare`: the page of the runs (or groups) ``names`` give, and of two groups the difference of
    their mean test accuracies (None otherwise), the command's result."""
    found = runs_to_compare(names, runs_dir)
    if len(found) < 2:  # one run given: the command line's shape
        raise UsageError("give two or more runs to compare, or a --seeds group")
    page, difference = _write(found, output, runs_dir)
    return {"comparison": page, "group_difference": difference}


def _write(run_dirs: list[Path], output: Path | None, runs_dir: Path) -> tuple[Path, dict[str, Any] | None]:
    """The page written, and of two groups their difference (:func:`group_difference`)."""
    resolved = [Path(r).resolve() for r in run_dirs]
    repeated = [str(run) for run, again in zip(run_dirs, resolved) if resolved.count(again) > 1]
    if repeated:
        raise FmnistError(f"{repeated[0]} is given more than once: give each run to compare once")
    if output is None:
        output, given = default_output(run_dirs, Path(runs_dir))
    else:
        given = "--output"
    output = runs.prepare_output(output, given, ".html")
    loaded, begun, not_begun = [], [], []
    for run_dir in run_dirs:
        try:
            loaded.append(_load(runs.require_run_dir(run_dir)))
            begun.append(run_dir)
        except NoEpochYet as exc:  # one just started, among runs compared by a glob, say: the others still compare
            not_begun.append(exc)
    if not_begun and len(begun) < 2:
        raise not_begun[0]
    for exc in not_begun:
        log.warning("%s: left out of the comparison", exc)
    run_dirs = begun
    for item in loaded:
        if item["unscored"]:
            log.warning("%s: the page compares its settings and learning curves, not its scores", item["unscored"])
    names = run_labels(run_dirs)
    replaced = given != "--output" and output.exists()
    tables = _tables(run_dirs, names, loaded, [str(e) for e in not_begun])
    artifacts.write_text(output, _page(names, loaded, tables))
    if replaced:  # the default name is one page per runs folder: a comparison kept needs --output
        log.warning("%s held an earlier comparison: replaced by this one (--output keeps each under a name of its "
                    "own)", output)
    return output, tables["group_difference"]


# The rows of the runs' table that bear on whether their figures compare: marked where the runs differ in them.
COMPARABLE_ROWS = ("recipe (closest)", "backend", "images (--limit)", "validation fraction")


def _tables(run_dirs: list[Path], names: list[str], loaded: list[dict[str, Any]], left_out: list[str] = ()
            ) -> dict[str, Any]:
    """The page's figures, computed: the runs' headline, settings, F1 and changed mistakes, and notes on what does
    not compare, and on the runs ``left_out`` (why each)."""
    summaries = [item["summary"] for item in loaded]
    headline = [["directory", *(str(Path(r).resolve()) for r in run_dirs)]]  # which is which, when names repeat
    headline += [[label, *(run_list.cell(s[key], fmt) for s in summaries)] for label, key, fmt in (
        ("created", "created", "{}"), ("recipe (closest)", "recipe", "{}"), ("status", "status", "{}"),
        ("backend", "backend", "{}"), ("epochs", "epochs", "{}"), ("epoch kept", "epoch_kept", "{}"),
        ("test accuracy", "test_accuracy", "{:.4f}"), ("95% bootstrap interval", "accuracy_interval", "{}"),
        ("macro F1", "macro_f1", "{:.4f}"),
        ("training seconds", "train_seconds", "{:.1f}"),
    )]
    groups = [runs.in_seed_group(Path(r).resolve()) for r in run_dirs]  # one group's runs, however each was given
    if any(groups):  # which runs are seeds of one recipe
        headline.insert(2, ["--seeds group", *(group.name if group else "-" for group in groups)])
    # A group stands for its runs where all it averages are compared (given by its name, say); a run of it given
    # without the others stands for itself.
    given = {Path(r).resolve() for r in run_dirs}
    whole = {group: _given_whole(group, given) for group in set(groups) - {None}}
    groups = [group if group is not None and whole[group] else None for group in groups]
    # What they trained and validated on: runs that differ in it measure their curves on other images.
    spec = TrainSettings()  # a setting an older run's config.json lacks is its default
    headline += [["images (--limit)", *(images_text(Path(r), s["settings"]) for r, s in zip(run_dirs, summaries))],
                 ["validation fraction", *(s["settings"].get("validation_fraction", spec.validation_fraction)
                                           for s in summaries)]]
    # Marked where they differ in what makes their figures comparable; their scores are meant to differ.
    # The images row by its --limit: the split's counts beside it are shown, and missing in an older run's. The
    # recipe's by the preset alone: the settings its runs changed in it are marked in the settings' table.
    compared = {"images (--limit)": [s["settings"].get("limit") or "all" for s in summaries],
                "recipe (closest)": [recipe_changes(s["settings"])[0] if s["settings"] else None for s in summaries]}
    headline_differ = {i for i, row in enumerate(headline)
                       if row[0] in COMPARABLE_ROWS and len(set(compared.get(row[0], row[1:]))) > 1}
    settings, differ = settings_rows([item["config"] for item in loaded])
    # The scores of the runs scored; one not yet scored is said so above them.
    f1 = {name: item["f1"] for name, item in zip(names, loaded) if item["f1"] is not None}
    f1_rows = [  # the range across them, where two or more are scored
        [c, *(f"{f1[n][i]:.4f}" for n in f1),
         *[f"{max(f1[n][i] for n in f1) - min(f1[n][i] for n in f1):.4f}"] * (len(f1) > 1)]
        for i, c in enumerate(CLASS_NAMES)
    ] if f1 else []
    scored = [item for item in loaded if item["f1"] is not None]
    changes = mistake_changes([item["confusion_matrix"] for item in scored]) if len(scored) > 1 else []
    change_rows = [
        [ch["class"], *ch["mistakes"], ch["change"],
         f"as {ch['most_moved']}: {' / '.join(map(str, ch['most_moved_counts']))}"]
        for ch in changes
    ]
    # A loss against smoothed labels or a teacher's answers has another floor than the plain one: not comparable.
    losses: dict[str, list[str]] = {}
    for name, item in zip(names, loaded):
        losses.setdefault(loss_target(item["config"].get("settings")), []).append(name)
    curves_note = "" if len(losses) == 1 else (
        "<p><b>Their losses are measured against different targets: "
        + "; ".join(f"{target} ({html.escape(', '.join(runs_of))})" for target, runs_of in sorted(losses.items()))
        + ". Compare those curves within each kind only; the accuracies compare across them.</b></p>")
    note = ""
    if len({int(np.sum(item["confusion_matrix"])) for item in scored}) > 1:
        note = "<p><b>These runs were scored on different numbers of test images: compare counts with care.</b></p>"
    unscored = "".join(f"<p><b>{html.escape(why)}: left out of this page.</b></p>" for why in left_out)
    unscored += "".join(f"<p><b>{html.escape(item['unscored'])}: its settings and learning curves are compared, not "
                        "its scores.</b></p>" for item in loaded if item["unscored"])
    if any(headline[i][0] in ("images (--limit)", "validation fraction") for i in headline_differ):
        curves_note += ("<p><b>Their validation curves are measured on validation sets of different sizes (another "
                        "--limit or validation fraction): compare them with care.</b></p>")
    return {"headline": headline, "headline_differ": headline_differ, "settings": settings, "differ": differ,
            "f1": f1, "f1_rows": f1_rows, "change_rows": change_rows, "curves_note": curves_note, "note": note,
            "unscored": unscored, "scored": len(scored),
            # A group drawn in its first run's colour, as the curves draw that run: one colour a thing on the page.
            "drawn_as": {group.name: name for group, name in reversed(list(zip(groups, names))) if group is not None},
            # Beside groups, a run given alone is set as itself: one recipe's seeds against another's single run.
            **_group_scores([group for group in dict.fromkeys(groups) if group is not None],
                            [(name, item) for name, item, group in zip(names, loaded, groups)
                             if group is None and item["f1"] is not None] if any(groups) else []),
            # A group's runs under its name once: "A vs B", not each seed of each
            "title": " vs ".join(dict.fromkeys(group.name if group else name for group, name in zip(groups, names)))}


def _given_whole(group: Path, given: set[Path]) -> bool:
    """Whether every run a ``--seeds`` group's summary.json averages is among the runs ``given`` (resolved)."""
    try:
        return {run.resolve() for run in _summarized_runs(group)} <= given
    except FmnistError:  # not finished, or its summary damaged: its runs given stand for themselves
        return False


def _group_scores(groups: list[Path], alone: list[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """Each ``--seeds`` group's mean and spread over all its seeds, as its summary.json gives them, then each run given
    ``alone`` as itself, with no spread: its row of the groups' table and its F1 of each class."""
    # The rows in "group_rows"; the F1, mean and sd, in "group_f1" and "group_f1_sd", of the groups whose summary reads.
    # ``alone``: each run's label and what :func:`_load` read.
    rows, f1, f1_sd, accuracies = [], {}, {}, {}
    for group in groups:
        try:
            summary = artifacts.read_json(group / artifacts.SEED_SUMMARY)
            accuracy = summary["test_accuracy"]
            per_class = [summary["per_class_f1"][name] for name in CLASS_NAMES]
            means = [float(scores["mean"]) for scores in per_class]
            sds = [float(scores["std"] or 0.0) for scores in per_class]
            values = [float(value) for value in accuracy["values"]]
            if not all(0 <= m <= 1 and 0 <= sd <= 1 for m, sd in zip(means, sds)) or not all(
                    0 <= value <= 1 for value in values):  # NaN too
                raise ValueError("a score outside 0-1")
            rows.append([group.name, str(summary["seeds"]), f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}",
                         interval_text(accuracy["ci95"], " to "), f"{np.mean(means):.4f}"])
            f1[group.name], f1_sd[group.name] = means, sds
            accuracies[group.name] = values
        except (FmnistError, KeyError, TypeError, ValueError, IndexError, AttributeError):  # edited by hand since
            rows.append([group.name, "-", f"({artifacts.SEED_SUMMARY} damaged: "
                                          f"'{runs.resume_command(group)}' writes it again)", "-", "-"])
    for name, item in alone:
        scores = item["summary"]
        rows.append([name, "1 (a run alone)", run_list.cell(scores["test_accuracy"], "{:.4f}"), "-",
                     run_list.cell(scores["macro_f1"], "{:.4f}")])
        f1[name] = item["f1"]
    return {"group_rows": rows, "group_f1": f1, "group_f1_sd": f1_sd, "alone": len(alone),
            "group_difference": group_difference(accuracies)}


def bar_colours(series: list[str], drawn_as: dict[str, str], colours: dict[str, Any]) -> dict[str, Any]:
    """The groups' chart's colours: a group its first run's (``drawn_as``), a run alone its own, as the curves draw
    them; the plain cycle where that makes two bars alike (the runs' cycle came round)."""
    chosen = {name: colours[drawn_as.get(name, name)] for name in series}
    return chosen if len(set(map(str, chosen.values()))) == len(chosen) else plots.run_colours(series)


def group_difference(accuracies: dict[str, list[float]]) -> dict[str, Any] | None:
    """For two groups, their mean test accuracies' difference (the second's minus the first's), Welch's 95% interval
    over their seeds and its p-value, and its ``text``; None for any other number of groups."""
    # The ``text`` says in words whether their seeds tell the two recipes apart.
    from scipy import stats

    if len(accuracies) != 2 or any(len(values) < 2 for values in accuracies.values()):
        return None
    (first, a), (second, b) = accuracies.items()
    said = {"first": first, "second": second, "test_accuracy_difference": float(np.mean(b) - np.mean(a))}
    difference = f"{second} minus {first}: test accuracy {said['test_accuracy_difference']:+.4f}"
    if np.ptp(a) == np.ptp(b) == 0:  # every seed of each scored alike: no spread to judge by
        return {**said, "ci95": None, "p_value": None, "verdict": "no spread over their seeds to judge it by",
                "text": f"{difference}, with no spread over their seeds to judge it by"}
    with warnings.catch_warnings():  # scipy's on seeds that scored nearly alike: the interval is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(b, a, equal_var=False)
    low, high = (float(bound) for bound in test.confidence_interval(0.95))
    verdict = ("their seeds do not tell the two apart" if low <= 0 <= high else
               f"{second if said['test_accuracy_difference'] > 0 else first} is better beyond what their seeds vary by")
    return {**said, "ci95": [low, high], "p_value": float(test.pvalue), "verdict": verdict,
            "text": f"{difference}, 95% interval {low:+.4f} to {high:+.4f} (Welch's t over their seeds, "
                    f"p = {test.pvalue:.3g}): {verdict}"}


def _page(names: list[str], loaded: list[dict[str, Any]], tables: dict[str, Any]) -> str:
    """The comparison page: ``tables`` (:func:`_tables`) with the curves and F1 bars drawn."""
    headline, settings, differ, f1 = tables["headline"], tables["settings"], tables["differ"], tables["f1"]
    f1_rows, change_rows, curves_note, note = (tables[k] for k in ("f1_rows", "change_rows", "curves_note", "note"))
    with tempfile.TemporaryDirectory() as tmp:
        curves, bars, group_bars = Path(tmp) / "curves.png", Path(tmp) / "f1.png", Path(tmp) / "group_f1.png"
        colours = plots.run_colours(names)  # a run one colour in every chart, scored or not
        plots.compare_curves_png({n: item["history"] for n, item in zip(names, loaded)}, curves, colours)
        if f1:
            plots.grouped_bars_png(list(CLASS_NAMES), f1, "F1 per class (test set)", bars, colours=colours)
        groups = ""
        alone = tables["alone"]
        if tables["group_rows"]:
            groups = table_html(["group" + " or run" * bool(alone), "seeds", "test accuracy, mean ± sd",
                                 "95% interval of the mean", "macro F1, mean"], tables["group_rows"])
        if tables["group_difference"]:
            groups += f"<p><b>{html.escape(tables['group_difference']['text'])}</b></p>"
        # Each group as one bar a class: a bar per seed of two groups of five is more than an eye can average.
        if tables["group_f1"]:
            plots.grouped_bars_png(list(CLASS_NAMES), tables["group_f1"],
                                   "F1 per class, mean over each group's seeds (whiskers ± 1 sd)"
                                   + "; a run given alone, its own" * bool(alone), group_bars,
                                   spread=tables["group_f1_sd"],
                                   colours=bar_colours(list(tables["group_f1"]), tables["drawn_as"], colours))
            groups += image_html(group_bars, "F1 per class, one bar per group: the mean over its seeds, whiskers one "
                                             "standard deviation" + "; a run given alone, its own F1" * bool(alone))
        scored = list(f1)  # the runs with test scores, whose columns the score tables have
        f1_section = "<p>None of these runs is scored yet.</p>"
        if f1:
            f1_section = image_html(bars, "F1 per class, one bar per run") + table_html(
                ["class", *scored, *["range"] * (len(scored) > 1)], f1_rows)
        if change_rows:
            changes = table_html(["true class", *(f"mistakes, {n}" for n in scored), "range",
                                  "confusion that moved most"], change_rows)
        elif tables["scored"] > 1:
            changes = "<p>No class's count of mistakes differs between these runs.</p>"
        else:
            changes = "<p>Fewer than two of these runs are scored: there are no mistakes to set side by side.</p>"
        sections = [
            ("Runs (differences that bear on comparing them highlighted)",
             tables["unscored"] + table_html(["run", *names], headline, highlight=tables["headline_differ"])),
            *([("--seeds groups (over all their seeds)" + ", beside the runs given alone" * bool(alone), groups)]
              if groups else []),
            ("Settings (differences highlighted)", table_html(["setting", *names], settings, highlight=differ)),
            ("Learning curves (shared axes)",
             curves_note + "<p>Validation solid, training dashed; each run after the first is drawn thinner, with "
             "its own marker, so a run that follows an earlier one still shows on it. A run is one colour in every "
             "chart of this page (a group, its first run's).</p>"
             + image_html(curves, "loss and accuracy of every run on shared axes")),
            ("F1 per class", f1_section),
            ("Classes whose mistakes changed most", note + changes),
        ]
        return page(f"fmnist: {tables['title']}", sections)
