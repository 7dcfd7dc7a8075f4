import numpy as np
import pytest

from fmnist.calibration import apply_temperature, fit_temperature, fold_temperature, nll
from fmnist.metrics import calibration_bins
from fmnist.model import build_dense


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fit_recovers_the_temperature_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20000, 10))
    y = np.array([rng.choice(10, p=p) for p in softmax(logits)])
    overconfident = softmax(logits * 2.5)  # a model whose logits are 2.5 times too large
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.05)
    calibrated = apply_temperature(overconfident, t)
    assert nll(calibrated, y) < nll(overconfident, y)
    assert calibration_bins(y, calibrated)["ece"] < calibration_bins(y, overconfident)["ece"] / 3
    np.testing.assert_array_equal(calibrated.argmax(1), overconfident.argmax(1))  # predictions unchanged


def test_fit_equals_an_independent_fit_on_exact_logits_with_confidently_wrong_images():
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 6, (6000, 10))
    y = np.array([rng.choice(10, p=p) for p in softmax(logits / 3)])  # a model whose logits are 3 times too large
    wrong = rng.choice(6000, 60, replace=False)
    logits[wrong, y[wrong]] -= 40  # 1% sure of a wrong class: the true one's probability 1e-22 to 1e-12
    exact = minimize_scalar(lambda t: -log_softmax(logits / t, axis=1)[np.arange(6000), y].mean(),
                            bounds=(0.05, 20), method="bounded", options={"xatol": 1e-6}).x
    # From the float32 probabilities the model gives, as fmnist fits it (a floor at 1e-12 gave 3.33, not 3.45).
    assert fit_temperature(softmax(logits).astype(np.float32), y) == pytest.approx(exact, rel=1e-3)


def test_apply_temperature_matches_scaled_logits():
    z = np.random.default_rng(1).normal(size=(5, 10))
    np.testing.assert_allclose(apply_temperature(softmax(z), 2.0), softmax(z / 2.0), rtol=1e-6)


def test_folding_into_the_model_equals_scaling_its_output():
    model = build_dense((16,), 0.0)
    x = np.random.default_rng(2).random((8, 784), dtype=np.float32)
    before = model.predict(x, verbose=0)
    fold_temperature(model, 1.7)
    np.testing.assert_allclose(model.predict(x, verbose=0), apply_temperature(before, 1.7), atol=1e-5)


def test_no_temperature_is_fitted_where_the_held_out_images_hold_no_mistake():
    # Every image right: the likelihood only grows as T falls, and the fit returned the bound's T (0.12), turning a
    # 0.70 answer into 0.9999999 once folded in.
    probabilities = np.full((10, 10), 0.02, np.float32)
    probabilities[np.arange(10), np.arange(10)] = 0.82
    assert fit_temperature(probabilities, np.arange(10)) == 1.0
    probabilities[0] = probabilities[1]  # one mistake: a temperature is fitted again, well inside the bounds
    assert 0.1 < fit_temperature(probabilities, np.arange(10)) < 10 and fit_temperature(probabilities,
                                                                                         np.arange(10)) != 1.0


def test_a_temperature_at_the_bound_of_its_search_is_said_to_be_so(caplog):
    import logging

    probabilities = np.full((3, 10), 1e-30, np.float32)
    probabilities[[0, 1, 2], [0, 1, 3]] = 1.0  # two right, and one as sure of a class it is not (2) as can be
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        assert fit_temperature(probabilities, np.arange(3)) == pytest.approx(20, rel=1e-3)
    assert "T = 20 is the bound of its search (0.05-20): the validation split's 3 images are too few" in caplog.text
    caplog.clear()
    probabilities[2] = probabilities[1]  # a near mistake in a sound split is no bound's doing: nothing said
    probabilities[2, 2] = 0.5
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        assert 0.05 * 1.01 < fit_temperature(probabilities, np.arange(3)) < 20 / 1.01
    assert caplog.text == ""
