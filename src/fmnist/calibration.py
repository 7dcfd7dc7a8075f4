"""Temperature scaling: fit one temperature on held-out data and fold it into the model's last layer."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts
from fmnist.errors import FmnistError

log = logging.getLogger(__name__)

# The smallest probability whose log is taken as it is: float32's smallest normal number, about 1e-38 (a logit
# about 87 below the top one). A higher floor (1e-12) made every confidently wrong image count as less wrong than it
# is, and the temperature fitted on them too low.
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # far past any a trained network needs (ours: 0.8-1.8)


def folded_temperature(run_dir: Path) -> float:
    """The temperature folded into a run's saved model (1 for a run without one)."""
    path = Path(run_dir) / artifacts.CALIBRATION
    if not path.is_file():
        log.warning("%s is missing: taking the model as it is, with no temperature folded in (as in a run made before "
                    "fmnist calibrated); if the file was lost, restore it: what is computed from it will be wrong",
                    path)
        return 1.0
    recorded = artifacts.read_json(path).get("temperature")
    temperature = artifacts.json_number(recorded)
    if temperature is None or not 0 < temperature < math.inf:
        raise FmnistError(f"{path} is damaged (temperature {recorded!r}, not a positive number): "
                          "train the run again, or restore the file from a copy")
    return temperature


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the probabilities a model with logits divided by T would give."""
    scaled = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(probabilities: np.ndarray, y_true: np.ndarray, low: float = PROBABILITY_FLOOR,
        high: float = 1.0) -> float:
    """The mean negative log-probability of the true classes, each clipped to [low, high] first."""
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], low, high))))


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that minimises negative log-likelihood on held-out data (never the test set); 1, no scaling,
    where that data has no mistake: the likelihood then only grows as T falls, and any T found would be the bound's."""
    from scipy.optimize import minimize_scalar

    if (np.asarray(probabilities).argmax(axis=1) == np.asarray(y_true)).all():
        return 1.0

    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(probabilities, float(np.exp(log_t))), y_true),
        bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-4},
    )
    temperature = float(np.exp(result.x))
    if not low * 1.01 < temperature < high / 1.01:  # the likelihood still falling at the bound: T is the bound's
        log.warning("temperature scaling: T = %.3g is the bound of its search (%g-%g): the validation split's %d "
                    "images are too few, or its mistakes too odd, to fit it; its probabilities are those of that "
                    "bound (a larger split, or more training, would fit a sound one)", temperature, low, high,
                    len(y_true))
    return temperature


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide the softmax layer's kernel and bias by T, so the saved model itself is calibrated."""
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel / temperature, bias / temperature])
