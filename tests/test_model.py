import numpy as np

from fmnist.model import build_cnn, build_dense


def test_spec_architecture():
    model = build_dense()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dropout"] * 4 + ["Dense"]
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [512, 256, 64, 32, 10]
    assert all(layer.rate == 0.3 for layer in model.layers if type(layer).__name__ == "Dropout")
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    with_input_dropout = build_dense((16,), 0.3, input_dropout=0.1)  # the `best` recipe's
    assert type(with_input_dropout.layers[0]).__name__ == "Dropout" and with_input_dropout.layers[0].rate == 0.1


def test_cnn_architecture_and_its_parameter_count_by_hand():
    model = build_cnn()
    kinds = [type(layer).__name__ for layer in model.layers]
    conv_block = ["Conv2D", "BatchNormalization", "ReLU"]
    last_conv_of_block = ["Conv2D", "MaxPooling2D", "BatchNormalization", "ReLU"]  # pooled before BatchNorm and ReLU
    assert kinds == (["Reshape"] + last_conv_of_block + conv_block + last_conv_of_block
                     + ["Flatten", "Dense", "BatchNormalization", "ReLU", "Dropout", "Dense"])
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    assert model.get_layer("flatten").output.shape == (None, 7 * 7 * 64)
    convolutions = 3 * 3 * 1 * 32 + 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64  # no biases: BatchNorm follows
    batchnorms = 4 * (32 + 64 + 64 + 256)  # gamma, beta, moving mean and variance
    dense = 7 * 7 * 64 * 256 + (256 * 10 + 10)
    assert model.count_params() == convolutions + batchnorms + dense


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
