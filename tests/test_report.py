import io
import logging
import re
import shutil
from html import escape as html_escape

import numpy as np
import pytest

from conftest import page_text, run_cli
from fmnist import artifacts
from fmnist.errors import FmnistError
from fmnist.evaluate import evaluate_run
from fmnist.facts import CLASS_NAMES
from fmnist.recipes import closest_recipe
from fmnist.report import build_report, training_summary, write_report
from fmnist.train import TrainResult

UNKNOWN_EPOCHS = "<th scope=row>epochs run / kept</th><td>- (history.csv is missing or empty)</td>"


def test_report_is_rebuilt_from_the_runs_files_alone(tiny_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    for name in (artifacts.REPORT_HTML, artifacts.CURVES_PNG, artifacts.CONFUSION_MATRIX_PNG):
        (run / name).unlink()
    html = page_text(build_report(run))
    metrics = artifacts.read_json(run / artifacts.METRICS)
    history = artifacts.read_history(run)
    assert f"{metrics['test_accuracy']:.4f}" in html
    # What the pictures need said: how the matrix is read, what T and the ECE are (this run's T given).
    assert "<p>A row for each true class, a column for each class predicted: the counts" in html
    matrix = np.array(metrics["confusion_matrix"])  # the picture's first finding, for a screen reader
    np.fill_diagonal(matrix, 0)
    true, predicted = np.unravel_index(matrix.argmax(), matrix.shape)
    assert (f'<img alt="confusion matrix; the most frequent mistake: {html_escape(CLASS_NAMES[true])} taken for '
            f'{html_escape(CLASS_NAMES[predicted])}, {matrix.max():,} times"') in html
    assert f"fitted on the validation split so that its confidence matches how often it is right, here T = " \
           f"{metrics['temperature']:.3f};" in html
    row = (f"<th scope=row>epochs run / kept</th><td>{len(history['loss'])} / {artifacts.best_epoch(history)} (the "
           "lowest val_loss)</td>")
    assert row in html
    seconds = artifacts.read_json(run / artifacts.STATUS)["train_seconds"]  # to a tenth, as train's closing line
    assert f"<th scope=row>training seconds</th><td>{seconds:.1f}</td>" in html
    split = [len(artifacts.read_split(run, part)) for part in ("train", "validation")]  # no subset: all, as split
    assert f"<th scope=row>images (--limit)</th><td>all: {split[0]} training, {split[1]} validation</td>" in html
    assert (run / artifacts.CURVES_PNG).is_file() and (run / artifacts.CONFUSION_MATRIX_PNG).is_file()
    assert "<th scope=row>dropout</th>" in html and "distill_alpha" not in html  # no teacher: its settings mislead
    assert "<th scope=row>limit</th><td>-</td>" in html and "None" not in html  # a setting not given reads "-"
    assert "<th scope=row>hidden_sizes</th><td>16-8</td>" in html  # as `fmnist runs` shows them
    # What it changed in its recipe marked, as "spec with 3 settings changed" only counts them; what it kept is not.
    assert "<h2>Settings (those changed from its recipe highlighted)</h2>" in html
    assert "<tr class=diff><th scope=row>hidden_sizes</th><td>16-8</td></tr>" in html
    assert "<tr><th scope=row>dropout</th>" in html
    recipe = closest_recipe(artifacts.read_json(run / artifacts.CONFIG)["settings"])
    assert recipe.startswith("spec with ") and f"<th scope=row>recipe (closest)</th><td>{recipe}</td>" in html
    config = artifacts.read_json(run / artifacts.CONFIG)
    config["settings"]["teacher"] = "/somewhere/teacher"
    artifacts.write_json(run / artifacts.CONFIG, config)
    html = page_text(build_report(run))
    assert "<th scope=row>distill_alpha</th>" in html
    assert "<th scope=row>teacher</th><td>/somewhere/teacher</td>" in html  # not there: its path alone
    config["settings"]["teacher"] = str(tiny_run_dir)  # a run scored: its accuracy beside it, what a student faces
    artifacts.write_json(run / artifacts.CONFIG, config)
    teacher_accuracy = artifacts.read_json(tiny_run_dir / artifacts.METRICS)["test_accuracy"]
    assert (f"<th scope=row>teacher</th><td>{tiny_run_dir} (its test accuracy {teacher_accuracy:.4f})</td>"
            in page_text(build_report(run)))
    (run / artifacts.PREDICTIONS).unlink()
    with pytest.raises(FmnistError, match="test_predictions.npz is missing: run 'fmnist evaluate .*' first"):
        build_report(run)


def test_a_run_evaluated_before_occlusion_maps_existed_gets_the_command_that_adds_them(tiny_run_dir, tmp_path):
    import numpy as np

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    html = build_report(run).read_text()
    assert "Occlusion maps" in html
    # A class the model got no test image of right has no clearest image: the page names it (the tiny model, which
    # learned random labels, misses some).
    with np.load(run / artifacts.PREDICTIONS) as saved:
        right = set(saved["y_true"][saved["probabilities"].argmax(axis=1) == saved["y_true"]].tolist())
        assert set(saved["y_true"][saved["example_indices"]].tolist()) == right
        present = set(saved["y_true"].tolist())  # a class with no test image at all is not said to be missed
    missing = [name for c, name in enumerate(CLASS_NAMES) if c in present and c not in right]
    assert missing and f"<p>No test image of {', '.join(missing)} was classified right, so " in html
    with np.load(run / artifacts.PREDICTIONS) as saved:
        older = {k: v for k, v in saved.items() if k not in artifacts.EXPLANATION_ARRAYS}
    np.savez_compressed(run / artifacts.PREDICTIONS, **older)
    for name in (artifacts.EVIDENCE_CLASSES_PNG, artifacts.EVIDENCE_MISTAKES_PNG):
        (run / name).unlink(missing_ok=True)
    html = build_report(run).read_text()  # the pictures an earlier evaluation drew are not shown as this run's
    assert f"(not computed for this run: 'fmnist evaluate {run}' adds them)" in html and "Occlusion maps" not in html
    assert not (run / artifacts.EVIDENCE_CLASSES_PNG).exists() and not (run / artifacts.EVIDENCE_MISTAKES_PNG).exists()
    assert (run / artifacts.MISCLASSIFIED_PNG).is_file()


def test_metrics_without_reliability_bins_drop_the_diagram_an_earlier_scoring_drew(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    assert (run / artifacts.RELIABILITY_PNG).is_file()
    metrics = artifacts.read_json(run / artifacts.METRICS)
    del metrics["reliability"]  # as a hand-edited or older metrics.json
    artifacts.write_json(run / artifacts.METRICS, metrics)
    html = build_report(run).read_text()
    assert "(reliability diagram not available for this run)" in html
    assert not (run / artifacts.RELIABILITY_PNG).exists()


def test_metrics_scored_before_calibration_and_a_killed_run_read_as_they_are(tiny_run_dir, tmp_path):
    from fmnist import run_locks, runs
    from fmnist.report import headline

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    metrics = artifacts.read_json(run / artifacts.METRICS)
    for key in ("test_accuracy_ci95", "ece", "ece_before_scaling", "temperature"):  # not computed then
        del metrics[key]
    artifacts.write_json(run / artifacts.METRICS, metrics)
    runs.set_status(run, runs.RUNNING)  # and its process gone, holding no lock
    html = page_text(build_report(run))
    text = re.sub(r'src="data:[^"]*"', "", html)  # the pictures' base64 may spell anything
    assert "nan" not in text.lower() and "T = 1.000" not in text
    assert "<th scope=row>95% bootstrap interval</th><td>-</td>" in html and "- / - (T = -)" in html
    assert "<th scope=row>status</th><td>killed</td>" in html  # as `fmnist runs` says
    said = headline(run, metrics)
    assert "(95% CI -)" in said and "ECE - -> - after temperature scaling (T = -)" in said
    with run_locks.claim_run(run):  # while a process trains it, it is running
        assert "<th scope=row>status</th><td>running</td>" in build_report(run).read_text()


def _changed(arrays: dict, **changes) -> dict:
    return {k: v for k, v in {**arrays, **changes}.items() if v is not None}


def test_damaged_occlusion_maps_are_refused_not_drawn(tiny_run_dir, tmp_path):
    import numpy as np

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    with np.load(run / artifacts.PREDICTIONS) as saved:
        arrays = dict(saved)
    indices, maps = arrays["example_indices"], arrays["example_maps"]
    assert len(indices) and len(arrays["mistake_maps"])  # the tiny run has both to damage
    damaged = {
        "one array missing": _changed(arrays, mistake_maps=None),
        "an index out of range": _changed(arrays, example_indices=np.full_like(indices, -1)),
        "indices that are not whole numbers": _changed(arrays, example_indices=indices + 0.5),
        "maps of another size": _changed(arrays, example_maps=maps[:, :7, :7]),
        "fewer images than indices": _changed(arrays, example_images=arrays["example_images"][:-1]),
        "NaN in a map": _changed(arrays, example_maps=np.where(maps == maps.max(), np.nan, maps)),
        "maps of booleans": _changed(arrays, example_maps=maps > 0),
        "more mistake maps than mistakes": _changed(
            arrays, mistake_maps=np.zeros((len(arrays["mistake_indices"]) + 1, 2, 28, 28))),
    }
    for case, content in damaged.items():
        np.savez_compressed(run / artifacts.PREDICTIONS, **content)
        with pytest.raises(FmnistError, match=f"test_predictions.npz is damaged: run 'fmnist evaluate {run}'"):
            build_report(run)


def garbled_first_member(archive: bytes) -> bytes:
    """The archive with its first member's compressed data starting with a reserved block type: zlib refuses it."""
    import struct
    import zipfile

    offset = zipfile.ZipFile(io.BytesIO(archive)).infolist()[0].header_offset
    name_length, extra_length = struct.unpack("<HH", archive[offset + 26:offset + 30])  # the local header's own
    start = offset + 30 + name_length + extra_length
    return archive[:start] + b"\xff" + archive[start + 1:]


def test_damaged_predictions_are_refused_with_the_command_that_rewrites_them(tiny_run_dir, tmp_path):
    import numpy as np

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    with np.load(run / artifacts.PREDICTIONS) as saved:
        arrays = dict(saved)
    damaged = {
        "cut": (run / artifacts.PREDICTIONS).read_bytes()[:100],
        "not an archive": b"hello",
        "an array missing": lambda tmp: np.savez(tmp, **{k: v for k, v in arrays.items() if k != "probabilities"}),
        "pickled objects": lambda tmp: np.savez(tmp, **arrays, extra=np.array([{"a": 1}], dtype=object)),
        "garbled inside": garbled_first_member((run / artifacts.PREDICTIONS).read_bytes()),
    }
    for case, content in damaged.items():
        if callable(content):
            content(run / artifacts.PREDICTIONS)
        else:
            (run / artifacts.PREDICTIONS).write_bytes(content)
        with pytest.raises(FmnistError, match=f"test_predictions.npz is damaged: run 'fmnist evaluate {run}'"):
            build_report(run)
    (run / artifacts.PREDICTIONS).write_bytes((tiny_run_dir / artifacts.PREDICTIONS).read_bytes())
    (run / artifacts.PREDICTIONS).chmod(0)  # whole, but not to be read: said so, not called damaged
    refused = run_cli("report", str(run), as_another_user=True)
    assert refused.returncode == 1 and refused.stderr.splitlines()[-1] == (
        f"fmnist: error: cannot read {run / artifacts.PREDICTIONS}: Permission denied; make it readable for this "
        f"user, or 'fmnist evaluate {run}' writes it again")


def test_damaged_metrics_or_history_are_named_with_what_to_do(tiny_run_dir, tmp_path, caplog):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    metrics = artifacts.read_json(run / artifacts.METRICS)
    for edit in ({"confusion_matrix": "x"}, {"per_class": []}, {"test_accuracy": "high"}):
        artifacts.write_json(run / artifacts.METRICS, {**metrics, **edit})
        with pytest.raises(FmnistError, match=f"metrics.json or test_predictions.npz beside it is damaged .*"
                                              f"run 'fmnist evaluate {run}' to write both again"):
            build_report(run)
    (run / artifacts.METRICS).write_text("{cut")
    with pytest.raises(FmnistError, match=f"metrics.json is not valid JSON .*: run 'fmnist evaluate {run}' to write "
                                          "it again"):
        build_report(run)
    config = (run / artifacts.CONFIG).read_bytes()
    (run / artifacts.CONFIG).write_text("{cut")
    for command in (build_report, evaluate_run):
        with pytest.raises(FmnistError, match="config.json is not valid JSON .*: restore it from a copy \\('fmnist "
                                              "predict' and 'fmnist serve' take the run without it\\)$"):
            command(run)
    (run / artifacts.CONFIG).write_bytes(config)
    (run / artifacts.METRICS).unlink()
    (run / artifacts.METRICS).symlink_to("/proc/self/mem")  # there, but no read succeeds (even as root)
    with pytest.raises(FmnistError, match="cannot read .*metrics.json") as refused:
        build_report(run)
    assert "fmnist evaluate" not in str(refused.value)  # scoring again would not mend what the system refuses
    (run / artifacts.METRICS).unlink()
    artifacts.write_json(run / artifacts.METRICS, metrics)
    history = (run / artifacts.HISTORY).read_bytes()
    for damaged in (history + b"\xff\xfe\n", history + b"3,not a number\n", history.replace(b"val_loss", b"val"),
                    b"garbage\n"):
        (run / artifacts.HISTORY).write_bytes(damaged)
        with pytest.raises(FmnistError, match="history.csv is damaged .*: restore it from a copy, or delete it to draw "
                                              "the report without learning curves"):
            write_report(run)  # evaluate's way, too: not an unexpected error
    (run / artifacts.HISTORY).write_bytes(history.splitlines(keepends=True)[0])  # killed before its first epoch
    assert UNKNOWN_EPOCHS in write_report(run).read_text()
    (run / artifacts.HISTORY).unlink()  # a report without it still says how many epochs it cannot tell
    assert UNKNOWN_EPOCHS in write_report(run).read_text()
    (run / artifacts.HISTORY).write_bytes(history.splitlines(keepends=True)[0] + history.splitlines(keepends=True)[1])
    epochs = artifacts.read_json(run / artifacts.STATUS)["epochs"]  # 2: one row of them left
    assert (f"1 / 1 (the lowest val_loss; history.csv holds 1 of the {epochs} epochs status.json records: cut or "
            "edited since? The curves and kept epoch are the file&#x27;s; restore it from a copy)") in page_text(
        build_report(run))
    assert f"history.csv holds 1 of the {epochs} epochs status.json records" in caplog.text
    (run / artifacts.HISTORY).write_bytes(history)
    assert "cut or edited since" not in build_report(run).read_text()
    status = (run / artifacts.STATUS).read_bytes()
    (run / artifacts.STATUS).write_text("{cut")  # what the report takes from it is not worth refusing the rest for
    assert "<th scope=row>epochs run / kept</th>" in build_report(run).read_text()
    assert "status.json is not valid JSON" in caplog.text and "the report leaves out what it says" in caplog.text
    (run / artifacts.STATUS).write_bytes(status)
    config = artifacts.read_json(run / artifacts.CONFIG)
    for edit in ({"settings": []}, {"data": "x"}, {"versions": "keras 3"}):
        artifacts.write_json(run / artifacts.CONFIG, {**config, **edit})
        with pytest.raises(FmnistError, match=r"config.json is damaged \((settings|data|versions) not a JSON object"):
            write_report(run)


def test_two_drawings_of_one_report_take_turns(tiny_run_dir, tmp_path, caplog):
    import threading
    import time

    from fmnist import run_locks

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    before = (run / artifacts.REPORT_HTML).stat().st_mtime_ns
    drawn = threading.Event()
    waiting = f"waiting for another process drawing {run}'s report"
    with caplog.at_level(logging.INFO, logger="fmnist"):
        with run_locks.queued_lock(run / artifacts.REPORT_LOCK, "waiting"):  # as another command drawing it holds it
            later = threading.Thread(target=lambda: (build_report(run), drawn.set()))
            later.start()
            deadline = time.monotonic() + 120
            while waiting not in caplog.text and not drawn.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            # It waits its turn, rather than read what the other is about to replace.
            assert waiting in caplog.text and not drawn.is_set()
            assert (run / artifacts.REPORT_HTML).stat().st_mtime_ns == before
        later.join(60)
    assert drawn.is_set() and (run / artifacts.REPORT_HTML).stat().st_mtime_ns > before


def test_a_loss_not_against_the_plain_labels_is_said_over_the_curves(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    assert "not the plain labels" not in build_report(run).read_text()
    config = artifacts.read_json(run / artifacts.CONFIG)
    for edit, target in (({"teacher": "/runs/cnn"}, "a teacher&#x27;s answers"),
                         ({"label_smoothing": 0.1}, "smoothed labels")):
        artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {**config["settings"], **edit}})
        page = build_report(run).read_text()
        assert (f"<p>Its loss and val_loss are measured against {target}, not the plain labels: their floor is "
                "another") in page
        assert "<th scope=row>test loss (against the plain labels), before / after temperature scaling</th>" in page


def test_the_closing_lines_name_the_kept_epoch(tiny_run_dir):
    history = artifacts.read_history(tiny_run_dir)
    metrics = artifacts.read_json(tiny_run_dir / artifacts.METRICS)
    text, record = training_summary(TrainResult(tiny_run_dir, metrics, len(history["loss"]), 1.25))
    kept = artifacts.best_epoch(history)
    assert f"\nepochs {len(history['loss'])} (epoch {kept} kept), training 1.2s on " in text
    recipe = closest_recipe(artifacts.read_json(tiny_run_dir / artifacts.CONFIG)["settings"])
    assert text.endswith(f"; recipe {recipe}") and ", " in recipe  # set apart from the changes it names
    assert record["epoch_kept"] == kept
    assert record["temperature"] == metrics["temperature"]  # as evaluate --json gives it
