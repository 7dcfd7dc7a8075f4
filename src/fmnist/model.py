"""The models: the spec's dense network (784 -> [Dense -> BatchNorm -> ReLU -> Dropout] x N -> softmax 10) and the
small ConvNet of `--recipe cnn`."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from fmnist.facts import IMAGE_SIDE, NUM_CLASSES, NUM_FEATURES
from fmnist.settings import TrainSettings


def build_dense(
    hidden_sizes: Sequence[int] = (512, 256, 64, 32), dropout: float = 0.3, input_dropout: float = 0.0
) -> keras.Model:
    """One block per hidden size; its arguments live in the model's config, so a saved model needs nothing else."""
    model = keras.Sequential(name="fmnist_dense")
    model.add(keras.Input(shape=(NUM_FEATURES,), name="pixels"))
    if input_dropout:
        model.add(layers.Dropout(input_dropout, name="input_dropout"))
    for i, units in enumerate(hidden_sizes):
        model.add(layers.Dense(units, name=f"dense_{i}"))
        model.add(layers.BatchNormalization(name=f"batchnorm_{i}"))
        model.add(layers.ReLU(name=f"relu_{i}"))
        model.add(layers.Dropout(dropout, name=f"dropout_{i}"))
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return model


# The ConvNet's filters per block (each block ends in a max-pool) and the width of its Dense head.
CNN_BLOCKS = ((32,), (64, 64))
CNN_HEAD = 256


def build_cnn(dropout: float = 0.5) -> keras.Model:
    """A ConvNet reference: per block 3x3 convolutions then a max-pool, each followed by BatchNorm and ReLU; a Dense
    head."""
    model = keras.Sequential(name="fmnist_cnn")
    model.add(keras.Input(shape=(NUM_FEATURES,), name="pixels"))  # same flat input as the dense net
    model.add(layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1), name="image"))
    for i, block in enumerate(CNN_BLOCKS):
        for j, filters in enumerate(block):
            model.add(layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{i}_{j}"))
            if j == len(block) - 1:
                # Pooling before BatchNorm and ReLU gives them a quarter of the pixels (49 s instead of 60 s per
                # 60,000 images on a 2-core CPU). Not the same network as pooling after them (BatchNorm's batch
                # statistics are then of the pooled pixels, and its learned scale may be negative), but it trained
                # as well on validation (docs/recipes.md).
                model.add(layers.MaxPooling2D(name=f"pool_{i}"))
            model.add(layers.BatchNormalization(name=f"batchnorm_conv_{i}_{j}"))
            model.add(layers.ReLU(name=f"relu_conv_{i}_{j}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dense(CNN_HEAD, use_bias=False, name="dense_head"))
    model.add(layers.BatchNormalization(name="batchnorm_head"))
    model.add(layers.ReLU(name="relu_head"))
    model.add(layers.Dropout(dropout, name="dropout_head"))
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return model


def build_model(settings: TrainSettings) -> keras.Model:
    """The network that ``settings`` describe, dense or ConvNet."""
    if settings.architecture == "cnn":
        return build_cnn(settings.dropout)
    return build_dense(settings.hidden_sizes, settings.dropout, settings.input_dropout)
