import optuna

from fmnist.tune_report import _figures


def test_a_plot_optuna_doubts_is_replaced_by_its_reason():
    study = optuna.create_study()
    distributions = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    study.add_trial(optuna.trial.create_trial(params={"dropout": 0.3}, distributions=distributions, value=0.5))
    figures = dict(_figures(study))
    assert "too small to compute importances" in figures["Parameter importances"]  # not a plot of equal bars
    assert not isinstance(figures["Optimisation history"], str)
    assert not isinstance(figures["Timeline (one row per trial; overlapping bars ran in parallel)"], str)
