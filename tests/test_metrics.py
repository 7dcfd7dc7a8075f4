import numpy as np
import pytest

from fmnist.metrics import (
    bootstrap_accuracy_interval, calibration_bins, compute_metrics, most_confident_mistakes, most_confused,
    recall_shares,
)


def one_hot_probs(pred, confidence=0.9):
    probs = np.full((len(pred), 10), (1 - confidence) / 9)
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_metrics_match_hand_computation():
    # Class 0: 2 right, 1 predicted as 1. Class 1: 1 right. Others: each once, right.
    y_true = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    y_pred = np.array([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    m = compute_metrics(y_true, one_hot_probs(y_pred))
    assert m["test_accuracy"] == pytest.approx(11 / 12)
    assert m["per_class"]["T-shirt/top"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["T-shirt/top"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["Trouser"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["Trouser"]["f1-score"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"][0][:2] == [2, 1]
    assert m["test_loss"] == pytest.approx(-(11 * np.log(0.9) + np.log(0.1 / 9)) / 12)
    assert m["weakest_class"] == "Trouser"  # F1 2/3, below T-shirt's 0.8
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 8) / 10)


def test_recall_shares_are_each_true_classs_and_leave_an_empty_row_zero():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    shares = recall_shares(matrix)
    assert shares.tolist() == [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]]


def test_most_confident_mistakes_are_ordered():
    y_true = np.array([0, 1, 2, 3])
    probs = np.vstack([one_hot_probs([5], 0.6), one_hot_probs([1], 0.99), one_hot_probs([7], 0.95),
                       one_hot_probs([4], 0.3)])
    assert most_confident_mistakes(y_true, probs).tolist() == [2, 0, 3]


def test_bootstrap_interval_brackets_the_accuracy_and_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 10000)
    pred = np.where(rng.random(10000) < 0.9, y, (y + 1) % 10)
    low, high = bootstrap_accuracy_interval(y, pred)
    acc = (y == pred).mean()
    assert low < acc < high
    # Binomial standard error sqrt(p(1-p)/n) = 0.003: a 95% interval is about +-1.96 of it.
    assert (high - low) == pytest.approx(2 * 1.96 * np.sqrt(acc * (1 - acc) / 10000), rel=0.15)
    small_low, small_high = bootstrap_accuracy_interval(y[:1000], pred[:1000])
    assert small_high - small_low > high - low


def test_bootstrap_interval_is_the_one_drawn_resamples_approach_without_their_noise():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 1000)
    pred = np.where(rng.random(1000) < 0.9, y, (y + 1) % 10)
    correct = y == pred
    drawn = correct[rng.integers(0, 1000, (10000, 1000))].mean(axis=1)  # 10,000 resamples, the usual way
    low, high = bootstrap_accuracy_interval(y, pred)
    assert low == pytest.approx(np.percentile(drawn, 2.5), abs=1.5e-3)
    assert high == pytest.approx(np.percentile(drawn, 97.5), abs=1.5e-3)
    assert bootstrap_accuracy_interval(y, pred) == (low, high)


def test_ece_by_hand():
    # Two bins used: confidence 0.95 (4 images, 3 right) and 0.55 (2 images, 2 right).
    probs = np.zeros((6, 10))
    probs[:4, 0], probs[:4, 1] = 0.95, 0.05
    probs[4:, 2], probs[4:, 3] = 0.55, 0.45
    y = np.array([0, 0, 0, 1, 2, 2])
    cal = calibration_bins(y, probs, bins=15)
    expected = 4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(1.0 - 0.55)
    assert cal["ece"] == pytest.approx(expected)
    assert sum(cal["counts"]) == 6 and cal["counts"][14] == 4 and cal["counts"][8] == 2

    def wilson(correct, n, z=1.959963984540054):  # the score interval's formula, written out
        p = correct / n
        centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]

    intervals = cal["accuracy_interval"]
    assert intervals[14] == pytest.approx(wilson(3, 4)) and intervals[8] == pytest.approx(wilson(2, 2))
    assert intervals[8][1] == pytest.approx(1.0) and intervals[0] is None  # inside [0, 1]; an empty bin has none


def test_perfectly_calibrated_predictions_have_near_zero_ece():
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.1, 1.0, 200000)
    probs = np.zeros((len(conf), 10))
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 9)[:, None]
    y = np.where(rng.random(len(conf)) < conf, 0, 1)
    assert calibration_bins(y, probs)["ece"] < 0.01


def test_the_most_frequent_mistake_is_the_largest_cell_off_the_diagonal():
    matrix = np.diag([90, 80, 70])
    matrix[2, 0], matrix[0, 1] = 12, 7  # the diagonal's counts, larger, are no mistakes
    assert most_confused(matrix) == (2, 0, 12)
    assert most_confused(np.diag([5, 5])) is None  # no mistake at all
