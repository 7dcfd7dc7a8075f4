import numpy as np
import pytest

from fmnist.metrics import compute_metrics, most_confident_mistakes


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


def test_most_confident_mistakes_are_ordered():
    y_true = np.array([0, 1, 2, 3])
    probs = np.vstack([one_hot_probs([5], 0.6), one_hot_probs([1], 0.99), one_hot_probs([7], 0.95),
                       one_hot_probs([4], 0.3)])
    assert most_confident_mistakes(y_true, probs).tolist() == [2, 0, 3]
