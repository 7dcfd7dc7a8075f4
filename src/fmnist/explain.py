"""Occlusion maps: which parts of an image a model's answer rests on, found by blanking 4x4 patches in turn; forward
passes only, so they work for any model, dense or ConvNet, on either Keras backend."""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np

from fmnist.facts import IMAGE_SIDE, NUM_FEATURES

# Patches are blanked to 0, the black background of every Fashion-MNIST image and of every photo fmnist prepares.
PATCH = 4  # pixels a side: about a collar, a strap or a heel at 28 x 28
POSITIONS = (IMAGE_SIDE - PATCH + 1) ** 2  # 625 blanked copies of each image
IMAGES_PER_BATCH = 16  # 16 x 626 rows of 784 float32 per forward call: 31 MB, about twice that at the peak
EXPLAINED_MISTAKES = 8  # the report explains the first of the most confident mistakes, as many as one row holds
# A map whose largest change of probability is under this is drawn faded in proportion (the page does the same):
# an answer no patch moves by a point has no region it rests on.
FAINT_BELOW = 0.01

Batch = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]


@functools.lru_cache(maxsize=1)
def _covered() -> np.ndarray:
    """One 28x28 mask per patch position, 1 where the patch blanks the pixel (read only: it is shared)."""
    side = IMAGE_SIDE - PATCH + 1
    covered = np.zeros((side, side, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    for row in range(side):
        for col in range(side):
            covered[row, col, row:row + PATCH, col:col + PATCH] = 1.0
    covered.flags.writeable = False
    return covered.reshape(POSITIONS, IMAGE_SIDE, IMAGE_SIDE)


def occlusion_batches(images: np.ndarray, classes: np.ndarray) -> Iterator[Batch]:
    """Per batch of images: the rows to predict (each image, then its 625 blanked copies) and a function that turns
    their probabilities into the batch's maps. For callers that predict asynchronously, as the server does."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] not in ((IMAGE_SIDE, IMAGE_SIDE), (NUM_FEATURES,)):
        raise ValueError(f"images must be n x 28 x 28 or n x 784, not {images.shape}")
    images = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(images) or (len(classes) and not np.issubdtype(classes.dtype, np.integer)):
        raise ValueError(f"give one whole-number class per image: {len(images)} images, classes {classes[:5]}")
    covered = _covered()
    coverage = covered.sum(axis=0)  # patches over each pixel: 1 at the corners, up to 16 inside

    def finish(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(probabilities).reshape(len(labels), POSITIONS + 1, -1)
        if labels.min() < 0 or labels.max() >= probabilities.shape[2]:
            raise ValueError(f"classes must lie in [0, {probabilities.shape[2]}), not {labels}")
        target = probabilities[np.arange(len(labels)), :, labels]
        falls = target[:, :1] - target[:, 1:]  # image x patch position
        return np.tensordot(falls, covered, axes=1) / coverage

    for start in range(0, len(images), IMAGES_PER_BATCH):
        chunk, labels = images[start:start + IMAGES_PER_BATCH], classes[start:start + IMAGES_PER_BATCH]
        rows = np.concatenate([chunk[:, None], chunk[:, None] * (1.0 - covered)[None]], axis=1)
        yield rows.reshape(-1, NUM_FEATURES), functools.partial(finish, labels=labels)


def occlusion_maps(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """n x 28 x 28: how much blanking the patches over each pixel lowers the probability of ``classes[i]`` (mean
    over those patches; 0 where all were blank already). ``predict``: 784-pixel rows to probabilities."""
    maps = [finish(predict(rows)) for rows, finish in occlusion_batches(images, classes)]
    return np.concatenate(maps) if maps else np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.float32)


def report_explanations(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
    mistake_indices: np.ndarray,
) -> dict[str, np.ndarray]:
    """The occlusion maps a report draws (artifacts.EXPLANATION_ARRAYS), for 8-bit test ``images``: each class's most
    confidently right image, and the first mistakes, for the class predicted and for the true one."""
    y_pred = probabilities.argmax(axis=1)
    examples = []
    for label in np.unique(y_true):
        correct = np.flatnonzero((y_true == label) & (y_pred == label))
        if len(correct):  # a barely trained model may get a class wrong every time
            examples.append(correct[np.argmax(probabilities[correct, label])])
    examples = np.asarray(examples, dtype=np.int64)
    mistakes = np.asarray(mistake_indices[:EXPLAINED_MISTAKES], dtype=np.int64)
    chosen = np.concatenate([examples, mistakes, mistakes])
    classes = np.concatenate([y_true[examples], y_pred[mistakes], y_true[mistakes]])
    maps = occlusion_maps(predict, images[chosen].astype(np.float32) / 255.0, classes)
    example_maps, for_predicted, for_true = np.split(maps, [len(examples), len(examples) + len(mistakes)])
    return {
        "example_indices": examples,
        "example_images": images[examples],
        "example_maps": example_maps,
        "mistake_maps": np.stack([for_predicted, for_true], axis=1),  # mistake x (predicted, true) x 28 x 28
    }
