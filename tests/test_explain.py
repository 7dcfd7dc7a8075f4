import numpy as np
import pytest

from fmnist.explain import EXPLAINED_MISTAKES, IMAGES_PER_BATCH, PATCH, occlusion_maps, report_explanations
from fmnist.predict import Classifier


def one_pixel_model(row: int, col: int):
    """Class 0's probability is pixel (row, col) itself; class 1 has the rest."""

    def predict(x: np.ndarray) -> np.ndarray:
        pixel = np.asarray(x).reshape(-1, 28, 28)[:, row, col]
        out = np.zeros((len(pixel), 10), np.float32)
        out[:, 0], out[:, 1] = pixel, 1 - pixel
        return out

    return predict


def linear_softmax(seed: int):
    weights = np.random.default_rng(seed).normal(size=(784, 10)).astype(np.float32) / 4

    def predict(x: np.ndarray) -> np.ndarray:
        logits = np.asarray(x, np.float64) @ weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return predict


def reference_map(predict, image: np.ndarray, label: int) -> np.ndarray:
    """Patch by patch, one forward pass each: the slow way the vectorised one must agree with."""
    base = predict(image.reshape(1, -1))[0, label]
    total, count = np.zeros((28, 28)), np.zeros((28, 28))
    for row in range(28 - PATCH + 1):
        for col in range(28 - PATCH + 1):
            blanked = image.copy()
            blanked[row:row + PATCH, col:col + PATCH] = 0
            total[row:row + PATCH, col:col + PATCH] += base - predict(blanked.reshape(1, -1))[0, label]
            count[row:row + PATCH, col:col + PATCH] += 1
    return total / count


def test_a_pixel_the_class_rests_on_is_weighted_by_the_patches_that_reach_it_by_hand():
    maps = occlusion_maps(one_pixel_model(5, 5), np.ones((1, 28, 28)), [0])[0]
    assert PATCH == 4  # the counts below are for 4x4 patches
    assert maps[5, 5] == 1.0  # every patch over (5, 5) blanks it
    assert maps[6, 5] == pytest.approx(12 / 16)  # 12 of the 16 patches over (6, 5) also cover (5, 5)
    assert maps[8, 8] == pytest.approx(1 / 16)  # only the patch starting at (5, 5)
    assert maps[2, 2] == pytest.approx(1 / 9)  # near the corner only 9 patches fit over (2, 2)
    assert maps[0, 0] == 0 and maps[9, 9] == 0 and maps[20, 20] == 0
    against = occlusion_maps(one_pixel_model(5, 5), np.ones((1, 28, 28)), [1])[0]
    np.testing.assert_allclose(against, -maps)  # the same pixels speak against the other class


def test_maps_of_many_images_and_classes_match_the_patch_by_patch_reference():
    rng = np.random.default_rng(0)
    images = rng.random((IMAGES_PER_BATCH + 3, 28, 28)).astype(np.float32)  # more than one forward call holds
    classes = rng.integers(0, 10, len(images))
    predict = linear_softmax(1)
    maps = occlusion_maps(predict, images, classes)
    assert maps.shape == (len(images), 28, 28)
    for i in (0, IMAGES_PER_BATCH - 1, IMAGES_PER_BATCH, len(images) - 1):
        np.testing.assert_allclose(maps[i], reference_map(predict, images[i].astype(np.float64), classes[i]),
                                   atol=1e-6)


def test_a_trained_keras_model_sees_nothing_in_empty_background(tiny_run_dir):
    image = np.zeros((28, 28), np.float32)
    image[10:20, 8:22] = 0.8
    classifier = Classifier(tiny_run_dir)
    label = int(classifier.probabilities(image[None]).argmax())
    evidence = occlusion_maps(classifier.probabilities, image[None], [label])[0]
    # Every patch over these pixels (3 or fewer pixels away) is blank already, the garment's too near ones not.
    for blank in (evidence[:7], evidence[23:], evidence[:, :5], evidence[:, 25:]):
        np.testing.assert_allclose(blank, 0, atol=1e-6)
    assert np.abs(evidence[10:20, 8:22]).max() > 1e-4  # the garment's pixels move the answer


@pytest.mark.parametrize("images, classes, message", [
    (np.zeros((2, 28, 28)), [3], "give one whole-number class per image"),
    (np.zeros((1, 28, 28)), [2.5], "give one whole-number class per image"),
    (np.zeros((1, 1568)), [0], "images must be n x 28 x 28 or n x 784"),
    (np.zeros((1, 28, 28)), [10], r"classes must lie in \[0, 10\)"),
    (np.zeros((1, 28, 28)), [-1], r"classes must lie in \[0, 10\)"),
])
def test_images_and_classes_that_do_not_fit_are_refused(images, classes, message):
    with pytest.raises(ValueError, match=message):
        occlusion_maps(linear_softmax(0), images, classes)


def test_no_images_give_no_maps():
    assert occlusion_maps(linear_softmax(0), np.zeros((0, 784)), []).shape == (0, 28, 28)


def test_report_explanations_take_each_class_clearest_right_answer_and_the_first_mistakes():
    rng = np.random.default_rng(2)
    y_true = np.array([0, 0, 1, 2, 2, 0, 2])
    probabilities = np.full((7, 10), 0.01)
    for i, (label, p) in enumerate([(0, 0.6), (0, 0.9), (3, 0.7), (2, 0.8), (2, 0.5), (4, 0.9), (5, 0.4)]):
        probabilities[i, label] = p
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)  # 8-bit, as the test set is stored
    pixels = images / 255
    mistakes = np.array([5, 2, 6])  # most confident first, as metrics.most_confident_mistakes orders them
    predict = linear_softmax(3)
    result = report_explanations(predict, images, y_true, probabilities, mistakes)
    # The clearest is last of class 0, first of class 2; class 1 was never right: no example.
    np.testing.assert_array_equal(result["example_indices"], [1, 3])
    np.testing.assert_array_equal(result["example_images"], images[[1, 3]])
    np.testing.assert_allclose(result["example_maps"], occlusion_maps(predict, pixels[[1, 3]], [0, 2]), atol=1e-6)
    assert result["mistake_maps"].shape == (3, 2, 28, 28)
    np.testing.assert_allclose(result["mistake_maps"][:, 0], occlusion_maps(predict, pixels[mistakes], [4, 3, 5]),
                               atol=1e-6)  # for the class predicted
    np.testing.assert_allclose(result["mistake_maps"][:, 1], occlusion_maps(predict, pixels[mistakes], [0, 1, 2]),
                               atol=1e-6)  # for the true class
    many = report_explanations(predict, images, y_true, probabilities, np.tile(mistakes, 4))
    assert len(many["mistake_maps"]) == EXPLAINED_MISTAKES
