import json
import logging
import re
import shutil
import subprocess
import warnings

import optuna

from conftest import page_text
from fmnist.settings import TrainSettings
from fmnist.tune import HIDDEN_SIZES, TuneResult, best_trial, open_study, suggest, summary
from fmnist.tune_report import MIN_TRIALS_FOR_IMPORTANCES, _figures, _setting_flags, write_report
from fmnist.tune_storage import open_storage, worker_key


def test_a_plot_optuna_doubts_is_replaced_by_its_reason():
    study = optuna.create_study()
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    for _ in range(MIN_TRIALS_FOR_IMPORTANCES):  # enough trials, but a parameter that never varied
        study.add_trial(optuna.trial.create_trial(params={"dropout": 0.3}, distributions=distributions, value=0.5))
    figures = dict(_figures(study))
    assert "Parameter importances will be equal" in figures["Parameter importances"]  # not a plot of equal bars
    assert not isinstance(figures["Optimisation history"], str)
    assert not isinstance(figures["Timeline (one row per trial; overlapping bars ran in parallel)"], str)


def test_a_study_older_than_its_recorded_settings_takes_them_from_its_runs_and_survives_a_damaged_one(tmp_path):
    study = optuna.create_study()
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    configs = {"whole": {"settings": {"seed": 7, "epochs": 7}}, "without": {"data": {}}, "list": [], "cut": "{"}
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        study.add_trial(optuna.trial.create_trial(params={"dropout": 0.1}, distributions=distributions, value=0.5,
                                                  user_attrs={"run_dir": str(tmp_path / name)}))
    flags = [_setting_flags(study, trial, True, tmp_path) for trial in study.trials]
    assert flags == [" --dropout 0.1 --seed 7"] + [" --dropout 0.1"] * 3  # not a trial's budget: as --train-best


def test_importances_are_drawn_only_from_enough_trials_to_mean_something():
    import random

    study = optuna.create_study()
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    draw = random.Random(0)
    for finished in range(1, MIN_TRIALS_FOR_IMPORTANCES + 1):
        study.add_trial(optuna.trial.create_trial(params={"dropout": draw.uniform(0, 0.5)},
                                                  distributions=distributions, value=draw.random()))
        importances = dict(_figures(study))["Parameter importances"]
        if finished < MIN_TRIALS_FOR_IMPORTANCES:  # a forest fitted to 3 trials ranks by noise
            assert importances == (f"{finished} finished trial{'s' if finished > 1 else ''}, where "
                                   "importances mean something from about 10 on (a forest fitted to fewer ranks "
                                   "parameters by noise)")
    assert not isinstance(importances, str)


def test_the_validation_loss_per_epoch_counts_epochs_from_1_as_the_runs_do():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.4,
                                              intermediate_values={0: 0.6, 1: 0.5, 2: 0.4}))
    figure = dict(_figures(study))["Validation loss per epoch (pruned trials stop early)"]
    assert [list(trace.x) for trace in figure.data] == [[1, 2, 3]] and figure.layout.xaxis.title.text == "epoch"
    assert figure.layout.xaxis.dtick == 1  # epochs are whole: no tick at 1.5
    assert figure.layout.showlegend and [trace.name for trace in figure.data] == ["trial 0"]  # which line is which
    assert figure.layout.yaxis.title.text == "val_loss"
    for number in range(1, 25):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.4))
    figures = dict(_figures(study))
    history = figures["Optimisation history"]
    assert (history.layout.xaxis.tick0, history.layout.xaxis.dtick) == (0, 3)  # trials 0 to 24, a tick every 3
    timeline = figures["Timeline (one row per trial; overlapping bars ran in parallel)"]
    assert (timeline.layout.yaxis.tick0, timeline.layout.yaxis.dtick) == (0, 1)  # a row a trial, no -0.5


def test_the_timeline_names_each_trials_state_as_the_page_counts_them():
    study = optuna.create_study()
    sizes = {"hidden_sizes": optuna.distributions.CategoricalDistribution(HIDDEN_SIZES)}
    study.add_trial(optuna.trial.create_trial(params={"hidden_sizes": "256,128"}, distributions=sizes, value=0.5))
    for attrs in ({"stopped": True}, {"diverged": True}, {}, {"killed": True}):  # Ctrl-C, a NaN loss, a trial's own
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs))  # error...
    worker = subprocess.Popen(["sleep", "30"])  # ... and one still running in the journal, its worker killed
    gone = worker_key(worker.pid)
    worker.kill()
    worker.wait()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs={"worker": gone}))
    timeline = dict(_figures(study))["Timeline (one row per trial; overlapping bars ran in parallel)"]
    bars = {trace.name: trace for trace in timeline.data}
    assert len(bars) == len(timeline.data)  # a state once in the legend: "killed" from Optuna's FAIL and RUNNING
    assert {name: list(bar.y) for name, bar in bars.items()} == {"complete": [0], "stopped": [1], "diverged": [2],
                                                                 "fail": [3], "killed": [4, 5]}
    assert bars["stopped"].marker.color == "#999999" and bars["fail"].marker.color == "red"  # cut short: not red
    assert bars["stopped"].hovertemplate == "%{text}<extra>stopped</extra>"
    assert '"hidden_sizes": "256-128"' in bars["complete"].text[0]  # as the tables write them


def test_a_librarys_deprecation_warning_does_not_keep_a_plot_off_the_page(monkeypatch):
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    drawn = optuna.visualization.plot_timeline

    def plot_timeline_warning_of_its_libraries(study):  # as plotly or pandas may, in a version to come
        warnings.warn("this call is deprecated", DeprecationWarning)
        warnings.warn("this default will change", FutureWarning)
        return drawn(study)

    monkeypatch.setattr(optuna.visualization, "plot_timeline", plot_timeline_warning_of_its_libraries)
    figures = dict(_figures(study))
    assert not isinstance(figures["Timeline (one row per trial; overlapping bars ran in parallel)"], str)


def test_a_stopped_or_killed_trial_is_named_so_and_a_study_without_a_finished_trial_draws_no_plots(tmp_path):
    store, shown = open_storage(None, tmp_path)
    study = open_study("s", store, shown, TrainSettings(epochs=2))
    stopped = study.ask()
    suggest(stopped, TrainSettings(epochs=2))
    stopped.set_user_attr("stopped", True)  # as the objective marks a trial Ctrl-C cut short
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    worker = subprocess.Popen(["sleep", "30"])
    killed = study.ask()  # its worker killed mid-trial: in a journal it stays running
    killed.set_user_attr("worker", worker_key(worker.pid))
    worker.kill()
    worker.wait()
    page = write_report("s", runs_dir=tmp_path).read_text()
    assert "1 killed, 1 stopped" in page and "fail" not in page and "running" not in page
    assert "no finished trials yet" in page and "plotly-graph-div" not in page


def test_parameters_are_shown_to_4_significant_digits_and_trials_counted_in_words(tmp_path, caplog):
    store, shown = open_storage(None, tmp_path)
    base = TrainSettings(epochs=2)
    study = open_study("s", store, shown, base)
    with caplog.at_level(logging.INFO, logger="fmnist.tune"):
        open_study("s", store, shown, base)
    assert "(1 trial so far)" in caplog.text  # the recipe's own, queued
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
                     "hidden_sizes": optuna.distributions.CategoricalDistribution(HIDDEN_SIZES)}
    study.add_trial(optuna.trial.create_trial(params={"dropout": 0.3925927822590317, "hidden_sizes": "256,128"},
                                              distributions=distributions, value=0.5))
    page = write_report("s", runs_dir=tmp_path).read_text()
    assert "<td>0.3926</td>" in page  # the table; the commands give it whole, to train the same run
    # Hidden sizes as every table writes them; the commands as the flag's help gives them (it takes either)
    assert "<td>256-128</td>" in page and "--hidden-sizes 256,128 " in page
    # so too the parallel-coordinate plot's axis and hovers, and the timeline's hover
    assert '"text":"256-128"' in page and '["hidden_sizes","256-128"]' in page and '"text":"256,128"' not in page
    assert page.count("256,128") == page.count("--hidden-sizes 256,128")  # in the commands alone
    result = TuneResult("s", shown, 1, {"complete": 1}, best_trial(study))
    assert "  dropout 0.3926" in summary(result) and "0.39259" not in summary(result)
    assert "hidden_sizes 256-128" in summary(result)
    assert result.best["params"]["dropout"] == 0.3925927822590317  # kept whole for --json


def test_a_copied_study_is_reported_from_its_copy_and_names_the_copys_runs(tmp_path):
    first = tmp_path / "first"
    store, shown = open_storage(None, first)
    study = open_study("s", store, shown, TrainSettings(epochs=2))
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    run = first / "s" / "20261206T000000Z-trial-0001"
    run.mkdir(parents=True)
    study.add_trial(optuna.trial.create_trial(params={"dropout": 0.3}, distributions=distributions, value=0.5,
                                              user_attrs={"run_dir": str(run)}))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    # The original is still there: pointing at the copy's journal must not write beside the original.
    output = write_report("s", storage=str(copy / "tune.journal"))
    assert output == copy / "s" / "tune_report.html" and not (first / "s" / "tune_report.html").exists()
    page = page_text(output)
    assert str(copy / "s" / run.name) in page and str(run) not in page


def test_a_database_study_is_reported_where_its_trials_ran_not_in_a_runs_folder_here(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    store, shown = open_storage(storage, tmp_path / "runs")
    study = open_study("s", store, shown, TrainSettings(epochs=2))
    run = tmp_path / "trained" / "s" / "20261206T000000Z-trial-0001"  # its workers' --runs-dir
    run.mkdir(parents=True)
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    study.add_trial(optuna.trial.create_trial(params={"dropout": 0.3}, distributions=distributions, value=0.5,
                                              user_attrs={"run_dir": str(run)}))
    (tmp_path / "here" / "runs" / "s").mkdir(parents=True)  # another study of that name, a journal's, here
    monkeypatch.chdir(tmp_path / "here")
    assert write_report("s", storage=storage) == tmp_path / "trained" / "s" / "tune_report.html"


def test_every_trials_line_shows_on_the_page_and_its_value_is_named_val_loss(tmp_path):
    store, shown = open_storage(None, tmp_path)
    study = open_study("s", store, shown, TrainSettings(epochs=2))
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    for i, value in enumerate([0.5, 0.9, 0.3, 0.7]):
        study.add_trial(optuna.trial.create_trial(params={"dropout": 0.1 * i}, distributions=distributions,
                                                  value=value))
    page = write_report("s", runs_dir=tmp_path).read_text()
    lines = [[float(c) for c in rgb.split(",")] for rgb in re.findall(r'"line":\{"color":"rgb\(([^)]*)\)"', page)]
    assert len(lines) >= 4 and max(max(rgb) for rgb in lines) <= 210  # Optuna's worst was near white, 247-255
    assert "Objective Value" not in page and "Best Value" not in page  # val_loss, as every other page names it
