import shutil

import keras
import numpy as np
import scipy.stats
import pytest

from fmnist import artifacts, model_files
from fmnist.calibration import apply_temperature
from fmnist.distill import (DistillationLoss, LabelAccuracy, ViewEpochs, distillation_labels, kept_answers,
                            load_teacher, pool_views, teacher_targets)
from fmnist.errors import FmnistError
from fmnist.settings import DISTILL_VIEW_POOL


def test_labels_are_the_one_hot_label_then_the_soft_targets():
    soft = np.full((2, 10), 0.1, dtype=np.float32)
    rows = distillation_labels(np.array([3, 0]), soft)
    assert rows.shape == (2, 20) and rows[0, 3] == 1 and rows[1, 0] == 1 and rows[:, :10].sum() == 2
    np.testing.assert_array_equal(rows[:, 10:], soft)
    views = distillation_labels(None, soft)  # a mixup view has no label: the teacher's answer alone
    assert views.shape == (2, 20) and not views[:, :10].any()
    np.testing.assert_array_equal(views[:, 10:], soft)


def test_loss_by_hand():
    """(1 - alpha) CE(label, p) + alpha T^2 KL(teacher || softmax(log p / T)) per image, averaged, computed with NumPy
    (the KL with SciPy's entropy)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 10))
    z[1] = [25, *[0] * 9]  # a student sure of an image (its other classes under 1e-7): the teacher still teaches
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    soft = rng.dirichlet(np.ones(10), size=4)
    labels = np.array([0, 3, 9, 2])
    y = distillation_labels(labels, soft.astype(np.float32))
    got = float(keras.ops.convert_to_numpy(DistillationLoss(4.0, 0.9)(y, p.astype(np.float32))))
    zt = z / 4
    log_softmax_t = zt - np.log(np.exp(zt).sum(1, keepdims=True))
    kl = scipy.stats.entropy(soft, np.exp(log_softmax_t), axis=1)
    expected = np.mean(0.1 * -np.log(p[np.arange(4), labels]) + 0.9 * 16 * kl)
    assert got == pytest.approx(expected, rel=1e-4)
    soft[0] = np.eye(10)[3]  # a target of zeros and a one: 0 * log 0 must not make it NaN
    y = distillation_labels(labels, soft.astype(np.float32))
    assert np.isfinite(float(keras.ops.convert_to_numpy(DistillationLoss(4.0, 1.0)(y, p.astype(np.float32)))))


def test_teacher_targets_undo_the_teachers_folded_temperature(tiny_run_dir):
    model, _ = model_files.load_model(tiny_run_dir)
    features = np.random.default_rng(0).random((8, 784)).astype(np.float32)
    folded = float(artifacts.read_json(tiny_run_dir / artifacts.CALIBRATION)["temperature"])
    probabilities = np.asarray(model.predict(features, verbose=0))
    targets = teacher_targets(load_teacher(str(tiny_run_dir)), features, temperature=4.0)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(targets, apply_temperature(probabilities, 4.0 / folded), rtol=1e-4, atol=1e-6)
    by_file = teacher_targets(load_teacher(str(tiny_run_dir / artifacts.MODEL)), features, temperature=4.0)
    np.testing.assert_allclose(by_file, targets, rtol=1e-6)
    recorded = (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    np.testing.assert_allclose(teacher_targets(load_teacher(str(tiny_run_dir), recorded), features, 4.0), targets,
                               rtol=1e-6)
    # Replaced since the student's run checked it and recorded its SHA-256: that run would learn from two teachers.
    with pytest.raises(FmnistError, match=f"--teacher {tiny_run_dir}: its model changed since this run began "
                                          f"\\(SHA-256 {'0' * 64} then, {recorded} now\\)"):
        load_teacher(str(tiny_run_dir), "0" * 64)


def test_a_teacher_model_copied_out_of_its_run_is_refused(tmp_path, tiny_run_dir):
    """Its temperature stays in the run: taken alone, the model's soft targets would be silently wrong."""
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(tiny_run_dir / name, tmp_path / name)
    with pytest.raises(FmnistError, match=f"no {artifacts.CONFIG} in {tmp_path}: a teacher must be a run"):
        load_teacher(str(tmp_path / artifacts.MODEL))


def test_kept_teacher_answers_are_used_only_whole_and_for_the_same_rows(tmp_path, caplog):
    path = tmp_path / artifacts.TEACHER_ANSWERS
    rng = np.random.default_rng(0)
    answers = {"images": rng.dirichlet(np.ones(10), 6).astype(np.float32),
               "views": rng.dirichlet(np.ones(10), 60).astype(np.float32)}
    assert kept_answers(path, "k1") is None and not caplog.text  # none kept: nothing to say
    np.savez(path, key=np.array("k1"), **answers)
    kept = kept_answers(path, "k1")
    assert kept.keys() == answers.keys() and all(np.array_equal(kept[n], answers[n]) for n in answers)
    refused = {
        "other rows": dict(key=np.array("k2"), **answers),
        "no key": answers,
        "no views": dict(key=np.array("k1"), images=answers["images"]),
        "NaN": dict(key=np.array("k1"), images=answers["images"], views=np.full((60, 10), np.nan, np.float32)),
        "float64": dict(key=np.array("k1"), images=answers["images"].astype(np.float64), views=answers["views"]),
    }
    for name, arrays in refused.items():
        np.savez(path, **arrays)
        caplog.clear()
        assert kept_answers(path, "k1") is None, name
        assert f"{path} is damaged or not for this run's images: the teacher answers again" in caplog.text, name
    np.savez(path, key=np.array("k1"), **answers)
    for damaged in (path.read_bytes()[:100], np.lib.format.magic(1, 0) + b"\0" * 50):  # cut short; a stray .npy
        path.write_bytes(damaged)
        assert kept_answers(path, "k1") is None


def test_pool_views_blend_two_training_images_by_a_seeded_share():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 784), dtype=np.uint8)
    views = pool_views(images, seed=7)
    assert views.dtype == np.uint8 and views.shape == (DISTILL_VIEW_POOL * 30, 784)
    np.testing.assert_array_equal(views, pool_views(images, seed=7))
    assert not np.array_equal(views, pool_views(images, seed=8))
    # Each view is one share of an image and the rest of another, the same share at every pixel (to rounding).
    low = np.minimum(images[:, None], images[None]).astype(float) - 0.5
    high = np.maximum(images[:, None], images[None]).astype(float) + 0.5
    for view in views[::7]:
        pairs = np.argwhere(((low <= view) & (view <= high)).all(axis=2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]  # an image blended with itself lies between it and any other
        assert len(pairs), "no two images it lies between"
        a, b = images[pairs[0]].astype(float)
        apart = np.abs(a - b) > 60  # pixels where the share can be read to within 1/120
        shares = (view[apart] - b[apart]) / (a - b)[apart]
        assert shares.max() - shares.min() < 0.02
    assert len({view.tobytes() for view in views}) > 0.9 * len(views)  # blends, not copies of the images


def test_cutmix_views_paste_a_square_of_another_image_and_leave_the_blends_as_they_were():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 784), dtype=np.uint8)  # random pixels: no two images share a square
    blends, mixed = pool_views(images, seed=7), pool_views(images, seed=7, cutmix=0.5)
    np.testing.assert_array_equal(mixed, pool_views(images, seed=7, cutmix=0.5))
    owners = np.tile(np.arange(len(images)), DISTILL_VIEW_POOL)  # view k is of image k % 40
    cut, areas = [], []
    for view, blend, owner in zip(mixed, blends, owners):
        if np.array_equal(view, blend):  # a blend: the same as without cutmix
            continue
        own = images[owner]
        cut.append(True)
        changed = (view != own).reshape(28, 28)
        if not changed.any():  # a box of 0 pixels (an area under 0.0003)
            areas.append(0.0)
            continue
        rows, columns = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        top, left, box = rows[0], columns[0], rows[-1] - rows[0] + 1
        assert columns[-1] - columns[0] + 1 == box  # a square, all of it from one other image
        square = view.reshape(28, 28)[top:top + box, left:left + box]
        matches = [i for i, other in enumerate(images)
                   if np.array_equal(other.reshape(28, 28)[top:top + box, left:left + box], square)]
        assert matches != [owner] and len(matches) == 1
        outside = np.ones((28, 28), bool)
        outside[top:top + box, left:left + box] = False
        np.testing.assert_array_equal(view.reshape(28, 28)[outside], own.reshape(28, 28)[outside])
        areas.append(box * box / 784)
    # Half the views picked (binomial: 200 +- 10 of 400), their area's share uniform on [0, 1] (mean 0.5 +- 0.02).
    assert 160 < len(cut) < 240 and abs(np.mean(areas) - 0.5) < 0.08
    assert scipy.stats.kstest(areas, "uniform").pvalue > 0.001


def test_each_epoch_takes_every_image_and_the_next_views_and_a_resume_sees_the_same():
    n, per_epoch = 12, 2
    features = np.arange(n, dtype=np.float32)[:, None].repeat(784, 1) / 255
    labels = np.eye(20, dtype=np.float32)[np.arange(n) % 10]
    views = np.repeat(np.arange(DISTILL_VIEW_POOL * n, dtype=np.uint8)[:, None], 784, 1)  # view k's pixels are k
    view_labels = distillation_labels(None, np.full((len(views), 10), 0.1, np.float32))
    batches = ViewEpochs(features, labels, views, view_labels, per_epoch, batch_size=5, seed=3)
    assert batches.num_batches is None and batches.batches_per_epoch == -(-n * (1 + per_epoch) // 5)

    def epoch(data: ViewEpochs, number: int) -> tuple[np.ndarray, np.ndarray]:  # by batch index, as fit reads
        first = number * data.batches_per_epoch
        x, y = zip(*(data[i] for i in range(first, first + data.batches_per_epoch)))
        return np.concatenate(x), np.concatenate(y)

    seen_views = []
    for number in range(DISTILL_VIEW_POOL // per_epoch):
        x, y = epoch(batches, number)
        original = y[:, :10].any(axis=1)
        # Every training image once, with its labels; the views with the teacher's answer alone.
        np.testing.assert_array_equal(np.sort(np.rint(x[original, 0] * 255)), np.arange(n))
        np.testing.assert_array_equal(y[original], labels[np.rint(x[original, 0] * 255).astype(int)])
        assert (y[~original, 10:] == np.float32(0.1)).all()
        taken = np.rint(x[~original, 0] * 255).astype(int)
        assert len(taken) == per_epoch * n and len(set(taken)) == len(taken)
        # The pool's views in turn: epoch 0 takes copies 0 and 1 of each image, epoch 1 copies 2 and 3, ...
        assert set(taken // n) == {per_epoch * number, per_epoch * number + 1}
        seen_views.extend(taken)
        assert not np.array_equal(x[original, 0], np.sort(x[original, 0]))  # shuffled
        if number == 2:  # a run resumed after two epochs reads from batch 0 what epoch 2 read
            resumed = ViewEpochs(features, labels, views, view_labels, per_epoch, batch_size=5, seed=3,
                                 initial_epoch=2)
            np.testing.assert_array_equal(epoch(resumed, 0)[0], x)
    assert sorted(seen_views) == list(range(DISTILL_VIEW_POOL * n))  # the whole pool, in turn
    assert not np.array_equal(epoch(batches, 0)[0], epoch(batches, DISTILL_VIEW_POOL // per_epoch)[0])  # new order


def test_label_accuracy_counts_the_rows_with_a_label_alone():
    soft = np.full((4, 10), 0.1, np.float32)
    targets = np.concatenate([distillation_labels(np.array([2, 5]), soft[:2]), distillation_labels(None, soft[2:])])
    predicted = np.eye(10, dtype=np.float32)[[2, 0, 0, 7]]  # one of the two labelled rows right; views ignored
    metric = LabelAccuracy()
    metric.update_state(targets, predicted)
    assert float(metric.result()) == 0.5
    metric.update_state(targets[2:], predicted[2:])  # a batch of views alone changes nothing
    assert float(metric.result()) == 0.5
    metric.reset_state()
    assert float(metric.result()) == 0.0
