"""Occlusion sensitivity: which parts of an image a model's answer rests on, found with forward passes alone.

Each 4x4 patch of the image is blanked in turn (set to 0, the black background every Fashion-MNIST image and every
prepared photo has) and the fall of one class's probability is spread over the pixels the patch covered. Forward
passes only, so it works for any model on any Keras backend; no library does this for Keras 3 on both backends.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fmnist.data import IMAGE_SIDE

PATCH = 4  # pixels a side: about a collar, a strap or a heel at 28 x 28
IMAGES_PER_CALL = 16  # 16 x 626 rows of 784 float32 per forward call: about 31 MiB


def _patch_masks(patch: int) -> np.ndarray:
    """One 28x28 mask per patch position, 0 inside the patch and 1 elsewhere."""
    positions = IMAGE_SIDE - patch + 1
    masks = np.ones((positions, positions, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    for row in range(positions):
        for col in range(positions):
            masks[row, col, row:row + patch, col:col + patch] = 0.0
    return masks.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def occlusion_maps(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, classes: np.ndarray, patch: int = PATCH
) -> np.ndarray:
    """How much blanking each pixel's neighbourhood lowers the probability of ``classes[i]`` in ``images[i]``.

    ``predict`` maps float32 rows of 784 pixels in [0, 1] to probabilities; the result is n x 28 x 28, positive
    where the pixels speak for the class, negative where they speak against it, 0 on empty background.
    """
    images = np.asarray(images, dtype=np.float32).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(classes) != len(images):
        raise ValueError(f"{len(images)} images but {len(classes)} classes")
    masks = _patch_masks(patch)
    covered = 1.0 - masks  # 1 where a patch blanks the pixel
    coverage = covered.sum(axis=0)  # patches over each pixel: 1 at the corners, up to patch**2 inside
    maps = np.empty_like(images)
    for start in range(0, len(images), IMAGES_PER_CALL):
        chunk = images[start:start + IMAGES_PER_CALL]
        # Each image, then each of its occluded copies, in one call.
        variants = np.concatenate([chunk[:, None], chunk[:, None] * masks[None]], axis=1)
        probabilities = np.asarray(predict(variants.reshape(-1, IMAGE_SIDE * IMAGE_SIDE)))
        probabilities = probabilities.reshape(len(chunk), len(masks) + 1, -1)
        target = probabilities[np.arange(len(chunk)), :, classes[start:start + len(chunk)]]
        falls = target[:, :1] - target[:, 1:]  # image x patch position
        maps[start:start + len(chunk)] = np.tensordot(falls, covered, axes=1) / coverage
    return maps


EXPLAINED_MISTAKES = 8  # the report explains the first of the most confident mistakes, as many as one row holds


def report_explanations(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
    mistake_indices: np.ndarray,
) -> dict[str, np.ndarray]:
    """Occlusion maps for a report: each class's most confident correct test image, and the most confident mistakes
    (for the class predicted and for the true one). Arrays named as test_predictions.npz stores them."""
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
    example_maps, for_predicted, for_true = np.split(occlusion_maps(predict, images[chosen], classes),
                                                     [len(examples), len(examples) + len(mistakes)])
    return {
        "example_indices": examples,
        "example_maps": example_maps,
        "mistake_maps": np.stack([for_predicted, for_true], axis=1),  # mistake x (predicted, true) x 28 x 28
    }
