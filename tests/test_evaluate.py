import dataclasses
import hashlib
import html
import json
import logging
import shutil

import keras
import numpy as np
import pytest
from conftest import refused_before_keras, write_idx_set
from sklearn.metrics import accuracy_score, log_loss

from fmnist import artifacts, model_files, run_list
from fmnist.data import load_dataset, to_features
from fmnist.evaluate import FEW_STEPS, calibration_metrics, evaluate_run, likely_cause
from fmnist.explain import EXPLAINED_MISTAKES, occlusion_maps
from fmnist.metrics import calibration_bins
from fmnist.settings import RECIPES


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_evaluate_scores_the_saved_model_and_keeps_what_the_report_draws(tmp_path, tiny_run_dir, caplog):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")  # evaluate rewrites the run's files: not the shared one's
    dataset = load_dataset(tmp_path / "data", checksums=write_idx_set(tmp_path / "data"))  # the tiny run's own data
    with caplog.at_level(logging.INFO, logger="fmnist"):
        metrics = evaluate_run(run, dataset=dataset)
    assert "scoring" in caplog.text and ", macro F1 " not in caplog.text  # the command prints it once, as its result

    model, _ = model_files.load_model(run)
    expected = np.asarray(model.predict(to_features(dataset.x_test), verbose=0))
    saved = np.load(run / artifacts.PREDICTIONS)
    np.testing.assert_allclose(saved["probabilities"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(saved["y_true"], dataset.y_test)
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(dataset.y_test, expected.argmax(axis=1)))
    low, high = metrics["test_accuracy_ci95"]
    assert low <= metrics["test_accuracy"] <= high
    assert metrics["model_sha256"] == hashlib.sha256((run / artifacts.MODEL).read_bytes()).hexdigest()
    assert artifacts.read_json(run / artifacts.METRICS)["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["evaluated_backend"] == keras.backend.backend()  # which may not be the one it trained on
    assert f"<th scope=row>scored</th><td>{metrics['evaluated']} on {keras.backend.backend()}</td>" in (
        run / artifacts.REPORT_HTML).read_text()

    mistakes = saved["mistake_indices"]
    assert len(mistakes) == (expected.argmax(axis=1) != dataset.y_test).sum()  # 20 test images: all under 24
    assert (expected[mistakes].argmax(axis=1) != dataset.y_test[mistakes]).all()
    assert (np.diff(expected[mistakes].max(axis=1)) <= 1e-6).all()  # most confident first
    np.testing.assert_array_equal(saved["mistake_images"], dataset.x_test[mistakes])
    assert (run / artifacts.REPORT_HTML).is_file()

    # Occlusion maps, from the same model, of each class's clearest right answer and of the first mistakes.
    examples, right = saved["example_indices"], expected.argmax(axis=1) == dataset.y_test
    assert len(examples) == len(np.unique(dataset.y_test[right])) and right[examples].all()
    np.testing.assert_array_equal(saved["example_images"], dataset.x_test[examples])
    forward = lambda x: np.asarray(model.predict(x, verbose=0))  # noqa: E731
    features = to_features(dataset.x_test)
    expected_maps = occlusion_maps(forward, features[examples], dataset.y_test[examples])
    np.testing.assert_allclose(saved["example_maps"], expected_maps, atol=1e-5)
    shown = mistakes[:EXPLAINED_MISTAKES]
    assert saved["mistake_maps"].shape == (len(shown), 2, 28, 28)
    expected_maps = occlusion_maps(forward, features[shown], dataset.y_test[shown])
    np.testing.assert_allclose(saved["mistake_maps"][:, 1], expected_maps, atol=1e-5)  # for the true class
    assert (run / artifacts.EVIDENCE_CLASSES_PNG).is_file() == (len(examples) > 0)
    assert (run / artifacts.EVIDENCE_MISTAKES_PNG).is_file() == (len(shown) > 0)
    assert "What the model looks at" in (run / artifacts.REPORT_HTML).read_text()

    # The test loss of the network as trained: its softmax layer's weights times T undo the folded temperature.
    temperature = artifacts.read_json(run / artifacts.CALIBRATION)["temperature"]
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * temperature, bias * temperature])
    trained = np.asarray(model.predict(features, verbose=0))
    assert metrics["test_loss_before_scaling"] == pytest.approx(
        log_loss(dataset.y_test, trained, labels=range(10)), rel=1e-4)
    assert metrics["test_loss"] == pytest.approx(log_loss(dataset.y_test, expected, labels=range(10)), rel=1e-4)
    assert (f"<td>{metrics['test_loss_before_scaling']:.4f} / {metrics['test_loss']:.4f}</td>"
            in (run / artifacts.REPORT_HTML).read_text())


def test_ece_before_scaling_is_the_models_before_its_temperature_was_folded_in(tmp_path):
    rng = np.random.default_rng(0)
    logits, y_true = rng.normal(size=(500, 10)) * 3, rng.integers(0, 10, 500)
    artifacts.write_json(tmp_path / artifacts.CALIBRATION, {"temperature": 2.5})
    result = calibration_metrics(tmp_path, y_true, _softmax(logits / 2.5))  # what the saved model gives
    assert result["temperature"] == 2.5
    assert result["ece_before_scaling"] == pytest.approx(calibration_bins(y_true, _softmax(logits))["ece"])
    assert result["ece"] == pytest.approx(calibration_bins(y_true, _softmax(logits / 2.5))["ece"])
    assert result["ece"] != pytest.approx(result["ece_before_scaling"])


def test_a_run_without_a_temperature_is_scored_as_it_is_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(1)
    probabilities, y_true = _softmax(rng.normal(size=(200, 10)) * 2), rng.integers(0, 10, 200)
    result = calibration_metrics(tmp_path, y_true, probabilities)
    assert result["temperature"] == 1.0
    assert result["ece"] == pytest.approx(result["ece_before_scaling"])
    assert "calibration.json is missing: taking the model as it is" in caplog.text  # lost, it would mislead


@pytest.mark.parametrize("record", [{"temperature": 0}, {"temperature": "x"}, {"temperature": None}, [1.5], {}])
def test_a_damaged_temperature_is_refused_by_name(tmp_path, record):
    from fmnist.errors import FmnistError

    artifacts.write_json(tmp_path / artifacts.CALIBRATION, record)
    with pytest.raises(FmnistError, match="calibration.json is damaged"):
        calibration_metrics(tmp_path, np.zeros(3, int), np.full((3, 10), 0.1))


def test_a_failure_drawing_freshly_scored_files_is_not_blamed_on_them(tmp_path, tiny_run_dir, monkeypatch):
    from fmnist import plots

    def broken(*args, **kwargs):
        raise ValueError("a bug in drawing")

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    dataset = load_dataset(tmp_path / "data", checksums=write_idx_set(tmp_path / "data"))
    monkeypatch.setattr(plots, "curves_png", broken)  # 'damaged: run fmnist evaluate' would send evaluate in a loop
    with pytest.raises(ValueError, match="a bug in drawing"):
        evaluate_run(run, dataset=dataset)


def test_a_damaged_history_is_refused_before_any_score_is_replaced(tmp_path, tiny_run_dir):
    from fmnist.errors import FmnistError
    from fmnist.report import write_report

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    dataset = load_dataset(tmp_path / "data", checksums=write_idx_set(tmp_path / "data"))
    (run / artifacts.HISTORY).write_text("x,y\n")
    scored = {name: (run / name).read_bytes() for name in (artifacts.METRICS, artifacts.PREDICTIONS)}
    with pytest.raises(FmnistError, match="history.csv is damaged"):
        evaluate_run(run, dataset=dataset)
    written = []
    with pytest.raises(FmnistError, match="history.csv is damaged"):  # nor, checked then, in the drawing's turn
        write_report(run, lambda: written.append(True))
    assert not written and {name: (run / name).read_bytes() for name in scored} == scored


def test_scores_are_written_in_the_drawings_turn_so_two_evaluations_never_mix(tmp_path, tiny_run_dir, caplog):
    import threading
    import time

    from fmnist import run_locks

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    dataset = load_dataset(tmp_path / "data", checksums=write_idx_set(tmp_path / "data"))
    scored = [(run / name).read_bytes() for name in (artifacts.METRICS, artifacts.PREDICTIONS)]
    with caplog.at_level(logging.INFO, logger="fmnist"):
        # Held as another evaluation holds it, writing and drawing.
        with run_locks.queued_lock(run / artifacts.REPORT_LOCK, "waiting"):
            later = threading.Thread(target=evaluate_run, args=(run,), kwargs={"dataset": dataset})
            later.start()
            deadline = time.monotonic() + 120
            while "waiting for another process drawing" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "waiting for another process drawing" in caplog.text  # scored, and waiting its turn
            # Neither file written yet: the other's metrics cannot end up beside this one's predictions.
            assert [(run / name).read_bytes() for name in (artifacts.METRICS, artifacts.PREDICTIONS)] == scored
        later.join(120)
    assert artifacts.read_json(run / artifacts.METRICS)["evaluated"] != json.loads(scored[0])["evaluated"]


def test_a_model_no_better_than_guessing_is_called_so(tmp_path, tiny_run_dir, caplog):
    # The tiny run learned random labels: on 3,000 more random images it scores about 0.10, surely under 0.20.
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    dataset = load_dataset(tmp_path / "data", checksums=write_idx_set(tmp_path / "data", n_test=3000, seed=1))
    metrics = evaluate_run(run, dataset=dataset)
    assert metrics["test_accuracy_ci95"][1] < 0.2
    assert "the model learned next to nothing" in caplog.text
    # Kept where the run is read later, not only said once: its report, and its line in 'fmnist runs'.
    verdict = caplog.text.split("the model learned next to nothing: ")[1].split(" train for more epochs")[0]
    assert html.escape(verdict, quote=True) in (run / artifacts.REPORT_HTML).read_text()
    assert run_list.summarize(run)["notes"] == ["learned next to nothing: its report says the likely cause"]
    # Trained at the spec's rate, a working one: the cause named is too few steps, not the rate.
    assert artifacts.read_json(run / artifacts.CONFIG)["settings"]["learning_rate"] == 0.001
    config = artifacts.read_json(run / artifacts.CONFIG)
    # Its steps: each epoch's batches of its training split.
    steps = len(artifacts.read_history(run)["loss"]) * -(-len(artifacts.read_split(run, "train")) //
                                                         config["settings"]["batch_size"])
    assert ("It reached only 0.1" in caplog.text and "on its training images, at the spec recipe's learning rate "
            f"(0.001), a working one: too few training steps ({steps} in all) are the usual cause; train for more "
            "epochs\n" in caplog.text)
    assert "BatchNorm" not in caplog.text and "A learning rate far from" not in caplog.text

    def cause_at(rate: float) -> str:
        artifacts.write_json(run / artifacts.CONFIG,
                             {**config, "settings": {**config["settings"], "learning_rate": rate}})
        return likely_cause(run)

    assert cause_at(2.5) == ("A learning rate far from a working one is the usual cause (this run's 2.5; the spec's "
                             "0.001): too large, its steps overshoot; train again with one nearer it, --learning-rate "
                             "0.001")
    assert cause_at(float("nan")).endswith("(the spec's 0.001): its learning curves tell")  # edited: no rate to judge
    artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {**config["settings"], **RECIPES["cnn"],
                                                                         "learning_rate": 1.0}})
    assert "(this run's 1; the cnn recipe's 0.002): too large, its steps overshoot; train again with one nearer it, " \
           "--learning-rate 0.002" in likely_cause(run)  # its own recipe's rate, not the spec's
    assert cause_at(2e-3).endswith(f"at the cnn recipe's learning rate (0.002), a working one: too few training steps "
                                   f"({steps} in all) are the usual cause; train for more epochs")
    # A rate tune might draw, neither a recipe's nor far from one: the few steps named, not the rate.
    assert cause_at(1.447e-4).endswith(f"at a learning rate of 0.0001447, within ten times the spec's 0.001: too few "
                                       f"training steps ({steps} in all) are the usual cause; train for more epochs")
    assert cause_at(9e-6).startswith("A learning rate far from a working one is the usual cause (this run's 9e-06; "
                                     "the spec's 0.001): too small, its steps barely move the weights; train again")
    # A distilled student's epoch trains on views of its images too: 3 views each, four times the batches.
    artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {
        **config["settings"], "teacher": "/runs/cnn", "distill_views": 3}})
    taught_steps = len(artifacts.read_history(run)["loss"]) * -(-4 * len(artifacts.read_split(run, "train")) //
                                                                config["settings"]["batch_size"])
    assert f"too few training steps ({taught_steps} in all)" in likely_cause(run) and taught_steps > steps
    kept = (run / artifacts.SPLIT).read_bytes()
    with np.load(run / artifacts.SPLIT) as split:  # as if it had taken FEW_STEPS or more
        copies = -(-FEW_STEPS * config["settings"]["batch_size"] // len(split["train"]))
        np.savez(run / artifacts.SPLIT, train=np.tile(split["train"], copies), validation=split["validation"])
    assert cause_at(1.447e-4).startswith("Its learning rate (0.0001447) lies within ten times the spec's (0.001) and "
                                         "it trained for ")
    (run / artifacts.SPLIT).unlink()  # steps unknown: the rate's cause, as before steps were counted
    assert "too few training steps are the usual cause" in cause_at(0.001)
    assert cause_at(1.447e-4) == ("Its learning rate (0.0001447) lies within ten times the spec's (0.001): its "
                                  "learning curves tell what held it back")  # no count it does not know
    (run / artifacts.SPLIT).write_bytes(b"")  # damaged (empty) as well: the same, not a crash
    assert "too few training steps are the usual cause" in cause_at(0.001)
    (run / artifacts.SPLIT).write_bytes(kept)
    artifacts.write_json(run / artifacts.CONFIG, config)
    caplog.clear()
    # Had it fitted its training images (a ConvNet after a few dozen steps does), the cause named is BatchNorm's.
    epochs = len(artifacts.read_history(run)["loss"])
    rows = ["epoch,accuracy,loss,val_accuracy,val_loss"] + [f"{i},0.93,0.2,0.13,4.0" for i in range(epochs)]
    (run / artifacts.HISTORY).write_text("\n".join(rows) + "\n")
    cause = likely_cause(run)  # what the warning above says after its figures
    assert cause.startswith("It reached 0.93 on its training images: too few training steps")
    assert "--limit" not in cause and cause.endswith("train for more epochs, or with a smaller --batch-size")
    artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {**config["settings"], "batch_size": 2}})
    assert likely_cause(run).endswith("train for more epochs")  # no smaller one BatchNorm takes
    artifacts.write_json(run / artifacts.CONFIG, config)
    caplog.clear()
    answers = np.load(run / artifacts.PREDICTIONS)["probabilities"].argmax(axis=1)
    evaluate_run(run, dataset=dataclasses.replace(dataset, y_test=answers.astype(np.uint8)))  # all right this time
    assert "learned next to nothing" not in caplog.text


def test_scoring_a_run_of_a_seed_group_again_says_how_to_compute_its_summary_again(tmp_path, tiny_run_dir, caplog):
    from fmnist.evaluate import summarized_scores, warn_of_group_summary

    group = tmp_path / "group"
    run = shutil.copytree(tiny_run_dir, group / "run")
    (group / artifacts.SEED_GROUP).write_text("{}")  # a --seeds group, still without its summary: nothing to say
    earlier = summarized_scores(run)
    metrics = artifacts.read_json(run / artifacts.METRICS)
    said = f"{group / artifacts.SEED_SUMMARY} still holds this run's earlier scores: 'fmnist train --resume {group}'"
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        warn_of_group_summary(run, None)
        assert caplog.text == ""
        entry = {"run_dir": run.name, **{key: metrics[key] for key in ("test_accuracy", "ece_before_scaling", "ece")}}
        artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [entry]})
        warn_of_group_summary(run, earlier)  # scored again to the same figures (same backend): the summary holds
        assert caplog.text == ""
        artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [{**entry, "ece": 0.5}]})
        warn_of_group_summary(run, earlier)  # the same figures as before, but the summary stale since an earlier one
        assert said in caplog.text
        caplog.clear()
        artifacts.write_json(group / artifacts.SEED_SUMMARY, {"runs": [entry]})
        per_class = {**metrics["per_class"], "Shirt": {**metrics["per_class"]["Shirt"], "f1-score": 0.5}}
        for changed in ({"test_accuracy": metrics["test_accuracy"] + 0.01}, {"ece": 0.5}, {"per_class": per_class}):
            artifacts.write_json(run / artifacts.METRICS, {**metrics, **changed})
            warn_of_group_summary(run, earlier)
            assert said in caplog.text
            caplog.clear()
        artifacts.write_json(run / artifacts.METRICS, metrics)
        warn_of_group_summary(run, None)  # its earlier scores unreadable: cannot tell, so said
    assert said in caplog.text


def test_missing_data_is_refused_before_keras_starts(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    said = refused_before_keras([["evaluate", str(run), "--data-dir", str(tmp_path / "none")]])
    assert f"fmnist: error: {tmp_path / 'none'} does not exist: give the folder that holds the test set's two IDX " \
           "files" in said
