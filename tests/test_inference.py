import numpy as np

from fmnist.inference import BUCKETS, compiled_forward
from fmnist.model import build_dense


def test_compiled_forward_matches_predict_for_every_batch_size():
    model = build_dense((32, 16), 0.3)
    x = np.random.default_rng(0).random((BUCKETS[-1] + 37, 784), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    forward = compiled_forward(model)
    for n in (1, 5, 64, 300, len(x)):
        np.testing.assert_allclose(forward(x[:n]), expected[:n], atol=1e-5)


def test_compiled_forward_survives_a_later_keras_predict():
    model = build_dense((16,), 0.0)
    x = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    forward = compiled_forward(model)
    expected = model.predict(x, verbose=0)  # Keras' predict may donate the variables' buffers
    np.testing.assert_allclose(forward(x), expected, atol=1e-5)
