"""Compute test-set metrics and mistakes from predicted probabilities (drawing lives in plots.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fmnist.facts import CLASS_NAMES


def mean_log_loss(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean cross-entropy of the true classes, as Keras' sparse categorical cross-entropy computes it: each true
    class's probability clipped to [1e-7, 1 - 1e-7] (Keras' epsilon)."""
    from fmnist.calibration import nll

    return nll(np.asarray(probabilities, dtype=np.float64), np.asarray(y_true), low=1e-7, high=1 - 1e-7)


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Accuracy, log loss, per-class precision/recall/F1 with macro and weighted averages, confusion matrix."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(range(len(CLASS_NAMES)))
    y_pred = probabilities.argmax(axis=1)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=list(CLASS_NAMES), output_dict=True, zero_division=0
    )
    per_class = {name: {k: float(v) for k, v in report[name].items()} for name in CLASS_NAMES}
    weakest = min(CLASS_NAMES, key=lambda name: per_class[name]["f1-score"])
    return {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "test_loss": mean_log_loss(y_true, probabilities),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "per_class": per_class,
        "macro_avg": {k: float(v) for k, v in report["macro avg"].items()},
        "weighted_avg": {k: float(v) for k, v in report["weighted avg"].items()},
        "weakest_class": weakest,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "test_images": int(len(y_true)),
    }


def recall_shares(matrix) -> np.ndarray:
    """Each row of a confusion matrix as shares of its true class (its recall on the diagonal); an empty row stays 0."""
    counts = np.asarray(matrix)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def most_confused(matrix) -> tuple[int, int, int] | None:
    """The confusion matrix's largest mistake: (true class, class predicted, count); None where it holds none."""
    mistakes = np.asarray(matrix).copy()
    np.fill_diagonal(mistakes, 0)
    true, predicted = np.unravel_index(int(mistakes.argmax()), mistakes.shape)
    count = int(mistakes[true, predicted])
    return (int(true), int(predicted), count) if count else None


def classification_report_text(y_true: np.ndarray, probabilities: np.ndarray) -> str:
    from sklearn.metrics import classification_report

    return classification_report(
        y_true, probabilities.argmax(axis=1), labels=list(range(len(CLASS_NAMES))),
        target_names=list(CLASS_NAMES), digits=4, zero_division=0,
    )


def most_confident_mistakes(y_true: np.ndarray, probabilities: np.ndarray, count: int = 24) -> np.ndarray:
    """Indices of wrong predictions, most confident first."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = probabilities[wrong, y_pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


def bootstrap_accuracy_interval(y_true: np.ndarray, y_pred: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy, over every resampling of the test images with replacement: the count
    right in a resample of n is Binomial(n, accuracy), so its quantiles are exact."""
    # Exact, not drawn: 2,000 drawn resamples moved the fourth decimal from one seed to another.
    from scipy.stats import binom

    correct = np.asarray(y_true) == np.asarray(y_pred)
    tail = (1 - level) / 2
    low, high = binom.ppf([tail, 1 - tail], len(correct), correct.mean()) / len(correct)
    return float(low), float(high)


# Equal-width confidence bins of the expected calibration error, as in Guo et al. (2017).
CALIBRATION_BINS = 15


def calibration_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability per equal-width confidence bin, and the expected calibration error (weighted |acc - conf|)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    right = np.bincount(which[correct], minlength=bins)
    accuracy = right / np.maximum(counts, 1)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / len(y_true) * np.abs(accuracy - mean_confidence)))
    return {"ece": ece, "edges": edges.tolist(), "counts": counts.tolist(),
            "accuracy": accuracy.tolist(), "confidence": mean_confidence.tolist(),
            "accuracy_interval": [_wilson_interval(k, n) for k, n in zip(right.tolist(), counts.tolist())]}


def _wilson_interval(correct: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a bin's accuracy (it stays inside [0, 1] for a bin of one image); None when empty."""
    if not n:
        return None
    from scipy.stats import binomtest

    interval = binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(interval.low), float(interval.high)]
