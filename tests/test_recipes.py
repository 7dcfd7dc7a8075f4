import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from fmnist import artifacts, runs
from fmnist.data import load_dataset, to_features
from fmnist.errors import FmnistError
from fmnist.recipes import closest_recipe, recipe_settings, recipe_text
from fmnist.settings import RECIPES, TrainSettings
from fmnist.train import train


def test_spec_recipe_is_the_default_settings():
    assert recipe_settings("spec") == TrainSettings()


def test_flags_override_a_recipe_and_unknowns_are_errors():
    s = recipe_settings("best", epochs=3)
    assert s.epochs == 3 and s.schedule == "cosine" and s.hidden_sizes == tuple(RECIPES["best"]["hidden_sizes"])
    with pytest.raises(FmnistError, match="unknown recipe"):
        recipe_settings("fastest")
    with pytest.raises(FmnistError, match="needs optimizer adamw"):
        recipe_settings("spec", weight_decay=1e-4)
    with pytest.raises(FmnistError, match=r"^invalid setting: --epochs must be more than the recipe's learning-rate "
                                          r"warm-up \(1 epoch\): 2 or more$"):  # in the flags the user typed
        recipe_settings("best", epochs=1)
    with pytest.raises(FmnistError, match="warmup_epochs must be >= 0, and needs schedule cosine"):
        recipe_settings("spec", warmup_epochs=1)


@pytest.mark.parametrize("recipe, overrides, refusal", [
    ("best", {"lr_factor": 0.5, "epochs": 3}, "--recipe best runs a cosine schedule for its fixed epochs, so "
                                              "--lr-factor would do nothing"),
    ("distilled", {"teacher": "t", "early_stopping_patience": 2, "lr_patience": 1}, "--early-stopping-patience, "
                                                                                    "--lr-patience would do nothing"),
    ("cnn", {"hidden_sizes": (16,)}, "--recipe cnn is a ConvNet, so --hidden-sizes would do nothing"),
    ("spec", {"teacher": "t"}, "--teacher is for --recipe distilled"),
    ("cnn", {"teacher": "t"}, "--recipe cnn learns from the labels alone: leave --teacher out"),
])
def test_a_setting_the_recipe_would_ignore_is_an_error(recipe, overrides, refusal):
    with pytest.raises(FmnistError, match=refusal):
        recipe_settings(recipe, **overrides)
    assert recipe_settings("spec", lr_factor=0.5, hidden_sizes=(16,)).lr_factor == 0.5  # the spec reads them all


@pytest.mark.parametrize("recipe", ["best", "cnn"])
def test_other_recipes_train_end_to_end_on_tiny_data(tmp_path, tiny_data, recipe, caplog):
    folder, sums = tiny_data
    dense = {"hidden_sizes": (16, 16)} if recipe != "cnn" else {}
    settings = recipe_settings(recipe, epochs=2, batch_size=16, validation_fraction=0.2, **dense)
    with caplog.at_level(logging.INFO, logger="fmnist"):
        result = train(settings, "jax", runs_dir=tmp_path, dataset=load_dataset(folder, checksums=sums))
    assert "batch 16, 2 epochs)" in caplog.text  # a schedule's epochs all run: not "up to 2 epochs"
    history = artifacts.read_history(result.run_dir)
    assert result.epochs_run == 2 and len(history["accuracy"]) == 2
    # Each epoch's learning rate where it began (not the next step's, 0 after the last): "best" warms up from a
    # twentieth of its peak over its first epoch; "cnn" starts at its peak and is halfway down its cosine by epoch 2.
    peak = settings.learning_rate
    expected = [peak / 20, peak] if settings.warmup_epochs else [peak, peak / 2]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(result.metrics["test_loss"])
    page = (result.run_dir / artifacts.REPORT_HTML).read_text()
    assert "<th scope=row>epochs run / kept</th><td>2 / 2 (the last, as the schedule fixes)</td>" in page
    assert "lr_patience" not in page  # only what was used: a ConvNet has no dense sizes or pixel dropout
    assert all((f"<th scope=row>{name}</th>" in page) == (recipe != "cnn")
               for name in ("hidden_sizes", "input_dropout"))


def test_too_small_a_split_is_a_clear_error(tmp_path, tiny_data):
    folder, sums = tiny_data
    with pytest.raises(FmnistError, match="cannot hold all 10 classes"):
        train(recipe_settings("best", epochs=2), "jax", runs_dir=tmp_path, dataset=load_dataset(folder, checksums=sums))


TENSORFLOW_STUDENT = """
import json, sys
from pathlib import Path
import keras
import tensorflow as tf
from fmnist.data import load_dataset
from fmnist.recipes import recipe_settings
from fmnist.train import train

folder, checksums = Path(sys.argv[1]), json.loads(sys.argv[2])
dataset = load_dataset(folder, checksums=checksums)
tiny = dict(hidden_sizes=(8,), epochs=2, batch_size=16, validation_fraction=0.2)
teacher = train(recipe_settings("spec", **tiny), "tensorflow", runs_dir=folder / "runs", dataset=dataset)
validation = []
real_fit = keras.Model.fit

def fit(self, *args, **kwargs):  # Keras' own fit, with what it validates on noted
    validation.append(kwargs["validation_data"])
    return real_fit(self, *args, **kwargs)

keras.Model.fit = fit
student = train(recipe_settings("distilled", teacher=str(teacher.run_dir), **tiny), "tensorflow",
                runs_dir=folder / "runs", dataset=dataset)
given, = validation
print(json.dumps({"epochs": student.epochs_run, "accuracy": student.metrics["test_accuracy"],
                  "pipeline": isinstance(given, tf.data.Dataset),
                  "autotune": isinstance(given, tf.data.Dataset) and given.options().autotune.enabled}))
"""


def test_a_student_with_mixup_views_trains_on_tensorflow_through_our_own_validation_pipeline(tmp_path):
    # Keras' own autotuned pipeline made epochs up to 1.5 times slower at random there (fmnist.backend.fit_inputs).
    from conftest import write_idx_set

    checksums = write_idx_set(tmp_path)
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_STUDENT, str(tmp_path), json.dumps(checksums)],
                            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["epochs"] == 2 and 0.0 <= out["accuracy"] <= 1.0
    assert out["pipeline"] is True and out["autotune"] is False


def test_the_distilled_recipe_is_the_one_round_10_chose_on_validation(tiny_run_dir, monkeypatch):
    monkeypatch.chdir(tiny_run_dir.parent)  # its teacher, given by name, kept as the run's absolute path
    settings = recipe_settings("distilled", runs_dir=".", teacher=tiny_run_dir.name)
    assert settings.teacher == str(tiny_run_dir.resolve())
    assert (settings.hidden_sizes, settings.batch_size, settings.learning_rate, settings.epochs) == (
        (1024, 1024, 1024), 256, 2.8e-3, 30)
    assert (settings.distill_views, settings.distill_cutmix, settings.dropout) == (3, 0.5, 0.2)


def test_student_learns_from_a_teacher_run(tmp_path, tiny_data, caplog):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    tiny = dict(epochs=2, batch_size=16, validation_fraction=0.2)
    teacher = train(recipe_settings("spec", hidden_sizes=(16,), **tiny), "jax", runs_dir=tmp_path, dataset=dataset)
    with pytest.raises(FmnistError, match="needs --teacher"):
        recipe_settings("distilled")
    settings = recipe_settings("distilled", teacher=str(teacher.run_dir), hidden_sizes=(16,), limit=50,
                               distill_temperature=2.5, distill_alpha=0.7, **tiny)  # not the defaults: passed on
    # The recipe's: each epoch, three views of each image besides it, from a pool half cutmix and half mixup.
    assert (settings.distill_views, settings.distill_cutmix) == (3, 0.5)

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            steps.append(self.params["steps"])

    steps: list[int] = []
    with caplog.at_level(logging.INFO, logger="fmnist"):
        student = train(settings, "jax", runs_dir=tmp_path, dataset=dataset, extra_callbacks=[Steps()])
    assert "answers for the 50 images the student trains" in caplog.text  # not all 60: --limit leaves 10 out
    # Its validation images, split otherwise than the teacher's, are partly ones the teacher trained on: said.
    from fmnist.distill import taught_to_the_teacher

    with np.load(teacher.run_dir / artifacts.SPLIT) as taught, np.load(student.run_dir / artifacts.SPLIT) as split:
        seen = len(np.intersect1d(taught["train"], split["validation"]))
        assert taught_to_the_teacher(str(teacher.run_dir), taught["validation"]) == 0
        assert taught_to_the_teacher(str(teacher.run_dir), taught["train"]) == len(taught["train"])
    assert seen > 0 and f"{seen} of the 10 validation images are ones the teacher trained on" in caplog.text
    assert "answers for the 400 views of them" in caplog.text  # ten of each of the 40 it trains on
    assert "training on 40 images and 120 views of them an epoch" in caplog.text
    assert steps == [-(-160 // 16)]
    history = artifacts.read_history(student.run_dir)
    assert len(history["accuracy"]) == 2 and np.isfinite(history["val_loss"]).all()
    config = artifacts.read_json(student.run_dir / artifacts.CONFIG)
    assert config["teacher_sha256"] == (teacher.run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    # What it learned from: the labels beside the teacher's answers softened at its temperature, weighed by its
    # alpha (the loss itself is checked by hand in test_distill.py).
    assert not (student.run_dir / artifacts.TEACHER_ANSWERS).exists()  # kept only while a resume may need them
    from fmnist.distill import DistillationLoss, load_teacher, pool_views, teacher_answers, teacher_targets
    from fmnist.model import build_model
    from fmnist.recipes import compile_model, training_labels

    features, pixels = to_features(dataset.x_train[:8]), dataset.x_train[:8].reshape(8, -1)
    soft, views, view_labels = teacher_answers(settings, tmp_path, features, pixels, sha256=None)
    labels = training_labels(dataset.y_train[:8], settings, soft)
    np.testing.assert_array_equal(labels[:, :10], np.eye(10)[dataset.y_train[:8]])
    loaded = load_teacher(str(teacher.run_dir))
    np.testing.assert_allclose(labels[:, 10:], teacher_targets(loaded, features, 2.5), atol=1e-6)
    np.testing.assert_array_equal(views, pool_views(pixels, settings.seed, 0.5))
    assert not view_labels[:, :10].any()  # a view has no label: the teacher's answer alone
    np.testing.assert_allclose(view_labels[:, 10:], teacher_targets(loaded, views, 2.5), atol=1e-6)
    # Kept for a resume, and used only for the same rows, teacher and temperature.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmnist"):
        again = teacher_answers(settings, tmp_path, features, pixels, sha256=None)
        assert "the teacher's answers kept by" in caplog.text and "answers for" not in caplog.text
        np.testing.assert_array_equal(again[0], soft)
        hotter = teacher_answers(dataclasses.replace(settings, distill_temperature=5.0), tmp_path, features, pixels,
                                 sha256=None)
    assert "is damaged or not for this run's images: the teacher answers again" in caplog.text
    np.testing.assert_allclose(hotter[0], teacher_targets(loaded, features, 5.0), atol=1e-6)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmnist"):  # other images, as another seed's split would give
        others = teacher_answers(settings, tmp_path, features[::-1].copy(), pixels[::-1].copy(), sha256=None)
    assert "is damaged or not for this run's images: the teacher answers again" in caplog.text
    np.testing.assert_allclose(others[0], soft[::-1], atol=1e-6)
    blends = dataclasses.replace(settings, distill_cutmix=0.0)  # a pool of blends alone, not the kept half-cutmix one
    np.testing.assert_array_equal(teacher_answers(blends, tmp_path, features, pixels, sha256=None)[1],
                                  pool_views(pixels, settings.seed))
    assert not np.array_equal(views, pool_views(pixels, settings.seed))
    # A run folder that cannot keep them (here a file): the training goes on without, a resume asks again.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    caplog.clear()
    np.testing.assert_allclose(teacher_answers(settings, blocked, features, pixels, sha256=None)[0], soft, atol=1e-6)
    assert "could not keep the teacher's answers for a resume" in caplog.text
    model = build_model(settings)
    compile_model(model, settings, steps_per_epoch=1, steps_per_execution=1)
    assert isinstance(model.loss, DistillationLoss) and (model.loss.temperature, model.loss.alpha) == (2.5, 0.7)

    # Resumed after its teacher was trained again, the student would learn from two teachers: refused.
    artifacts.write_json(student.run_dir / artifacts.CONFIG, {**config, "teacher_sha256": "0" * 64})
    runs.set_status(student.run_dir, runs.INTERRUPTED)
    with pytest.raises(FmnistError, match=f"--teacher {teacher.run_dir}: its model changed since "
                                          f"{student.run_dir.name} began .* restore that teacher's model"):
        train(settings, "jax", dataset=dataset, resume_dir=student.run_dir)
    assert artifacts.read_history(student.run_dir) == history  # refused before anything was touched


def test_closest_recipe_names_the_preset_and_counts_changes():
    for name, preset in RECIPES.items():
        teacher = {"teacher": "/runs/cnn"} if name == "distilled" else {}
        assert closest_recipe(TrainSettings.from_dict({**preset, **teacher}).to_dict()) == name
    # Taught, however far its settings went towards "best": only "distilled" takes a teacher.
    taught = {**RECIPES["distilled"], "teacher": "/runs/cnn", "dropout": 0.3, "learning_rate": 4e-3, "batch_size": 512}
    assert closest_recipe(TrainSettings.from_dict(taught).to_dict()) == "distilled with 3 settings changed"
    spec_dropout = TrainSettings(dropout=0.1, epochs=3, limit=500, name="x").to_dict()
    assert closest_recipe(spec_dropout) == "spec with dropout 0.1"
    two = TrainSettings(dropout=0.1, hidden_sizes=(64, 32)).to_dict()
    assert closest_recipe(two) == "spec with dropout 0.1, hidden_sizes 64-32"  # named up to two, each with its value
    tuned = TrainSettings(dropout=0.28374619283746194, learning_rate=0.0007346192837461928).to_dict()
    assert closest_recipe(tuned) == "spec with dropout 0.284, learning_rate 0.000735"  # as fmnist runs gives a rate
    assert closest_recipe({"dropout": 0.3}) == "spec"  # settings an older version did not have are defaults


def test_the_recipe_is_said_with_what_it_changes_in_the_spec_and_what_the_run_changed_in_it():
    assert recipe_text(TrainSettings().to_dict()) == "the spec's"
    spec_changed = TrainSettings(hidden_sizes=(32, 16), epochs=2).to_dict()
    assert recipe_text(spec_changed) == "the spec's, with hidden_sizes 32-16"
    said = recipe_text({**recipe_settings("best").to_dict(), "hidden_sizes": [32], "dropout": 0.25})
    head, changed = said.split("), and this run's ")
    assert changed == "dropout 0.25, hidden_sizes 32" and head.startswith("best (the spec's with ")
    best, spec = recipe_settings("best").to_dict(), TrainSettings().to_dict()
    assert head.removeprefix("best (the spec's with ").split(", ") == [  # the recipe's own values, each named
        f"{k} {'-'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in sorted(best.items())
        if v != spec[k] and k not in ("name", "epochs", "seed")]


def test_a_teacher_is_kept_as_an_absolute_path_so_a_resume_from_elsewhere_finds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "runs" / "20261130T000000Z-cnn"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text("{}")
    for given in ("runs/20261130T000000Z-cnn", Path("runs/20261130T000000Z-cnn"), "20261130T000000Z-cnn"):
        assert recipe_settings("distilled", teacher=given).teacher == str(teacher.resolve())
    given = "runs/20261130T000000Z-cnn/model.keras"
    assert recipe_settings("distilled", teacher=given).teacher == str((teacher / "model.keras").resolve())
    # Without the distilled recipe, a teacher (even one not found) is refused for that, not looked for.
    with pytest.raises(FmnistError, match="^--teacher is for --recipe distilled"):
        recipe_settings("cnn", teacher="no-such-run")
    with pytest.raises(FmnistError, match="^--teacher: no run 'no-such-run'"):  # which of the runs given it is
        recipe_settings("distilled", teacher="no-such-run")
