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


def test_apply_temperature_matches_scaled_logits():
    z = np.random.default_rng(1).normal(size=(5, 10))
    np.testing.assert_allclose(apply_temperature(softmax(z), 2.0), softmax(z / 2.0), rtol=1e-6)


def test_folding_into_the_model_equals_scaling_its_output():
    model = build_dense((16,), 0.0)
    x = np.random.default_rng(2).random((8, 784), dtype=np.float32)
    before = model.predict(x, verbose=0)
    fold_temperature(model, 1.7)
    np.testing.assert_allclose(model.predict(x, verbose=0), apply_temperature(before, 1.7), atol=1e-5)
