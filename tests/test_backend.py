import pytest

from fmnist.backend import resolve
from fmnist.errors import FmnistError


def test_flag_beats_environment_beats_the_measured_default(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve(None) == "jax"
    assert resolve(None, "cnn") == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert resolve(None) == "tensorflow"
    assert resolve("jax", "cnn") == "jax"


def test_unknown_backend_is_refused():
    with pytest.raises(FmnistError, match="unknown backend 'torch'"):
        resolve("torch")
