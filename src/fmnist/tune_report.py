"""`fmnist tune --report`: a study's page, with its best trials, how to train the best, and Optuna's plots."""

from __future__ import annotations

import html
import math
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna

from fmnist import artifacts, defaults, run_settings, runs
from fmnist.errors import FmnistError, first_line
from fmnist.html_page import page, table_html
from fmnist.settings import BACKENDS, FLAG_SETTINGS, TrainSettings
from fmnist.tune import (FIXED_SETTINGS, TRIAL_BUDGET, flag_text, full_training_text, load_study, states_text,
                         study_flags, study_states, trial_run_dir, trial_state, value_text)
from fmnist.tune_storage import absolute_storage


def _setting_flags(study: optuna.Study, trial: optuna.trial.FrozenTrial, searched: bool, study_dir: Path) -> str:
    """The flags that give the trial's settings: the study's fixed ones where not the spec's, but its budget (as
    --train-best), and with ``searched`` its searched knobs too."""
    # As the study recorded them: the trial's run may be on another machine, or gone. A study from before they were
    # recorded has them in its run's config only.
    settings = study.user_attrs.get(FIXED_SETTINGS)
    if settings is None:
        run = trial_run_dir(trial, study_dir)
        config = Path(run) / artifacts.CONFIG if run else None
        try:
            settings = run_settings.settings_of(artifacts.read_json(config)) if config and config.is_file() else {}
        except FmnistError:  # damaged by hand: its searched settings are still the trial's own
            settings = {}
    spec = TrainSettings().to_dict()
    flags = []
    for name in (n for n in FLAG_SETTINGS if n not in ("name", "teacher", *TRIAL_BUDGET)):
        value = trial.params.get(name, settings.get(name))
        if (name in trial.params and not searched) or (name not in trial.params and value in (None, spec[name])):
            continue
        flags.append(f" {flag_text(name, value)}")  # floats in full: the same run
    return "".join(flags)


def _budget_note(study: optuna.Study) -> str:
    """What the commands above train without the trials' --epochs and --limit, and what to add to train as the trial
    did (as the closing lines of 'fmnist tune' say); "" for a study on the spec's budget."""
    budget = " ".join(flag_text(k, v) for k, v in study_flags(study.user_attrs.get(FIXED_SETTINGS) or {},
                                                               TRIAL_BUDGET).items())
    if not budget:
        return ""
    return f"<p>Each trains the best trial's settings {html.escape(full_training_text(budget), quote=False)}.</p>"


def _train_command(study: optuna.Study, trial: optuna.trial.FrozenTrial, study_dir: Path) -> str:
    """`fmnist train` with the trial's settings, on its backend (recorded since 2 December 2026)."""
    name = f"{study.study_name}{defaults.BEST_SUFFIX}"
    backend = trial.user_attrs.get("backend")
    return (f"fmnist train --name {name}" + (f" --backend {backend}" if backend in BACKENDS else "")
            + _setting_flags(study, trial, searched=True, study_dir=study_dir))


# What a trial's value is, named so in the plots (Optuna's "Objective Value").
OBJECTIVE = "val_loss"
# Optuna's importances fit a random forest to the trials: on fewer than this many, its ranking is noise.
MIN_TRIALS_FOR_IMPORTANCES = 10


def _figures(study: optuna.Study) -> list[tuple[str, Any]]:
    """Optuna's plots that this study has enough trials for; the others are named with the reason."""
    from optuna import visualization as vis

    figures = []
    finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    for title, plot in (
        ("Optimisation history", vis.plot_optimization_history),
        ("Parameter importances", vis.plot_param_importances),
        ("Validation loss per epoch (pruned trials stop early)", vis.plot_intermediate_values),
        ("Parameters of every trial", vis.plot_parallel_coordinate),
        ("Timeline (one row per trial; overlapping bars ran in parallel)", vis.plot_timeline),
    ):
        if plot is vis.plot_param_importances and finished < MIN_TRIALS_FOR_IMPORTANCES:
            figures.append((title, f"{finished} finished trial{'s' if finished != 1 else ''}, where "
                                   f"importances mean something from about {MIN_TRIALS_FOR_IMPORTANCES} on (a forest "
                                   "fitted to fewer ranks parameters by noise)"))
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                named = plot in (vis.plot_optimization_history, vis.plot_param_importances,
                                  vis.plot_parallel_coordinate)  # those that name the value, "Objective Value" else
                figure = plot(study, target_name=OBJECTIVE) if named else plot(study)
        except (ValueError, RuntimeError) as exc:  # too few finished trials, or parameters that never varied
            figures.append((title, first_line(exc)))
            continue
        # A plot Optuna warns about ("too small to compute importances") would mislead: its reason is shown instead.
        # A UserWarning or RuntimeWarning (NaN met) doubts the plot; a library's DeprecationWarning or FutureWarning
        # says nothing of it.
        doubts = [w for w in caught if issubclass(w.category, (UserWarning, RuntimeWarning))
                  and not issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
        if plot is vis.plot_intermediate_values and not doubts:  # Optuna's steps are epochs counted from 0
            figure.for_each_trace(lambda trace: trace.update(x=[step + 1 for step in trace.x]))
            figure.update_xaxes(title_text="epoch")  # from 1, as the runs' reports and progress lines count them
            # Which line is which trial (Optuna hides the legend): "trial 3", as the summary and runs name it.
            figure.for_each_trace(lambda trace: trace.update(name=trace.name.replace("Trial", "trial ")))
            figure.update_layout(showlegend=True)
            figure.update_yaxes(title_text=OBJECTIVE)  # Optuna's "Intermediate Value": what the pruner judged
        if plot is vis.plot_parallel_coordinate and not doubts:
            _darken_parallel_coordinate(figure)
            _dash_hidden_sizes(figure)
        if plot is vis.plot_optimization_history and not doubts:
            figure.for_each_trace(lambda trace: trace.update(
                name=f"lowest {OBJECTIVE} so far" if trace.name == "Best Value" else trace.name))
        if plot is vis.plot_timeline and not doubts:  # one row a trial: whole numbers, not -0.5 between two
            figure.update_yaxes(tick0=0, dtick=1)
            _name_states(figure, study)
        if plot in (vis.plot_optimization_history, vis.plot_intermediate_values) and not doubts:
            # Trials and epochs are counted: ticks at whole numbers, where plotly would put 0.5 between two.
            last = max((max(trace.x, default=0) for trace in figure.data if trace.x is not None), default=0)
            figure.update_xaxes(tick0=0, dtick=max(1, math.ceil(last / 10)))
        figures.append((title, first_line(doubts[0].message) if doubts else figure))
    return figures


# How far the parallel-coordinate plot's colours are moved towards the darkest blue: Optuna's scale (Blues) begins
# at near white, so the worst trial's line did not show on the white page.
DARKENED_BY = 0.35


def _darken_parallel_coordinate(figure: Any) -> None:
    """Each trial's line in the parallel-coordinate plot, and its colour bar, moved DARKENED_BY of the way to the
    darkest blue of Optuna's scale: the worst trial visible, the order of the shades kept."""
    from plotly import colors

    blues = colors.sequential.Blues

    def darker(colour: str) -> str:
        return colors.find_intermediate_color(colour, blues[-1], DARKENED_BY, colortype="rgb")

    for trace in figure.data:
        if trace.mode == "lines" and isinstance(trace.line.color, str) and trace.line.color.startswith("rgb("):
            trace.line.color = darker(trace.line.color)
        elif trace.mode == "markers" and trace.marker.showscale:  # the colour bar
            trace.marker.colorscale = [[i / (len(blues) - 1), darker(c)] for i, c in enumerate(blues)]


# The timeline's colour for each state as the page names it: Optuna's own for its states, grey for a trial cut short
# through no fault of its settings (Optuna's FAIL, in red, read as a failure of the settings).
STATE_COLOURS = {"stopped": "#999999", "system error": "#bbbbbb", runs.KILLED: "#555555"}


def _name_states(figure: Any, study: optuna.Study) -> None:
    """The timeline's bars named, in the legend and the hover, by each trial's state as the page's text counts them
    (:func:`trial_state`); its hover's hidden sizes written 512-256, as the tables write them."""
    # So a trial Ctrl-C stopped is "stopped" in grey, not Optuna's red "FAIL".
    from plotly import graph_objects

    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    rows: dict[str, list[tuple[Any, int]]] = {}  # each state's bars, from whichever of Optuna's traces
    for trace in figure.data:  # "killed" comes from Optuna's FAIL and from its RUNNING (a worker gone)
        for i, number in enumerate(trace.y):
            rows.setdefault(trial_state(trials[int(number)]), []).append((trace, i))
    bars = []
    for state, kept in rows.items():
        bar = graph_objects.Bar(kept[0][0])  # orientation, hover and the rest as Optuna drew them
        bar.update({key: [getattr(trace, key)[i] for trace, i in kept] for key in ("x", "y", "base", "text")
                    if getattr(kept[0][0], key) is not None})
        bar.update(text=[re.sub(r'("hidden_sizes": ")([\d,]+)"', lambda m: f'{m[1]}{value_text(m[2], "hidden_sizes")}"',
                                text) for text in bar.text or ()])
        bar.update(name=state, hovertemplate=f"%{{text}}<extra>{state}</extra>",
                   marker_color=STATE_COLOURS.get(state, kept[0][0].marker.color))
        bars.append(bar)
    figure.data = ()
    figure.add_traces(bars)


def _dash_hidden_sizes(figure: Any) -> None:
    """The parallel-coordinate plot's hidden sizes, on their axis and in each line's hover, written 512-256, as the
    table beside it and every other table write them (the study stores them as the flag takes them, 512,256)."""
    names = list(figure.layout.xaxis.ticktext or ())
    if "hidden_sizes" not in names:
        return
    axis = names.index("hidden_sizes")
    for label in figure.layout.annotations:
        if label.x == axis:
            label.text = value_text(label.text, "hidden_sizes")
    for trace in figure.data:
        if trace.customdata is not None:
            trace.customdata = [[name, value_text(value, name)] for name, value in trace.customdata]


def write_report(study_name: str, storage: str | None = None, runs_dir: Path | None = None,
                 output: Path | None = None) -> Path:
    """A self-contained HTML page: the best trials, how to train the best, and Optuna's plots; by default in the
    study's runs folder (that of its trials)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # plots that cannot be drawn say so on the page
    study, shown, runs_dir = load_study(study_name, storage, runs_dir)
    study_dir = Path(runs_dir) / study_name
    # Checked before the plots are drawn; the default place refused is named as such, not as a flag not given.
    said = "--output" if output else "the page (--output writes it elsewhere)"
    output = runs.prepare_output(Path(output) if output else study_dir / artifacts.TUNE_REPORT, said, ".html",
                                 make_folder=not output)  # a study's folder, before its first trial's run
    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.value)
    names = list(complete[0].params) if complete else []
    rows = [[t.number, f"{t.value:.4f}", f"{t.user_attrs.get('val_accuracy', float('nan')):.4f}",
             t.user_attrs.get("epochs", "-"), *(value_text(t.params.get(n, "-"), n) for n in names),
             t.user_attrs.get("backend", "-"), trial_run_dir(t, study_dir) or "-"]
            for t in complete[:10]]
    states = states_text(study_states(study))
    sections = [
        ("Study", f"<p>{html.escape(shown)}: {html.escape(states)}; objective: best val_loss on the validation split "
                  "(the test set is never used to choose).</p>"),
        ("Best trials", table_html(["trial", "val_loss", "val_accuracy", "epochs", *names, "backend", "run"], rows)
         if complete else "<p>none finished</p>"),
    ]
    if complete:
        # Commands to paste into a shell, in any folder: the runs folder and storage this page was made from.
        where = f" --runs-dir {shlex.quote(str(Path(runs_dir).absolute()))}"
        storage_flag = f" --storage {shlex.quote(absolute_storage(storage, shown))}" if storage else ""
        hidden = "<p>(with the database's password where the URL shows ***)</p>" if "***" in storage_flag else ""
        sections.append((
            "Train the best trial's settings as a normal run",
            # The study's fixed settings but its budget given, as the plain training's: the same run.
            f"<pre>{html.escape(f'fmnist tune --train-best {study_name}{where}{storage_flag}')}"
            f"{html.escape(_setting_flags(study, complete[0], searched=False, study_dir=study_dir))}</pre>{hidden}"
            "<p>or, the same as a plain training:</p>"
            f"<pre>{html.escape(_train_command(study, complete[0], study_dir) + where)}</pre>"
            + _budget_note(study),
        ))
    if not complete:  # Optuna would draw empty axes
        sections.append(("Plots", "<p>none drawn: no finished trials yet</p>"))
    plotly_js: Any = True  # the first figure carries plotly.js, so the page needs no network
    for title, figure in _figures(study) if complete else ():
        if isinstance(figure, str):
            sections.append((title, f"<p>not drawn: {html.escape(figure)}</p>"))
        else:
            sections.append((title, figure.to_html(full_html=False, include_plotlyjs=plotly_js)))
            plotly_js = False
    artifacts.write_text(output, page(f"fmnist tune {study_name}", sections))
    return output
