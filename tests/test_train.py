import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmnist import artifacts, model_files, run_list, runs
from fmnist.data import load_dataset, to_features
from fmnist.errors import FmnistError, WriteRefused
from fmnist.resume import resume_run
from fmnist.settings import TrainSettings
from fmnist.train import VALIDATION_BATCH_SIZE, fit, split_indices, train

from conftest import write_backup_record, write_idx_set

EXPECTED_FILES = {
    artifacts.CONFIG, artifacts.SPLIT, artifacts.HISTORY, artifacts.MODEL, artifacts.MODEL_SHA256, artifacts.METRICS,
    artifacts.CLASSIFICATION_REPORT, artifacts.CONFUSION_MATRIX_PNG, artifacts.CURVES_PNG,
    artifacts.MISCLASSIFIED_PNG, artifacts.REPORT_HTML, artifacts.STATUS, artifacts.PREDICTIONS,
    artifacts.CALIBRATION, artifacts.RELIABILITY_PNG,
    artifacts.EVIDENCE_CLASSES_PNG, artifacts.EVIDENCE_MISTAKES_PNG,  # the tiny run gets some classes right, some wrong
}


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    s = TrainSettings(seed=7)
    train_idx, val_idx = split_indices(labels, s)
    assert len(val_idx) == 200 and not set(train_idx) & set(val_idx)
    assert np.bincount(labels[val_idx]).tolist() == [20] * 10
    again = split_indices(labels, s)
    np.testing.assert_array_equal(train_idx, again[0])
    other = split_indices(labels, TrainSettings(seed=8))
    assert not np.array_equal(val_idx, other[1])


def test_limit_takes_a_stratified_subset():
    labels = np.repeat(np.arange(10), 100)
    train_idx, val_idx = split_indices(labels, TrainSettings(limit=200))
    assert len(train_idx) + len(val_idx) == 200
    assert np.bincount(labels[np.concatenate([train_idx, val_idx])]).tolist() == [20] * 10
    for limit in (991, 999):  # fewer than 10 left out: too few to stratify, but the limit holds
        train_idx, val_idx = split_indices(labels, TrainSettings(limit=limit))
        assert len(set(train_idx) | set(val_idx)) == limit and len(val_idx) == round(limit * 0.2)
        assert np.array_equal(split_indices(labels, TrainSettings(limit=limit))[1], val_idx)  # seeded


@pytest.mark.parametrize("overrides, refusal", [
    ({"limit": 20}, "cannot hold all 10 classes"),
    ({"limit": 61}, "--limit 61: the training set has 60 images"),
    ({"teacher": "/nonexistent/run"}, "--teacher /nonexistent/run: no model"),
])
def test_what_would_fail_mid_run_is_refused_before_a_run_directory_is_made(tmp_path, tiny_data, overrides, refusal):
    with pytest.raises(FmnistError, match=refusal):
        tiny_run(tmp_path, tiny_data, **overrides)
    assert not (tmp_path / "runs").exists()


def test_a_teacher_model_copied_out_of_its_run_is_refused_before_a_run_directory_is_made(tmp_path, tiny_data,
                                                                                       tiny_run_dir):
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(tiny_run_dir / name, loose / name)
    refusal = f"--teacher {loose / artifacts.MODEL}: no {artifacts.CONFIG} in {loose}: a teacher must be a run"
    with pytest.raises(FmnistError, match=re.escape(refusal)):
        tiny_run(tmp_path, tiny_data, teacher=str(loose / artifacts.MODEL))
    assert not (tmp_path / "runs").exists()


def test_a_teacher_whose_model_cannot_be_loaded_is_refused_before_a_run_directory_is_made(tmp_path, tiny_data,
                                                                                         tiny_run_dir):
    import keras

    teacher = shutil.copytree(tiny_run_dir, tmp_path / "teacher")
    other = keras.Sequential([keras.Input((100,)), keras.layers.Dense(3, activation="softmax")])
    other.save(teacher / artifacts.MODEL)  # another task's model, with a checksum to match
    (teacher / artifacts.MODEL_SHA256).write_text(artifacts.sha256_file(teacher / artifacts.MODEL) + "\n")
    refusal = f"--teacher {teacher}: {teacher} maps 100 features to 3 classes, not 784 pixels to 10 classes"
    with pytest.raises(FmnistError, match=f"^{re.escape(refusal)}$"):
        tiny_run(tmp_path, tiny_data, teacher=str(teacher))
    assert not (tmp_path / "runs").exists()


def test_a_teacher_that_has_not_finished_training_is_refused_with_how_to_finish_it(tmp_path, tiny_data, tiny_run_dir):
    from fmnist import runs

    teacher = shutil.copytree(tiny_run_dir, tmp_path / "teacher")
    runs.set_status(teacher, runs.INTERRUPTED)  # stopped after its model was saved, before it was marked finished
    write_backup_record(teacher, len(artifacts.read_history(teacher)["loss"]), stopped=True)
    refusal = f"--teacher {teacher}: {teacher} has not finished training: 'fmnist train --resume {teacher}' finishes it"
    with pytest.raises(FmnistError, match=re.escape(refusal)):
        tiny_run(tmp_path, tiny_data, teacher=str(teacher))
    assert not (tmp_path / "runs").exists()


def test_a_stop_a_library_turns_into_an_error_of_its_own_leaves_the_run_interrupted_not_failed(tmp_path, tiny_data):
    import signal

    import keras

    from fmnist import stopping

    class StoppedInsideALibrary(keras.callbacks.Callback):
        """Ctrl-C during epoch 2, which the library it lands in raises as an error of its own."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                try:
                    stopping.stop(signal.SIGINT)  # as the handler of a Ctrl-C does
                except KeyboardInterrupt:
                    raise RuntimeError("MISMATCH of original and normalized active exception types") from None

    folder, sums = tiny_data
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=3, batch_size=16, name="tiny")
    with stopping.handled(), pytest.raises(stopping.RunStopped) as stop:
        train(settings, "jax", runs_dir=tmp_path / "runs", dataset=load_dataset(folder, checksums=sums),
              extra_callbacks=[StoppedInsideALibrary()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (stop.value.run_dir, stop.value.state) == (run_dir, runs.INTERRUPTED)
    assert artifacts.read_json(run_dir / artifacts.STATUS)["state"] == runs.INTERRUPTED


def test_a_run_that_diverges_after_its_first_epoch_keeps_no_backup_it_cannot_use(tmp_path, tiny_data):
    import keras

    class Poison(keras.callbacks.Callback):
        """NaN weights after epoch 1's backup, as a learning rate too high for the later epochs would leave."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                kernel = self.model.layers[-1].kernel
                kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    folder, sums = tiny_data
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=3, batch_size=16, name="tiny")
    with pytest.raises(FmnistError, match="training diverged in epoch 2"):
        train(settings, "jax", runs_dir=tmp_path / "runs", dataset=load_dataset(folder, checksums=sums),
              extra_callbacks=[Poison()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert runs.diverged(run_dir) and len(artifacts.read_history(run_dir)["loss"]) == 1
    assert not (run_dir / artifacts.BACKUP).exists()  # a resume would refuse the run: its backup is of no use


def tiny_run(tmp_path, tiny_data, **overrides):
    folder, sums = tiny_data
    settings = TrainSettings(**{"hidden_sizes": (16, 8), "epochs": 3, "batch_size": 16, "name": "tiny", **overrides})
    return train(settings, "jax", runs_dir=tmp_path / "runs", dataset=load_dataset(folder, checksums=sums))


def test_a_run_that_cannot_write_its_config_leaves_no_folder_behind(tmp_path, tiny_data, full_disk_for):
    full_disk_for(artifacts.CONFIG)
    with pytest.raises(FmnistError, match=r"^cannot write .*-tiny/config\.json: No space left on device$"):
        tiny_run(tmp_path, tiny_data)
    assert list((tmp_path / "runs").iterdir()) == []  # not an empty run for `fmnist runs` to list as unreadable


def test_a_run_the_disk_filled_under_says_its_resume_continues_it_once_there_is_room(tmp_path, tiny_data,
                                                                                      full_disk_for, caplog,
                                                                                      monkeypatch):
    full_disk_for(artifacts.CALIBRATION)  # once trained
    with caplog.at_level(logging.WARNING, logger="fmnist.train"), pytest.raises(FmnistError, match="No space left"):
        tiny_run(tmp_path, tiny_data)
    (run,) = (tmp_path / "runs").iterdir()
    status = json.loads((run / artifacts.STATUS).read_text())
    assert status["state"] == "failed" and status["refused"] is True  # a tune trial's study takes it up
    assert (f"the system refused a file: once it lets fmnist write there again, 'fmnist train --resume {run}' "
            "saves and scores its model") in caplog.messages  # its training is over
    # Its failed status refused too: the way on said all the same, and the first refusal's error raised.
    set_status = runs.set_status

    def failed_refused(run_dir, state, **extra):
        if state == runs.FAILED:
            raise WriteRefused(f"cannot write {run_dir / artifacts.STATUS}: No space left on device")
        set_status(run_dir, state, **extra)

    monkeypatch.setattr(runs, "set_status", failed_refused)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fmnist.train"), pytest.raises(FmnistError, match="calibration"):
        tiny_run(tmp_path / "second", tiny_data)
    assert any(message.startswith("the system refused a file: once") for message in caplog.messages)
    monkeypatch.setattr(runs, "set_status", set_status)
    full_disk_for(artifacts.METRICS)  # while it is scored
    with caplog.at_level(logging.WARNING, logger="fmnist.train"), pytest.raises(FmnistError, match="metrics.json"):
        tiny_run(tmp_path / "third", tiny_data)
    (scored,) = (tmp_path / "third" / "runs").iterdir()
    assert (f"the system refused a file while scoring the trained model: once it lets fmnist write there again, "
            f"'fmnist train --resume {scored}' scores it") in caplog.messages
    write_atomic = artifacts.write_atomic

    def backup_refused(path, write):  # the first epoch's backup: no epoch is kept
        if path.name == artifacts.BACKUP:
            raise WriteRefused(f"cannot write {path}: No space left on device")
        write_atomic(path, write)

    monkeypatch.setattr(artifacts, "write_atomic", backup_refused)
    with caplog.at_level(logging.WARNING, logger="fmnist.train"), pytest.raises(FmnistError, match="backup.npz"):
        tiny_run(tmp_path / "fourth", tiny_data)
    (unkept,) = (tmp_path / "fourth" / "runs").iterdir()
    assert (f"the system refused a file: once it lets fmnist write there again, 'fmnist train --resume {unkept}' "
            "trains the run from its first epoch (none was finished)") in caplog.messages


def test_train_writes_a_complete_run_directory(tmp_path, tiny_data, caplog):
    with caplog.at_level(logging.INFO, logger="fmnist.train"):
        result = tiny_run(tmp_path, tiny_data)
    assert EXPECTED_FILES <= {p.name for p in result.run_dir.iterdir()}
    config = json.loads((result.run_dir / artifacts.CONFIG).read_text())
    assert config["settings"]["hidden_sizes"] == [16, 8] and config["backend"] == "jax"
    assert "keras" in config["versions"]
    history = artifacts.read_history(result.run_dir)
    assert len(history["loss"]) == result.epochs_run == 3
    assert {"learning_rate", "seconds", "val_loss", "val_accuracy"} <= set(history)
    # One progress line an epoch, with what history.csv keeps of it: a tiny epoch's seconds in hundredths.
    said = [m for m in caplog.messages if m.startswith("epoch ")]
    assert said == [f"epoch {i + 1:3d}/3  loss {history['loss'][i]:.4f}  acc {history['accuracy'][i]:.4f}  "
                    f"val_loss {history['val_loss'][i]:.4f}  val_acc {history['val_accuracy'][i]:.4f}  "
                    f"lr {history['learning_rate'][i]:.1e}  {history['seconds'][i]:.2f}s" for i in range(3)]
    status = json.loads((result.run_dir / artifacts.STATUS).read_text())
    assert status["state"] == "finished"
    assert status["train_seconds"] == result.train_seconds  # the closing line's figure is `fmnist runs`'s, to 0.1 s
    html = (result.run_dir / artifacts.REPORT_HTML).read_text()
    assert html.count("data:image/png;base64,") == 6 and "Shirt" in html
    metrics = json.loads((result.run_dir / artifacts.METRICS).read_text())
    low, high = metrics["test_accuracy_ci95"]
    assert low <= metrics["test_accuracy"] <= high
    assert 0.05 <= metrics["temperature"] <= 20 and 0 <= metrics["ece"] <= 1


def test_a_batch_larger_than_the_training_images_is_said_to_make_one_step(tmp_path, tiny_data, caplog):
    with caplog.at_level("WARNING", logger="fmnist"):
        result = tiny_run(tmp_path, tiny_data, batch_size=100, epochs=1)  # 48 training images
    assert "the batch of 100 is larger than the 48 training images: each epoch is one step on them all" in caplog.text
    assert result.epochs_run == 1


def test_a_training_that_diverges_stops_at_once_and_is_marked_failed(tmp_path, tiny_data):
    with pytest.raises(FmnistError, match=r"training diverged in epoch 1: the loss became nan; lower the learning "
                                          r"rate \(--learning-rate, now 1e\+30\)"):
        tiny_run(tmp_path, tiny_data, learning_rate=1e30)
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads((run_dir / artifacts.STATUS).read_text())
    assert status["state"] == "failed" and status["error"].startswith("training diverged in epoch 1")
    assert not (run_dir / artifacts.MODEL).exists() and artifacts.read_history(run_dir) == {}
    # Resumed with the same settings it would diverge again: every command says to train a new run instead.
    folder, sums = tiny_data
    with pytest.raises(FmnistError, match="diverged .*: resumed with the same settings it would diverge again; "
                                          "train a new run with a lower --learning-rate"):
        resume_run(run_dir, dataset=load_dataset(folder, checksums=sums))
    for refused in (lambda: model_files.verified_model_path(run_dir), lambda: run_list.require_scored(run_dir, "x")):
        with pytest.raises(FmnistError, match="it diverged: train a new run with a lower --learning-rate"):
            refused()
    assert run_list.summarize(run_dir)["notes"] == ["diverged: train a new run with a lower --learning-rate"]


def test_two_runs_of_the_same_seed_get_their_own_directories_and_the_same_weights(tmp_path, tiny_data):
    import keras

    first, second = (tiny_run(tmp_path, tiny_data, seed=3) for _ in range(2))
    assert first.run_dir != second.run_dir and first.run_dir.parent == second.run_dir.parent
    weights = [keras.saving.load_model(run.run_dir / artifacts.MODEL).get_weights() for run in (first, second)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_validation_in_large_batches_reports_the_loss_of_the_training_batch_size(tmp_path):
    """fit validates in batches of VALIDATION_BATCH_SIZE for speed; the logged val_loss must not depend on it."""
    folder = tmp_path / "data"
    sums = write_idx_set(folder, n_train=1500)
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=1, batch_size=16, name="valbatch")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model, _, _ = fit(settings, dataset, run_dir, "jax")
    with np.load(run_dir / artifacts.SPLIT) as split:  # the validation images fit itself used
        val_idx = split["validation"]
    assert settings.batch_size < len(val_idx) < VALIDATION_BATCH_SIZE  # one large batch against 19 small ones
    at_training_batch = model.evaluate(to_features(dataset.x_train[val_idx]), dataset.y_train[val_idx],
                                       batch_size=settings.batch_size, verbose=0, return_dict=True)
    assert artifacts.read_history(run_dir)["val_loss"][-1] == pytest.approx(at_training_batch["loss"], rel=1e-5)


@pytest.mark.realdata
def test_the_readmes_python_example_runs_as_written(real_data_dir, tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FMNIST_DATA_DIR": str(real_data_dir)})
    assert done.returncode == 0, done.stderr
    run_line, classes = done.stdout.splitlines()
    run_dir, accuracy, shirt_f1 = run_line.split()
    run_dir = tmp_path / run_dir  # in ./runs, as the command line's
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.endswith("-from-python")
    assert (run_dir / artifacts.REPORT_HTML).is_file() and 0.5 < float(accuracy) <= 1 and 0 <= float(shirt_f1)
    assert re.fullmatch(r"\[(\d )*\d\]", classes)


def test_train_from_python_takes_settings_as_such_and_runs_on_the_backend_it_records(tmp_path, tiny_data, monkeypatch):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    with pytest.raises(TypeError, match=r"^settings must be a TrainSettings, not a dict: make one with "):
        train({"epochs": 1}, "jax", runs_dir=tmp_path / "runs", dataset=dataset)
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=1, batch_size=16, name="tiny")
    from fmnist.backend import activate

    activate("jax")  # the tests' backend; a run on TensorFlow recorded, trained on JAX, would be a false record
    with pytest.raises(FmnistError, match="^Keras is already running on jax in this process; start a new process "
                                          "for tensorflow$"):
        train(settings, "tensorflow", runs_dir=tmp_path / "runs", dataset=dataset)
    with pytest.raises(FmnistError, match="^unknown backend 'pytorch'"):
        train(settings, "pytorch", runs_dir=tmp_path / "runs", dataset=dataset)
    assert not (tmp_path / "runs").exists()
    monkeypatch.chdir(tmp_path)
    result = train(settings, "jax", runs_dir=Path("runs"), dataset=dataset)  # a folder given relative
    assert result.run_dir == tmp_path.resolve() / "runs" / result.run_dir.name  # named whole: cd elsewhere, it holds


def test_a_teacher_that_learned_next_to_nothing_is_named_before_and_after_the_student_trains(tmp_path, tiny_data,
                                                                                            tiny_run_dir, caplog):
    from fmnist.data import load_dataset
    from fmnist.evaluate import likely_cause
    from fmnist.settings import TrainSettings
    from fmnist.train import check_inputs

    teacher = shutil.copytree(tiny_run_dir, tmp_path / "teacher")
    metrics = artifacts.read_json(teacher / artifacts.METRICS)
    folder, sums = tiny_data
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, teacher=str(teacher))
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        check_inputs(settings, load_dataset(folder, checksums=sums))  # scored well enough: nothing said
        assert caplog.text == ""
        artifacts.write_json(teacher / artifacts.METRICS, {**metrics, "test_accuracy": 0.1,
                                                             "test_accuracy_ci95": [0.09, 0.11]})
        check_inputs(settings, load_dataset(folder, checksums=sums))  # taught all the same, as asked
        check_inputs(settings, load_dataset(folder, checksums=sums))  # as for each seed of a group: said once
        assert caplog.text.count("learned next to nothing itself") == 1
        del metrics["test_accuracy"]  # edited by hand: taken as it is, not a crash
        artifacts.write_json(teacher / artifacts.METRICS, {**metrics, "test_accuracy_ci95": [0.09, 0.11]})
        check_inputs(dataclasses.replace(settings, teacher=str(teacher) + "/"), load_dataset(folder, checksums=sums))
        assert caplog.text.count("learned next to nothing itself") == 1
        artifacts.write_json(teacher / artifacts.METRICS, {**metrics, "test_accuracy": 0.1,
                                                             "test_accuracy_ci95": [0.09, 0.11]})
    said = (f"--teacher {teacher}: the teacher {teacher} learned next to nothing itself (test accuracy 0.1000); the "
            "student learns mostly from its answers (distill_alpha 0.9): give a teacher that scored well")
    assert said in caplog.text
    student = shutil.copytree(tiny_run_dir, tmp_path / "student")
    config = artifacts.read_json(student / artifacts.CONFIG)
    artifacts.write_json(student / artifacts.CONFIG, {**config, "settings": {**config["settings"],
                                                                           "teacher": str(teacher)}})
    assert likely_cause(student) == (f"The usual cause: the teacher {teacher} learned next to nothing itself (test "
                                     "accuracy 0.1000), and the student learns from its answers; distil from one that "
                                     "scored well")


def test_a_teacher_is_loaded_once_a_process_to_be_checked_not_again_for_each_seed(tmp_path, tiny_data, tiny_run_dir,
                                                                                  monkeypatch):
    from fmnist.train import check_inputs

    loads = []
    real_load = model_files.load_model

    def counted(source):  # the real load, counted
        loads.append(Path(source))
        return real_load(source)

    monkeypatch.setattr(model_files, "load_model", counted)
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    teacher = shutil.copytree(tiny_run_dir, tmp_path / "teacher")
    settings = TrainSettings(hidden_sizes=(8,), epochs=1, batch_size=16, teacher=str(teacher))
    for _ in range(3):  # as a --seeds group checks it first, then each seed's training
        check_inputs(settings, dataset)
    assert loads == [teacher]
    elsewhere = shutil.copytree(tiny_run_dir, tmp_path / "elsewhere")  # the same model in another run: its own check
    check_inputs(dataclasses.replace(settings, teacher=str(elsewhere)), dataset)
    assert loads == [teacher, elsewhere]


def test_progress_names_the_run_folder_whole_as_the_closing_lines_do(tmp_path, tiny_data, monkeypatch, caplog):
    import keras

    from conftest import tiny_train

    class CtrlCAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="fmnist"), pytest.raises(KeyboardInterrupt):
        tiny_train(Path("runs"), tiny_data, extra_callbacks=(CtrlCAfterOneEpoch(),))
    [run_dir] = (tmp_path / "runs").iterdir()
    assert f"run directory {run_dir} (data: " in caplog.text  # given ./runs, named from anywhere
    folder, sums = tiny_data
    with caplog.at_level(logging.INFO, logger="fmnist"):
        resume_run(Path("runs") / run_dir.name, dataset=load_dataset(folder, checksums=sums))
    assert f"resuming {run_dir} after epoch 1" in caplog.text and f"scoring {run_dir} on the " in caplog.text
