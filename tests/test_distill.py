import shutil

import keras
import numpy as np
import scipy.stats
import pytest

from fmnist import artifacts, model_files
from fmnist.calibration import apply_temperature
from fmnist.distill import DistillationLoss, distillation_labels, teacher_targets
from fmnist.errors import FmnistError


def test_labels_are_the_one_hot_label_then_the_soft_targets():
    soft = np.full((2, 10), 0.1, dtype=np.float32)
    rows = distillation_labels(np.array([3, 0]), soft)
    assert rows.shape == (2, 20) and rows[0, 3] == 1 and rows[1, 0] == 1 and rows[:, :10].sum() == 2
    np.testing.assert_array_equal(rows[:, 10:], soft)


def test_loss_by_hand():
    """(1 - alpha) CE(label, p) + alpha T^2 KL(teacher || softmax(log p / T)) per image, averaged, computed with NumPy
    (the KL with SciPy's entropy)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 10))
    z[1] = [25, *[0] * 9]  # a student sure of an image (its other classes under 1e-7): the teacher still teaches
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    soft = rng.dirichlet(np.ones(10), size=4)
    labels = np.array([0, 3, 9, 2])
    y = distillation_labels(labels, soft.astype(np.float32))
    got = float(keras.ops.convert_to_numpy(DistillationLoss(4.0, 0.9)(y, p.astype(np.float32))))
    zt = z / 4
    log_softmax_t = zt - np.log(np.exp(zt).sum(1, keepdims=True))
    kl = scipy.stats.entropy(soft, np.exp(log_softmax_t), axis=1)
    expected = np.mean(0.1 * -np.log(p[np.arange(4), labels]) + 0.9 * 16 * kl)
    assert got == pytest.approx(expected, rel=1e-4)
    soft[0] = np.eye(10)[3]  # a target of zeros and a one: 0 * log 0 must not make it NaN
    y = distillation_labels(labels, soft.astype(np.float32))
    assert np.isfinite(float(keras.ops.convert_to_numpy(DistillationLoss(4.0, 1.0)(y, p.astype(np.float32)))))


def test_teacher_targets_undo_the_teachers_folded_temperature(tiny_run_dir):
    model, _ = model_files.load_model(tiny_run_dir)
    features = np.random.default_rng(0).random((8, 784)).astype(np.float32)
    folded = float(artifacts.read_json(tiny_run_dir / artifacts.CALIBRATION)["temperature"])
    probabilities = np.asarray(model.predict(features, verbose=0))
    targets = teacher_targets(str(tiny_run_dir), features, temperature=4.0)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(targets, apply_temperature(probabilities, 4.0 / folded), rtol=1e-4, atol=1e-6)
    by_file = teacher_targets(str(tiny_run_dir / artifacts.MODEL), features, temperature=4.0)
    np.testing.assert_allclose(by_file, targets, rtol=1e-6)
    recorded = (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    np.testing.assert_allclose(teacher_targets(str(tiny_run_dir), features, 4.0, recorded), targets, rtol=1e-6)
    # Replaced since the student's run checked it and recorded its SHA-256: that run would learn from two teachers.
    with pytest.raises(FmnistError, match=f"--teacher {tiny_run_dir}: its model changed since this run began "
                                          f"\\(SHA-256 {'0' * 64} then, {recorded} now\\)"):
        teacher_targets(str(tiny_run_dir), features, 4.0, "0" * 64)


def test_a_teacher_model_copied_out_of_its_run_is_refused(tmp_path, tiny_run_dir):
    """Its temperature stays in the run: taken alone, the model's soft targets would be silently wrong."""
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(tiny_run_dir / name, tmp_path / name)
    with pytest.raises(FmnistError, match=f"no {artifacts.CONFIG} in {tmp_path}: a teacher must be a run"):
        teacher_targets(str(tmp_path / artifacts.MODEL), np.zeros((1, 784), np.float32), temperature=4.0)
