import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fmnist import artifacts, model_files, run_locks, runs
from fmnist.errors import FmnistError
from fmnist.model import build_cnn, build_dense


@pytest.mark.parametrize("architecture", ["dense", "cnn"])
def test_saved_model_loads_back_and_predicts_the_same(tmp_path, architecture):
    model = build_dense((16, 8), 0.3) if architecture == "dense" else build_cnn()
    x = np.random.default_rng(0).random((10, 784), dtype=np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(10), epochs=1, verbose=0)  # every weight and BatchNorm statistic away from its start
    checksum = model_files.save_model(model, tmp_path)
    loaded, loaded_checksum = model_files.load_model(tmp_path)
    assert loaded_checksum == checksum == artifacts.sha256_file(tmp_path / artifacts.MODEL)
    # Loaded with zeros for initializers (on JAX, drawing random starts compiled a program per shape): every one
    # of them replaced by the saved value.
    for saved, back in zip(model.weights, loaded.weights, strict=True):
        assert saved.path.split("/")[-2:] == back.path.split("/")[-2:]  # the same layer's same variable
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(back))
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), rtol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))


def test_tampered_model_is_refused(tmp_path):
    model_files.save_model(build_dense((8,), 0.0), tmp_path)
    with open(tmp_path / artifacts.MODEL, "ab") as f:
        f.write(b"x")
    with pytest.raises(FmnistError, match="does not match its recorded SHA-256 .*changed or damaged: restore it from "
                                          "a copy, or train a new run$"):
        model_files.load_model(tmp_path)
    model_path, recorded = model_files.recorded_model_path(tmp_path)  # the cheap check: there, with a checksum
    assert model_path == tmp_path / artifacts.MODEL and recorded != artifacts.sha256_file(model_path)


def test_the_model_loaded_is_the_one_whose_checksum_was_checked(tmp_path, monkeypatch):
    """A model file replaced while it loads (a run saving over it, a copy landing) cannot pass as the checked one."""
    checked = build_dense((8,), 0.0)
    checksum = model_files.save_model(checked, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    model_files.save_model(build_dense((8,), 0.0), other)  # other random weights
    unpack = model_files._unpack_with_zero_initializers

    def replaced_first(*args):
        (other / artifacts.MODEL).replace(tmp_path / artifacts.MODEL)
        unpack(*args)

    monkeypatch.setattr(model_files, "_unpack_with_zero_initializers", replaced_first)
    loaded, loaded_checksum = model_files.load_model(tmp_path)
    assert loaded_checksum == checksum
    for saved, back in zip(checked.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(back))


def test_model_without_checksum_or_of_other_format_is_refused(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"PK")
    with pytest.raises(FmnistError, match="sha256 is missing"):
        model_files.load_model(tmp_path / "model.keras")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(FmnistError, match="not a .keras model"):
        model_files.load_model(tmp_path / "weights.h5")
    with pytest.raises(FmnistError, match="no model at"):
        model_files.load_model(tmp_path / "nothing-here")
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / artifacts.CONFIG).write_text("{}")
    runs.set_status(lost, "finished")
    with pytest.raises(FmnistError, match="lost has lost its model.keras: restore it from a copy, or train a new run"):
        model_files.load_model(lost)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for state in ("running", "interrupted", "failed"):  # killed, stopped, or failed mid-training
        artifacts.write_json(unfinished / artifacts.STATUS, {"state": state})
        with pytest.raises(FmnistError, match=f"has no model yet: .* 'fmnist train --resume {unfinished}' finishes"):
            model_files.load_model(unfinished)
    # Caught between writing its model and its checksum, a run in training is said to be so, not refused as foreign.
    (unfinished / artifacts.MODEL).write_bytes(b"PK")
    with run_locks.claim_run(unfinished):
        with pytest.raises(FmnistError, match=f"^{unfinished} has no checksummed model yet: it is being trained right "
                                              "now; wait for it to finish"):
            model_files.load_model(unfinished)
    # Its training killed between the two writes: its resume finishes it, as any run stopped in training.
    with pytest.raises(FmnistError, match=f"^{unfinished} has no checksummed model yet: its training has not "
                                          f"finished; 'fmnist train --resume {unfinished}' finishes it"):
        model_files.load_model(unfinished)
    (unfinished / artifacts.STATUS).unlink()  # nothing says it was in training: what is there is not vouched for
    with pytest.raises(FmnistError, match="sha256 is missing"):
        model_files.load_model(unfinished)


def test_a_model_with_a_matching_checksum_that_is_damaged_or_for_another_task_is_refused(tmp_path, monkeypatch):
    import keras

    def with_checksum(write) -> None:  # as if someone had rewritten model.keras.sha256 to match
        write(tmp_path / artifacts.MODEL)
        (tmp_path / artifacts.MODEL_SHA256).write_text(artifacts.sha256_file(tmp_path / artifacts.MODEL) + "\n")

    with_checksum(keras.Sequential([keras.Input((100,)), keras.layers.Dense(3, activation="softmax")]).save)
    with pytest.raises(FmnistError, match="maps 100 features to 3 classes, not 784 pixels to 10 classes"):
        model_files.load_model(tmp_path)
    with_checksum(keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]).save)
    with pytest.raises(FmnistError, match="maps shape 28x28 to 10 classes, not 784 pixels to 10 classes"):
        model_files.load_model(tmp_path)  # not "28 features"
    with_checksum(keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)]).save)  # scores, some negative
    with pytest.raises(FmnistError, match=r"does not end in a softmax, so its answers are not probabilities of the 10 "
                                          r"classes: end it in Dense\(10, activation='softmax'\)"):
        model_files.load_model(tmp_path)
    for last in (keras.layers.Dense(10, activation="softmax"), keras.layers.Softmax()):
        layers = [keras.Input((784,)), last] if isinstance(last, keras.layers.Dense) else [
            keras.Input((784,)), keras.layers.Dense(10), last]
        with_checksum(keras.Sequential(layers).save)
        assert model_files.load_model(tmp_path)[0].output_shape == (None, 10)
    whole = (tmp_path / artifacts.MODEL).read_bytes()
    with_checksum(lambda path: path.write_bytes(whole[: len(whole) // 2]))
    for check in (model_files.verified_model_path, model_files.load_model):  # the first before Keras is imported
        with pytest.raises(FmnistError, match="model.keras is not a Keras model .*: the file is damaged or from"):
            check(tmp_path)

    def a_member_whose_compressed_data_is_garbled(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for member in model_files.ARCHIVE_MEMBERS:
                archive.writestr(member, "{}" * 1000)
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
        data = bytearray(path.read_bytes())
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        data[start:start + 4] = b"\xff\xff\xff\xff"  # no valid deflate block begins so
        path.write_bytes(bytes(data))

    with_checksum(a_member_whose_compressed_data_is_garbled)
    with pytest.raises(FmnistError, match="model.keras cannot be unpacked \\(.*\\): the file is damaged or from"):
        model_files.load_model(tmp_path)

    def another_archive(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a model")

    with_checksum(another_archive)
    with pytest.raises(FmnistError, match="model.keras cannot be unpacked \\(it lacks config.json, metadata.json, "
                                          "model.weights.h5\\): the file is damaged or from"):
        model_files.load_model(tmp_path)

    def an_archive_keras_cannot_read(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            for member in model_files.ARCHIVE_MEMBERS:
                archive.writestr(member, "{}")

    build_dense((8,), 0.0).save(tmp_path / "small.keras")
    with zipfile.ZipFile(tmp_path / "small.keras") as archive:
        weights_size = archive.getinfo("model.weights.h5").file_size
    with_checksum(lambda path: (tmp_path / "small.keras").replace(path))
    with monkeypatch.context() as patch:  # as a model whose weights unpack to over a GiB
        patch.setattr(model_files, "MAX_MEMBER_BYTES", weights_size - 1)
        with pytest.raises(FmnistError, match=f"its model.weights.h5 unpacks to {weights_size:,} bytes, over the "):
            model_files.load_model(tmp_path)

    with_checksum(an_archive_keras_cannot_read)
    with pytest.raises(FmnistError, match="Keras cannot load .*model.keras .*: the file is damaged or from") as caught:
        model_files.load_model(tmp_path)
    assert caught.value.__cause__ is not None  # what Keras said, for --debug to show
    diverged = build_dense((8,), 0.0)
    diverged.layers[-1].kernel.assign(np.full((8, 10), np.nan, dtype=np.float32))
    with_checksum(diverged.save)
    with pytest.raises(FmnistError, match="holds NaN or infinite weights: it cannot classify anything"):
        model_files.load_model(tmp_path)


def test_a_runs_model_that_is_not_the_network_its_settings_describe_is_refused(tiny_run_dir, tmp_path, capsys):
    from fmnist.cli import main

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")  # dense 16-8
    model_files.load_model(run)  # its own model loads
    for model, named in ((build_cnn(), "the ConvNet"), (build_dense((16,)), "a dense network of hidden sizes 16")):
        model_files.save_model(model, run)  # copied in from another run, with its checksum
        with pytest.raises(FmnistError, match=f"model.keras is not this run's model: it is {named}, where config.json "
                                              "describes a dense network of hidden sizes 16-8 \\(copied in from"):
            model_files.load_model(run)
        with pytest.raises(FmnistError, match="is not this run's model"):  # its model.keras given as a file
            model_files.load_model(run / artifacts.MODEL)
    # Copied out of the run, the file alone carries what predicting needs: no run to match.
    alone = shutil.copytree(run, tmp_path / "alone", ignore=shutil.ignore_patterns(artifacts.CONFIG))
    model_files.load_model(alone / artifacts.MODEL)
    assert main(["evaluate", str(run)]) == 1  # not scored under this run's settings and calibration
    assert "is not this run's model: it is a dense network of hidden sizes 16" in capsys.readouterr().err
    assert (run / artifacts.METRICS).read_bytes() == (tiny_run_dir / artifacts.METRICS).read_bytes()


def test_a_runs_model_beside_a_damaged_config_loads_with_a_warning_that_it_went_unchecked(tiny_run_dir, tmp_path,
                                                                                            caplog):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.CONFIG).write_text("{ damaged")  # the model holds its own architecture: predict takes it
    with caplog.at_level(logging.WARNING, logger="fmnist.model_files"):
        model_files.load_model(run)
    assert "config.json is not valid JSON" in caplog.text
    assert "the model is used as it is, unchecked against the run's settings: restore config.json" in caplog.text
