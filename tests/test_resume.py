import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import AS_AT_A_TERMINAL, run_cli
from fmnist import artifacts, evaluate, model_files, report, run_list, run_locks, runs, stopping
from fmnist.backup_file import read_meta
from fmnist.data import load_dataset
from fmnist.cli import main
from fmnist.errors import FmnistError
from fmnist.resume import keep_finished_epochs, read_resumable, resume_run
from fmnist.settings import TrainSettings
from fmnist.train import train

# On real data these settings make val_loss jump about, so the learning rate drops and early stopping ends the run
# (or the epochs run out) some epochs after its best one; which epoch that is differs between CPUs. The killed run
# is cut just after the reference's best epoch, so the resumed run must bring back the early-stopping state (best
# value, patience, best weights, restored at the end), not just the weights and the epoch.
ARGS = ["--limit", "6000", "--epochs", "8", "--hidden-sizes", "32,16", "--batch-size", "4", "--learning-rate", "0.05",
        "--lr-patience", "1", "--early-stopping-patience", "2", "--json"]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", AS_AT_A_TERMINAL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rows(run_dir: Path) -> int:
    history = run_dir / artifacts.HISTORY
    return max(len(history.read_text().splitlines()) - 1, 0) if history.is_file() else 0


def _stop_after(process: subprocess.Popen, runs_dir: Path, epochs: int, sig: signal.Signals) -> tuple[Path, str]:
    """Send ``sig`` a moment after ``epochs`` epochs are in the history, so it lands inside the next epoch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = list(runs_dir.glob("*/" + artifacts.HISTORY))
        if found and _rows(found[0].parent) >= epochs:
            time.sleep(0.1)  # an epoch takes 0.4 s or more
            process.send_signal(sig)
            return found[0].parent, process.communicate(timeout=120)[1]
        time.sleep(0.01)
    pytest.fail(f"training ended or hung before epoch {epochs}: {process.communicate()[1]}")


def _stop_after_line(process: subprocess.Popen, runs_dir: Path, epoch: int, sig: signal.Signals) -> tuple[Path, str]:
    """Send ``sig`` as soon as the progress line of ``epoch`` is read: whatever the line showed must be kept."""
    for line in process.stderr:
        if line.startswith(f"epoch {epoch:3d}/"):
            process.send_signal(sig)
            return next(runs_dir.iterdir()), line + process.communicate(timeout=120)[1]
    pytest.fail(f"training ended before epoch {epoch}: {process.communicate()[1]}")


def _model_weights(run_dir: Path) -> list[np.ndarray]:
    model, _ = model_files.load_model(run_dir)
    return model.get_weights()


@pytest.mark.realdata
def test_interrupted_then_killed_run_resumes_to_the_uninterrupted_result(tmp_path, real_data_dir):
    reference = run_cli("train", *ARGS, "--runs-dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout)
    reference_dir = Path(expected["run_dir"])
    history = artifacts.read_history(reference_dir)
    cut = max(int(np.argmin(history["val_loss"])) + 2, 3)  # the epoch after the best, and after the first cut
    assert cut < len(history["loss"]), history["val_loss"]  # the premise above held
    assert history["learning_rate"][-1] < history["learning_rate"][0]
    runs_dir = tmp_path / "runs"

    # Stopped as the first epoch's line is read: the line comes once the history and the backup keep the epoch
    # (printed before them, a stop just after it lost the epoch shown).
    run_dir, err = _stop_after_line(_start("train", *ARGS, "--runs-dir", str(runs_dir)), runs_dir, 1, signal.SIGINT)
    status = json.loads((run_dir / artifacts.STATUS).read_text())
    assert status["state"] == "interrupted" and status["resume"] == f"fmnist train --resume {run_dir}", err
    assert "fmnist: interrupted" in err and "Traceback" not in err
    assert not (run_dir / artifacts.MODEL).exists() and read_meta(run_dir / artifacts.BACKUP)["epochs_done"] >= 1
    assert _rows(run_dir) >= 1

    _, err = _stop_after(_start("train", "--resume", str(run_dir)), runs_dir, cut, signal.SIGKILL)
    assert "resuming" in err and "restored from the backup" in err
    assert json.loads((run_dir / artifacts.STATUS).read_text())["state"] == "running"  # SIGKILL: no last words
    assert not list(run_dir.glob(".*.tmp*"))  # atomic writes: no half-written file left behind

    with run_locks.claim_run(run_dir):  # while one process trains it, no other may
        with pytest.raises(FmnistError, match=f"^{run_dir} is being trained right now; wait for it to finish "
                                              r"\('fmnist runs' shows its epochs so far\)$"):
            with run_locks.claim_run(run_dir):
                pass

    resumed = run_cli("train", "--resume", str(run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    resumed_history = artifacts.read_history(run_dir)
    for column in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert resumed_history[column] == history[column], column
    for mine, theirs in zip(_model_weights(run_dir), _model_weights(reference_dir)):
        np.testing.assert_array_equal(mine, theirs)
    got = json.loads(resumed.stdout)
    assert got["epochs"] == expected["epochs"] and got["test_accuracy"] == expected["test_accuracy"]
    # The closing lines name the epoch the model is from: the best one, which early stopping restored.
    assert got["epoch_kept"] == expected["epoch_kept"] == int(np.argmin(history["val_loss"])) + 1 < got["epochs"]
    assert got["backend"] == expected["backend"] == "jax"
    assert json.loads((run_dir / artifacts.STATUS).read_text())["state"] == "finished"
    assert not (run_dir / artifacts.BACKUP).exists()  # the model supersedes it
    assert (run_dir / artifacts.REPORT_HTML).is_file()
    with pytest.raises(FmnistError, match="already finished training; nothing to resume"):
        resume_run(run_dir)
    # A resume that checked before another process finished the run checks again once it holds the lock.
    config = json.loads((run_dir / artifacts.CONFIG).read_text())
    with pytest.raises(FmnistError, match="already finished training"):
        train(TrainSettings.from_dict(config["settings"]), config["backend"], data_dir=real_data_dir,
              resume_dir=run_dir)
    assert artifacts.read_history(run_dir) == resumed_history  # untouched


def test_history_is_cut_back_to_the_epochs_in_the_backup(tmp_path):
    from fmnist.backup import save
    from fmnist.model import build_dense

    model = build_dense((4,), 0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    save(tmp_path / artifacts.BACKUP, model, [], epochs_done=2, stopped=False)
    # Epoch 2's row landed before its backup did, and the kill cut epoch 3's row in half.
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n2,1.1\r\n3,1.")
    assert keep_finished_epochs(tmp_path) == 2
    assert (tmp_path / artifacts.HISTORY).read_bytes() == b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n"
    # A line added by hand, not a row, and an epoch's row twice: each finished epoch is kept once, as it was.
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n1,2,3\r\n0,9.9\r\nx,1\r\n")
    assert keep_finished_epochs(tmp_path) == 2
    assert (tmp_path / artifacts.HISTORY).read_bytes() == b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n"


def test_resume_refuses_settings_and_non_runs(tmp_path, capsys):
    for flags, dropped in ((["--epochs", "3"], "--epochs"),
                           (["--recipe", "best", "--seeds", "2"], "--recipe, --seeds")):
        with pytest.raises(SystemExit) as refused:  # the command line's shape: status 2, as argparse's refusals
            main(["train", "--resume", str(tmp_path), *flags])
        assert refused.value.code == 2 and capsys.readouterr().err == (
            f"fmnist: error: --resume continues a run with its own settings; drop {dropped} (see 'fmnist train "
            "--help')\n")
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "is not a run directory" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    artifacts.write_json(old / artifacts.CONFIG, {"settings": {}})
    assert main(["train", "--resume", str(old)]) == 1
    assert "config.json lacks backend, data (an older fmnist wrote it?)" in capsys.readouterr().err
    artifacts.write_json(old / artifacts.CONFIG, {"settings": {}, "backend": "torch", "data": {}})
    assert main(["train", "--resume", str(old)]) == 1  # edited by hand, or another program's
    assert capsys.readouterr().err == (f"fmnist: error: {old / artifacts.CONFIG} names the backend 'torch', which "
                                       "fmnist does not run (it runs jax, tensorflow); restore the file from a copy "
                                       "if it was edited, or train it again\n")
    artifacts.write_json(old / artifacts.CONFIG, {"settings": {"epochs": "8"}, "backend": "jax", "data": {}})
    assert main(["train", "--resume", str(old)]) == 1  # edited by hand
    assert (f"{old / artifacts.CONFIG}: invalid setting: epochs must be a whole number, not '8'; restore the file "
            "from a copy if it was edited, or, if this fmnist no longer accepts what it held then, train a new run\n"
            ) in capsys.readouterr().err
    artifacts.write_json(old / artifacts.CONFIG, {"settings": {}, "backend": "jax", "data": {}})
    (old / artifacts.STATUS).write_text("{")  # damaged by hand: finished or not, it cannot tell
    assert main(["train", "--resume", str(old)]) == 1
    assert capsys.readouterr().err.endswith(
        f"status.json is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)): "
        f"restore it from a copy, or remove it: then a run with a trained model is scored by 'fmnist evaluate {old}', "
        "and one without resumes from its backup\n")
    group = tmp_path / "group"  # a --seeds group is resumed as a group
    group.mkdir()
    artifacts.write_json(group / artifacts.SEED_GROUP,
                         {"settings": {}, "backend": "tensorflow", "seeds": 2, "data": {}})
    assert main(["train", "--resume", str(group), "--backend", "jax"]) == 1
    assert "group was trained with the tensorflow backend" in capsys.readouterr().err
    artifacts.write_json(group / artifacts.SEED_GROUP, {"backend": "jax"})
    assert main(["train", "--resume", "group", "--runs-dir", str(tmp_path)]) == 1  # by name, too
    assert "group.json lacks settings, seeds, data" in capsys.readouterr().err


TF_RESUME_CHECK = """
import json, sys
from pathlib import Path
import keras
from fmnist import artifacts
from fmnist.data import load_dataset
from fmnist.settings import TrainSettings
from fmnist.train import train

folder, checksums = Path(sys.argv[1]), json.loads(sys.argv[2])
dataset = load_dataset(folder, checksums=checksums)
settings = TrainSettings(hidden_sizes=(8,), epochs=4, batch_size=8, name="tf", early_stopping_patience=10)
whole = train(settings, "tensorflow", runs_dir=folder / "whole", dataset=dataset).run_dir


class StopAfterTwo(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # the run's own callbacks, its backup among them, have recorded this epoch
            raise KeyboardInterrupt


try:
    keras.backend.clear_session()  # layer names as in a new process, which the backup checks
    train(settings, "tensorflow", runs_dir=folder / "cut", dataset=dataset, extra_callbacks=[StopAfterTwo()])
except KeyboardInterrupt:
    pass
cut = next((folder / "cut").iterdir())
keras.backend.clear_session()
train(settings, "tensorflow", dataset=dataset, resume_dir=cut)
print(json.dumps({"whole": artifacts.read_history(whole)["loss"], "resumed": artifacts.read_history(cut)["loss"]}))
"""


def test_a_resumed_tensorflow_run_shuffles_its_later_epochs_as_the_uninterrupted_run(tmp_path):
    """On TensorFlow the epochs' orders come from tf.data's own sequence, which a new process starts again."""
    from conftest import write_idx_set

    checksums = write_idx_set(tmp_path / "data", n_train=120)
    result = subprocess.run([sys.executable, "-c", TF_RESUME_CHECK, str(tmp_path / "data"), json.dumps(checksums)],
                            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["whole"]) == 4 and out["resumed"] == out["whole"]


def _backup_of(run_dir, epochs_done, run):
    from fmnist.backup import save
    from fmnist.model import build_dense

    model = build_dense((4,), 0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    save(run_dir / artifacts.BACKUP, model, [], epochs_done=epochs_done, stopped=False, run=run)


def test_a_backup_from_another_run_or_a_history_cut_short_is_refused_not_mixed_in(tmp_path):
    from fmnist.backup_file import run_id

    mine, other = tmp_path / "mine", tmp_path / "other"
    for run, seed in ((mine, 1), (other, 2)):
        run.mkdir()
        artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": seed}, "backend": "jax"})
    (mine / ".backup.x1y2.tmp.npz").write_bytes(b"half")  # what a kill mid-write leaves
    _backup_of(mine, 3, run_id(other))  # copied in from the other run
    with pytest.raises(FmnistError, match="backup.npz was written by another run"):
        keep_finished_epochs(mine)
    assert not (mine / ".backup.x1y2.tmp.npz").exists()

    _backup_of(mine, 3, run_id(mine))
    (mine / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n")
    with pytest.raises(FmnistError, match="history.csv holds 1 of the 3 epochs in .*backup.npz; restore it, or remove"):
        keep_finished_epochs(mine)
    (mine / artifacts.HISTORY).unlink()
    with pytest.raises(FmnistError, match="history.csv holds 0 of the 3 epochs"):
        keep_finished_epochs(mine)
    (mine / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,one\r\n2,1.1\r\n")
    with pytest.raises(FmnistError, match=r"history.csv holds 2 of the 3 epochs in .*backup.npz \(its line 3 is "
                                          r"damaged\); restore it, or remove"):
        keep_finished_epochs(mine)
    (mine / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n2,1.1\r\n")
    assert keep_finished_epochs(mine) == 3

    config = json.loads((mine / artifacts.CONFIG).read_text())
    (mine / artifacts.CONFIG).write_text(json.dumps(dict(reversed(config.items())), indent=4))  # same settings
    assert keep_finished_epochs(mine) == 3
    (mine / artifacts.CONFIG).write_text(json.dumps({**config, "settings": {"seed": 3}}))  # a setting changed
    with pytest.raises(FmnistError, match="backup.npz was written by another run, or before config.json was changed: "
                                          "if it was, put config.json back as it was; else remove backup.npz and "
                                          "history.csv, and 'fmnist train --resume "):
        keep_finished_epochs(mine)
    _backup_of(mine, 3, artifacts.sha256_file(mine / artifacts.CONFIG))  # as fmnist before 6 December named its run
    assert keep_finished_epochs(mine) == 3


def test_a_run_stopped_while_it_was_being_scored_is_scored_by_resume(tmp_path, tiny_data, monkeypatch):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=2, batch_size=16, name="tiny")
    run_dir = train(settings, "jax", runs_dir=tmp_path, dataset=dataset).run_dir
    scored = json.loads((run_dir / artifacts.METRICS).read_text())
    for name in (artifacts.METRICS, artifacts.REPORT_HTML, artifacts.PREDICTIONS):  # as a stop then leaves it
        (run_dir / name).unlink()
    history = artifacts.read_history(run_dir)
    (run_dir / artifacts.BACKUP).write_bytes(b"left by a kill between the finished status and its removal")
    with run_locks.claim_run(run_dir):  # as the process that trained it holds it while it scores
        assert run_list.summarize(run_dir)["notes"] == ["being scored"]  # not "not scored": its process scores it
        with pytest.raises(FmnistError, match="is being trained right now"):
            resume_run(run_dir, dataset=dataset)
    assert run_list.summarize(run_dir)["notes"] == [f"not scored: fmnist train --resume {run_dir} scores it"]

    def stopped_while_scoring(*args, **kwargs):
        raise KeyboardInterrupt  # a Ctrl-C while resume scores it

    with monkeypatch.context() as patched:
        patched.setattr(evaluate, "evaluate_run", stopped_while_scoring)
        with pytest.raises(KeyboardInterrupt) as stop:  # which `train --json` reports
            resume_run(run_dir, dataset=dataset)
    assert isinstance(stop.value, stopping.RunStopped)
    assert (stop.value.run_dir, stop.value.state, stop.value.resume) == (
        run_dir, "finished, not scored", f"fmnist train --resume {run_dir}")
    monkeypatch.chdir(tmp_path)
    result = resume_run(Path(run_dir.name), dataset=dataset)  # given relative, named whole, as train's result is
    assert result.run_dir == run_dir.resolve()
    assert result.metrics["test_accuracy"] == scored["test_accuracy"] == json.loads(
        (run_dir / artifacts.METRICS).read_text())["test_accuracy"]
    assert (run_dir / artifacts.REPORT_HTML).is_file()
    assert artifacts.read_history(run_dir) == history  # scored, not retrained
    assert not (run_dir / artifacts.BACKUP).exists()  # superseded by the model
    (run_dir / artifacts.REPORT_HTML).unlink()
    with monkeypatch.context() as patched:  # scored, its report cut short: said so, not "not scored"
        patched.setattr(report, "build_report", stopped_while_scoring)
        with pytest.raises(KeyboardInterrupt) as stop:
            resume_run(run_dir, dataset=dataset)
    assert isinstance(stop.value, stopping.RunStopped) and stop.value.state == "finished, scored, no report"
    resume_run(run_dir, dataset=dataset)
    assert (run_dir / artifacts.REPORT_HTML).is_file()
    with pytest.raises(FmnistError, match="already finished training; nothing to resume"):
        resume_run(run_dir, dataset=dataset)
    # A second resume that found it still being scored, then got its lock once the first had finished it: refused
    # all the same, not the finished run's summary as if it had done something.
    monkeypatch.setattr(runs, "complete", lambda run: False)  # what it found before it waited
    with pytest.raises(FmnistError, match="already finished training; nothing to resume"):
        resume_run(run_dir, dataset=dataset)
    model = (run_dir / artifacts.MODEL).read_bytes()
    (run_dir / artifacts.STATUS).unlink()  # lost: the saved model alone says the run finished
    with pytest.raises(FmnistError, match="has a trained model but no status.json: resuming would train it again"):
        resume_run(run_dir, dataset=dataset)
    assert (run_dir / artifacts.MODEL).read_bytes() == model


def stop_after_two_epochs():
    """A callback that stops a training after the backup of epoch 2, as a Ctrl-C then would."""
    import keras

    class StopAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    return StopAfterTwoEpochs()


def test_a_run_a_later_callback_stopped_resumes_as_stopped_after_a_kill_before_it_was_finished(tmp_path, tiny_data,
                                                                                               caplog):
    import keras

    class PruneAtEpochTwo(keras.callbacks.Callback):  # as tune's pruner, after the backup in the callbacks
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    class KilledOnceTrained(keras.callbacks.Callback):  # a stop while the run is calibrated and saved
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt

    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=5, batch_size=16, name="tiny")
    unbroken = train(settings, "jax", runs_dir=tmp_path / "unbroken", dataset=dataset,
                     extra_callbacks=[PruneAtEpochTwo()])
    with caplog.at_level(logging.WARNING, logger="fmnist"), pytest.raises(KeyboardInterrupt):
        train(settings, "jax", runs_dir=tmp_path / "runs", dataset=dataset,
              extra_callbacks=[PruneAtEpochTwo(), KilledOnceTrained()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    # Not "continues from the last finished epoch": its training is over.
    assert f"stopped after its training: '{runs.resume_command(run_dir)}' saves and scores its model" in caplog.text
    assert run_list.summarize(run_dir)["notes"] == [f"fmnist train --resume {run_dir} saves and scores it"]
    resumed = resume_run(run_dir, dataset=dataset)  # ends where it stopped, not trained on to epoch 5
    assert artifacts.read_history(run_dir)["val_loss"] == artifacts.read_history(unbroken.run_dir)["val_loss"]
    assert resumed.epochs_run == unbroken.epochs_run == 2
    for mine, theirs in zip(_model_weights(run_dir), _model_weights(unbroken.run_dir)):
        np.testing.assert_array_equal(mine, theirs)


def test_a_resumed_run_counts_the_training_time_of_its_earlier_epochs(tmp_path, tiny_data):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(16, 8), epochs=3, batch_size=16, name="tiny")

    with pytest.raises(KeyboardInterrupt):
        train(settings, "jax", runs_dir=tmp_path / "runs", dataset=dataset, extra_callbacks=[stop_after_two_epochs()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = resume_run(run_dir, dataset=dataset)
    epoch_seconds = artifacts.read_history(run_dir)["seconds"]
    assert len(epoch_seconds) == result.epochs_run == 3
    # Each process compiled in its first epoch: the one that ran epoch 3 alone took less than the three together.
    assert result.train_seconds >= sum(epoch_seconds)
    assert json.loads((run_dir / artifacts.STATUS).read_text())["train_seconds"] == round(result.train_seconds, 2)


def test_a_run_whose_split_would_come_out_otherwise_now_is_refused_not_resumed_on_other_images(tmp_path, tiny_data):
    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    settings = TrainSettings(hidden_sizes=(8,), epochs=3, batch_size=16, name="tiny")
    with pytest.raises(KeyboardInterrupt):
        train(settings, "jax", runs_dir=tmp_path / "runs", dataset=dataset, extra_callbacks=[stop_after_two_epochs()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    # As another scikit-learn or NumPy would split it: one validation image traded for a training one.
    with np.load(run_dir / artifacts.SPLIT) as split:
        train_idx, val_idx = split["train"].copy(), split["validation"].copy()
    train_idx[0], val_idx[0] = val_idx[0], train_idx[0]
    np.savez(run_dir / artifacts.SPLIT, train=np.sort(train_idx), validation=np.sort(val_idx))
    saved = (run_dir / artifacts.SPLIT).read_bytes()
    with pytest.raises(FmnistError, match=r"its training and validation images are not the ones this fmnist picks "
                                          r"now \(1 of the 12 validation images differs\)"):
        resume_run(run_dir, dataset=dataset)
    assert (run_dir / artifacts.SPLIT).read_bytes() == saved and len(artifacts.read_history(run_dir)["loss"]) == 2
    # Its split lost: made again as it was made, unless NumPy or scikit-learn changed since, which may pick others.
    from fmnist.train import require_same_split

    (run_dir / artifacts.SPLIT).unlink()
    require_same_split(run_dir, val_idx)  # the same versions as when it began
    config = artifacts.read_json(run_dir / artifacts.CONFIG)
    artifacts.write_json(run_dir / artifacts.CONFIG, {**config, "versions": {**config["versions"], "numpy": "1.0"}})
    with pytest.raises(FmnistError, match=f"its split.npz is missing or damaged, and the split made again may hold "
                                          f"other images, as numpy 1.0 then, {np.__version__} now: resumed, it could "
                                          "train on images it validated on"):
        require_same_split(run_dir, val_idx)


def test_a_resumed_student_sees_the_mixup_views_the_unbroken_one_saw(tmp_path, tiny_data, caplog):
    from fmnist.recipes import recipe_settings

    folder, sums = tiny_data
    dataset = load_dataset(folder, checksums=sums)
    tiny = dict(hidden_sizes=(16,), epochs=3, batch_size=16, validation_fraction=0.2)
    teacher = train(TrainSettings(**tiny, name="teacher"), "jax", runs_dir=tmp_path / "teacher", dataset=dataset)
    student = recipe_settings("distilled", teacher=str(teacher.run_dir), **tiny)
    assert student.distill_views
    unbroken = train(student, "jax", runs_dir=tmp_path / "unbroken", dataset=dataset)

    with pytest.raises(KeyboardInterrupt):
        train(student, "jax", runs_dir=tmp_path / "runs", dataset=dataset, extra_callbacks=[stop_after_two_epochs()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / artifacts.TEACHER_ANSWERS).is_file()
    with caplog.at_level(logging.INFO, logger="fmnist"):
        resume_run(run_dir, dataset=dataset)
    # The answers the killed process kept, not the teacher asked again (minutes for a ConvNet).
    assert "the teacher's answers kept by the run's earlier training" in caplog.text
    assert "answers for" not in caplog.text
    assert not (run_dir / artifacts.TEACHER_ANSWERS).exists()  # only a resume needs them
    expected, got = artifacts.read_history(unbroken.run_dir), artifacts.read_history(run_dir)
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert got[column] == expected[column], column
    for mine, theirs in zip(_model_weights(run_dir), _model_weights(unbroken.run_dir)):
        np.testing.assert_array_equal(mine, theirs)


def test_a_finished_runs_damaged_metrics_are_scored_again_when_it_is_resumed_in_its_group(tmp_path, tiny_data):
    from conftest import tiny_train
    from fmnist.resume import score_finished

    folder, sums = tiny_data
    run_dir = tiny_train(tmp_path / "runs", tiny_data).run_dir
    metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    scored = metrics["test_accuracy"]
    shirt_f1_as_text = {**metrics, "per_class": {**metrics["per_class"], "Shirt": {"f1-score": "0.7"}}}
    # Edited by hand, or cut short on a disk that filled: each is scored again, as `fmnist runs` advises; so is one
    # whose accuracy is sound but which lacks a figure the group's summary takes from it.
    for damage in ("{}", '{"test_accuracy": 2}', '{"test_accuracy": 0.9', '{"test_accuracy": 0.5}',
                   json.dumps({key: value for key, value in metrics.items() if key != "ece"}),
                   json.dumps(shirt_f1_as_text)):
        (run_dir / artifacts.METRICS).write_text(damage)
        result = score_finished(run_dir, load_dataset(folder, checksums=sums))
        assert result.metrics["test_accuracy"] == scored, damage
        assert artifacts.read_json(run_dir / artifacts.METRICS)["test_accuracy"] == scored, damage


def test_settings_a_config_lacks_are_resumed_at_their_defaults_and_said(tmp_path, caplog):
    settings = TrainSettings(epochs=3).to_dict()
    artifacts.write_json(tmp_path / artifacts.CONFIG, {"settings": settings, "backend": "jax", "data": {}})
    with caplog.at_level(logging.WARNING, logger="fmnist.resume"):
        read_resumable(tmp_path / artifacts.CONFIG, {"settings": dict}, None, "train it again")
        assert caplog.text == ""  # a config with every setting: nothing to say
        del settings["lr_factor"]  # as an older fmnist, before the setting existed, wrote it
        artifacts.write_json(tmp_path / artifacts.CONFIG, {"settings": settings, "backend": "jax", "data": {}})
        _, resumed = read_resumable(tmp_path / artifacts.CONFIG, {"settings": dict}, None, "train it again")
    assert resumed.lr_factor == TrainSettings().lr_factor
    assert (f"config.json lacks lr_factor (an older fmnist's, or edited): taking the defaults, lr_factor "
            f"{TrainSettings().lr_factor!r}") in caplog.text


def test_a_finished_run_whose_config_is_damaged_is_told_so_not_sent_to_evaluate(tiny_run_dir, tmp_path):
    import shutil

    run = shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name)
    (run / artifacts.CONFIG).write_text('{"settings": ')
    with pytest.raises(FmnistError, match=f"^{run} has already finished training; nothing to resume, but .*config.json "
                                          "is not valid JSON .*: restore it from a copy \\('fmnist predict' and "
                                          "'fmnist serve' take the run without it\\)$"):
        resume_run(run)
