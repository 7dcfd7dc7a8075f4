import numpy as np
import pytest

from fmnist import artifacts
from fmnist.calibration import apply_temperature
from fmnist.distill import DistillationLoss, distillation_labels, teacher_targets


def test_labels_are_the_one_hot_label_then_the_soft_targets():
    soft = np.full((2, 10), 0.1, dtype=np.float32)
    rows = distillation_labels(np.array([3, 0]), soft)
    assert rows.shape == (2, 20) and rows[0, 3] == 1 and rows[1, 0] == 1 and rows[:, :10].sum() == 2
    np.testing.assert_array_equal(rows[:, 10:], soft)


def test_loss_by_hand():
    """(1 - alpha) CE(label, p) + alpha T^2 CE(softmax(q / T), softmax(log p / T)), computed here with NumPy."""
    p = np.array([[0.7, 0.2, 0.1] + [0.0] * 7], dtype=np.float32)
    p = np.clip(p, 1e-7, 1.0)
    teacher = np.array([[0.5, 0.3, 0.2] + [0.0] * 7], dtype=np.float32)
    y_true = distillation_labels(np.array([1]), teacher)
    t, alpha = 2.0, 0.75
    log_p = np.log(p)
    z = log_p / t
    log_softmax = z - np.log(np.exp(z).sum())
    expected = (1 - alpha) * -log_p[0, 1] + alpha * t**2 * -(teacher * log_softmax).sum()
    got = float(np.asarray(DistillationLoss(temperature=t, alpha=alpha)(y_true, p)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_teacher_targets_undo_the_teachers_folded_temperature(tiny_run_dir):
    model, _ = artifacts.load_model(tiny_run_dir)
    features = np.random.default_rng(0).random((8, 784)).astype(np.float32)
    folded = float(artifacts.read_json(tiny_run_dir / artifacts.CALIBRATION)["temperature"])
    probabilities = np.asarray(model.predict(features, verbose=0))
    targets = teacher_targets(str(tiny_run_dir), features, temperature=4.0)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(targets, apply_temperature(probabilities, 4.0 / folded), rtol=1e-4, atol=1e-6)
    by_file = teacher_targets(str(tiny_run_dir / artifacts.MODEL), features, temperature=4.0)
    np.testing.assert_allclose(by_file, targets, rtol=1e-6)
