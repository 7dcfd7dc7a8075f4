"""fmnist: train, evaluate, explain and serve a Fashion-MNIST classifier built with Keras 3."""

__version__ = "0.1.0"
