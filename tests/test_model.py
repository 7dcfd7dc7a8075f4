import numpy as np

from fmnist.model import build_dense


def test_spec_architecture():
    model = build_dense()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dropout"] * 4 + ["Dense"]
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [512, 256, 64, 32, 10]
    assert all(layer.rate == 0.3 for layer in model.layers if type(layer).__name__ == "Dropout")
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)


def test_fits_ten_random_samples_and_outputs_probabilities():
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 784), dtype=np.float32), np.arange(10)
    model = build_dense((32, 16), 0.3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=10, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
