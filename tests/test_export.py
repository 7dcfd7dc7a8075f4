import errno
import hashlib
import json
import logging
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from conftest import module_data, page_text, refused_before_keras, run_cli, tiny_train
from fmnist import artifacts, model_files
from fmnist.data import load_dataset, to_features
from fmnist.errors import FmnistError
from fmnist.export import choose_backend, export_run, list_exports, parity, parity_images, sha256_tree
from fmnist.facts import CLASS_NAMES

UNUSED_IMAGES = np.zeros((0, 784), np.float32)  # for an export refused before it checks parity


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One tiny trained run shared by the export tests, which export copies of it."""
    with module_data(tmp_path_factory, n_test=40) as (base, (folder, sums)):
        run_dir = tiny_train(base / "runs", (folder, sums)).run_dir
        yield run_dir, folder, to_features(load_dataset(folder, checksums=sums).x_test)


def keras_probabilities(run_dir, images):
    model, _ = model_files.load_model(run_dir)
    return np.asarray(model.predict(images, verbose=0))


def test_parity_measures_the_largest_difference_and_the_top_class():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    same = parity(reference, reference.copy())
    assert same["max_abs_diff"] == 0 and same["top_class_agreement"] == 1 and same["passed"]
    shifted = reference.copy()
    shifted[3, 0] += 3e-4
    flipped = reference.copy()
    top = reference[7].argmax()
    flipped[7, top], flipped[7, (top + 1) % 10] = flipped[7, (top + 1) % 10], flipped[7, top]
    off = parity(reference, shifted)
    assert not off["passed"] and off["max_abs_diff"] == pytest.approx(3e-4, rel=1e-3)
    assert parity(reference, flipped)["top_class_agreement"] == pytest.approx(49 / 50)
    with pytest.raises(FmnistError, match="shape"):
        parity(reference, reference[:, :5])


def test_each_format_names_the_backend_that_can_write_it(monkeypatch):
    with pytest.raises(FmnistError, match="cannot write litert from the jax backend.*--backend tensorflow"):
        choose_backend("litert", "jax")
    with pytest.raises(FmnistError, match="cannot write onnx from the jax backend; the .*--backend tensorflow"):
        choose_backend("onnx", "jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # not given as a flag: the message says where it came from
    with pytest.raises(FmnistError, match="from the jax backend \\(from the environment variable KERAS_BACKEND\\)"):
        choose_backend("onnx", None)
    assert choose_backend("saved_model", "jax") == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    assert choose_backend("onnx", None) == "tensorflow"


def test_sha256_tree_covers_every_file_of_a_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_bytes(b"one")
    (tmp_path / "sub" / "b").write_bytes(b"two")
    before = sha256_tree(tmp_path)
    assert sha256_tree(tmp_path / "a") == hashlib.sha256(b"one").hexdigest()
    (tmp_path / "sub" / "b").write_bytes(b"tw0")
    assert sha256_tree(tmp_path) != before


# Each file run as a user would from export.json alone: its input fed, and its output taken, by the names there.
def run_saved_model(path, images, name, output):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return loaded.signatures["serving_default"](**{name: tf.constant(images)})[output].numpy()


def run_onnx(path, images, name, output):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([output], {name: images})[0]


def run_litert(path, images, name, output):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner()(**{name: images})[output]


def check_export(run_dir, fmt, record, images, backend, runner):
    """The record matches the file, the report lists it, and the file reloaded here agrees with Keras on JAX."""
    path = run_dir / record["file"]
    assert record["format"] == fmt and record["backend"] == backend and path.exists()
    assert record["parity"]["passed"] and record["parity"]["images"] == len(images)
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["top_class_agreement"] == 1.0
    on_disk = json.loads((path.parent / artifacts.EXPORT_INFO).read_text())
    assert on_disk == record
    if path.is_file():
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        assert record["sha256"] == sha256_tree(path)
    assert record["sha256"] in page_text(run_dir / artifacts.REPORT_HTML)
    assert fmt in [e["format"] for e in list_exports(run_dir)]
    assert record["input"]["shape"] == [None, 784] and record["input"]["dtype"] == "float32"
    assert record["output"]["shape"] == [None, 10] and record["output"]["classes"] == list(CLASS_NAMES)
    assert f"{record['input']['name']}" in record["usage"] and f"{record['output']['name']}" in record["usage"]
    if fmt == "litert":  # where its Interpreter comes from, as the runner below imports it
        assert "Interpreter from ai_edge_litert.interpreter" in record["usage"]
    exported = np.asarray(runner(path, images, record["input"]["name"], record["output"]["name"]))
    assert np.abs(exported - keras_probabilities(run_dir, images)).max() <= 1e-4


def test_saved_model_from_jax_in_process(short_run, tmp_path, caplog):
    shared, folder, images = short_run  # copied: an export is written into the run, and its report refreshed
    run_dir = shutil.copytree(shared, tmp_path / shared.name)
    with caplog.at_level(logging.WARNING):
        record = export_run(run_dir, "saved_model", "jax", parity_images(run_dir, folder))
    assert "unsaved custom gradients" not in caplog.text  # TensorFlow's warning, about nothing the check does
    check_export(run_dir, "saved_model", record, images, "jax", run_saved_model)


def test_a_run_without_metrics_is_exported_without_refreshing_its_report(short_run, tmp_path, caplog):
    run_dir, folder, _ = short_run
    unscored = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    (unscored / artifacts.METRICS).unlink()  # as after a kill during the evaluation that ends training
    report = (unscored / artifacts.REPORT_HTML).read_bytes()
    with caplog.at_level(logging.WARNING, logger="fmnist.export"):
        record = export_run(unscored, "saved_model", "jax", parity_images(unscored, folder))
    assert (unscored / artifacts.EXPORTS_DIR / "saved_model" / artifacts.EXPORT_INFO).is_file() and record["parity"]
    assert (unscored / artifacts.REPORT_HTML).read_bytes() == report
    # what `fmnist runs` advises for it too
    assert f"the saved_model export is complete; {unscored / artifacts.METRICS} is missing: 'fmnist train --resume " \
           f"{unscored}' scores the run" in caplog.text


def test_an_export_again_replaces_the_earlier_saying_so_but_never_files_of_others(short_run, tmp_path, caplog):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    first = export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    folder_of_export = copy / artifacts.EXPORTS_DIR / "saved_model"
    (folder_of_export / "NOTES.txt").write_text("kept by hand")
    with pytest.raises(FmnistError, match=f"^{folder_of_export} holds NOTES.txt, which fmnist did not write; an "
                                          "export replaces the folder whole: move it out, then export again$"):
        export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert (folder_of_export / "NOTES.txt").read_text() == "kept by hand"
    assert [e["created"] for e in list_exports(copy)] == [first["created"]]
    (folder_of_export / "NOTES.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="fmnist.export"):
        second = export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert f"replaced the earlier saved_model export in {folder_of_export} (sha256 {first['sha256']}, made " \
           f"{first['created']} on jax)" in caplog.text
    assert [e["created"] for e in list_exports(copy)] == [second["created"]]
    (folder_of_export / artifacts.EXPORT_INFO).unlink()  # what is left may be anyone's: a model kept by hand, say
    with pytest.raises(FmnistError, match=f"^{folder_of_export} holds saved_model without the export.json an export "
                                          "of fmnist's has beside it; an export replaces the folder whole: move it "
                                          r"out \(or put its export.json back\), then export again$"):
        export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert (folder_of_export / artifacts.EXPORT_FILES["saved_model"]).is_dir()


def test_an_interrupt_while_the_report_is_refreshed_keeps_the_export_and_says_so(short_run, tmp_path, monkeypatch,
                                                                                  caplog):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))

    def ctrl_c(run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr("fmnist.report.build_report", ctrl_c)
    with caplog.at_level(logging.WARNING, logger="fmnist.export"), pytest.raises(KeyboardInterrupt):
        export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert (copy / artifacts.EXPORTS_DIR / "saved_model" / artifacts.EXPORT_INFO).is_file()
    assert (f"the saved_model export is complete in {copy / artifacts.EXPORTS_DIR / 'saved_model'}; its report was "
            f"not refreshed: run 'fmnist report {copy}'") in caplog.text


def test_a_full_disk_while_the_report_is_refreshed_keeps_the_export_and_says_so(short_run, tmp_path, monkeypatch,
                                                                                 caplog):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))

    def disk_full(run_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fmnist.report.build_report", disk_full)
    with caplog.at_level(logging.WARNING, logger="fmnist.export"):
        record = export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert record["parity"]["passed"] and (copy / record["file"]).is_dir()
    assert "its report was not refreshed: [Errno 28] No space left on device" in caplog.text


def test_a_report_that_cannot_be_refreshed_leaves_the_export_kept_and_answered(short_run, tmp_path, caplog):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    (copy / artifacts.PREDICTIONS).unlink()  # deleted to save room, say: the report cannot be drawn again
    with caplog.at_level(logging.WARNING, logger="fmnist.export"):
        record = export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert record["parity"]["passed"] and (copy / record["file"]).is_dir()
    assert (f"the saved_model export is complete in {copy / artifacts.EXPORTS_DIR / 'saved_model'}; its report was "
            f"not refreshed: {copy / artifacts.PREDICTIONS} is missing") in caplog.text


def test_a_data_checksum_edited_in_the_runs_config_is_named_and_the_data_kept(short_run, tmp_path):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    config = json.loads((copy / artifacts.CONFIG).read_text())
    config["data"]["sha256"]["t10k-images-idx3-ubyte"] = "0" * 64
    artifacts.write_json(copy / artifacts.CONFIG, config)
    files = sorted(path.name for path in folder.iterdir())
    with pytest.raises(FmnistError, match=r"expected 0{64} .*the checksums config.json recorded for the run's data"):
        export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert sorted(path.name for path in folder.iterdir()) == files
    assert not (copy / artifacts.EXPORTS_DIR / "saved_model").exists()


def test_a_killed_exports_leftovers_are_cleared_and_its_predecessor_put_back(short_run, tmp_path, monkeypatch):
    run_dir, folder, _ = short_run
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    first = export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    exports = copy / artifacts.EXPORTS_DIR
    # Killed between _replace_dir's two renames: the earlier export set aside, none in its place, a staging folder.
    (exports / "saved_model").rename(exports / ".saved_model.old")
    (exports / ".saved_model.k1lled00").mkdir()
    (exports / ".saved_model.k1lled00" / "variables.data").write_bytes(b"half")

    def broken(model, target, fmt):
        raise FmnistError("the writer broke")

    monkeypatch.setattr("fmnist.export._write_export", broken)
    with pytest.raises(FmnistError, match="the writer broke"):
        export_run(copy, "saved_model", "jax", parity_images(copy, folder))
    assert [e["created"] for e in list_exports(copy)] == [first["created"]]  # the earlier export, whole again
    assert sorted(p.name for p in exports.iterdir()) == [".saved_model.lock", "saved_model"]


def test_a_second_export_of_the_same_format_at_once_is_refused(tiny_run_dir, tmp_path):
    import fcntl

    run_dir = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run_dir / artifacts.EXPORTS_DIR).mkdir(exist_ok=True)
    with open(run_dir / artifacts.EXPORTS_DIR / ".onnx.lock", "a") as held:  # as the first export's process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FmnistError, match=f"another process is exporting {run_dir} to onnx; wait for it"):
            export_run(run_dir, "onnx", "tensorflow", UNUSED_IMAGES)


def test_a_damaged_export_record_is_left_out_not_shown(tmp_path, caplog):
    good = {"format": "onnx", "file": "exports/onnx/model.onnx", "sha256": "ab" * 32, "backend": "tensorflow",
            "created": "2026-12-02T06:00:00Z", "parity": {"max_abs_diff": 1e-7, "top_class_agreement": 1.0}}
    damaged = {
        "litert": {**good, "format": "litert", "parity": {"max_abs_diff": None, "top_class_agreement": 1.0}},
        "saved_model": {**good, "format": "saved_model", "sha256": 12},
    }
    for fmt, record in {"onnx": good, **damaged}.items():
        (tmp_path / artifacts.EXPORTS_DIR / fmt).mkdir(parents=True)
        artifacts.write_json(tmp_path / artifacts.EXPORTS_DIR / fmt / artifacts.EXPORT_INFO, record)
    with caplog.at_level(logging.WARNING, logger="fmnist.export"):
        assert list_exports(tmp_path) == [good]
    for fmt in damaged:
        assert f"{tmp_path / artifacts.EXPORTS_DIR / fmt / artifacts.EXPORT_INFO} is not an export record" in (
            caplog.text)


@pytest.mark.parametrize("fmt, runner", [("onnx", run_onnx), ("litert", run_litert), ("saved_model", run_saved_model)],
                         ids=["onnx", "litert", "saved_model"])
def test_each_format_from_tensorflow_in_a_process_of_its_own(short_run, tmp_path, fmt, runner):
    shared, folder, images = short_run  # copied: an export is written into the run, and its report refreshed
    run_dir = shutil.copytree(shared, tmp_path / shared.name)
    result = run_cli("export", str(run_dir), "--format", fmt, "--backend", "tensorflow", "--data-dir", str(folder),
                     "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    # export.json's record, and where the export is from here
    assert printed.pop("run_dir") == str(run_dir) and printed.pop("path") == str(run_dir / printed["file"])
    check_export(run_dir, fmt, printed, images, "tensorflow", runner)


def test_a_format_the_backend_cannot_write_is_one_clear_line(short_run):
    run_dir, folder, _ = short_run
    result = run_cli("export", str(run_dir), "--format", "litert", "--data-dir", str(folder))  # KERAS_BACKEND=jax
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "fmnist: error: Keras cannot write litert from the jax backend (from the environment variable KERAS_BACKEND); "
        "the tensorflow backend can: rerun with --backend tensorflow"
    )


def test_a_file_where_the_export_goes_is_named_not_hidden(tiny_run_dir, tmp_path):
    run_dir = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run_dir / artifacts.EXPORTS_DIR).mkdir(exist_ok=True)
    (run_dir / artifacts.EXPORTS_DIR / "onnx").write_text("mine")
    with pytest.raises(FmnistError, match=r"exports/onnx is a file, where the onnx export goes: move it away"):
        export_run(run_dir, "onnx", "tensorflow", UNUSED_IMAGES)
    assert sorted(p.name for p in (run_dir / artifacts.EXPORTS_DIR).iterdir()) == ["onnx"]
    shutil.rmtree(run_dir / artifacts.EXPORTS_DIR)
    (run_dir / artifacts.EXPORTS_DIR).write_text("mine")  # a level up: was "cannot write in ...: File exists"
    with pytest.raises(FmnistError, match=r"exports is a file, where the run's exports go: move it away, then export "
                                          "again$"):
        export_run(run_dir, "onnx", "tensorflow", UNUSED_IMAGES)


@pytest.mark.parametrize("linked", ["exports", "exports/onnx"])
def test_a_linked_exports_folder_is_refused_not_written_through(tiny_run_dir, tmp_path, linked):
    other = shutil.copytree(tiny_run_dir, tmp_path / "other")
    (other / linked).mkdir(parents=True)
    run_dir = shutil.copytree(tiny_run_dir, tmp_path / "run", ignore=shutil.ignore_patterns(artifacts.EXPORTS_DIR))
    (run_dir / linked).parent.mkdir(exist_ok=True)
    (run_dir / linked).symlink_to(other / linked)
    before = sorted(other.rglob("*"))
    with pytest.raises(FmnistError, match=f"{linked} is a link to {other / linked}; .* remove the link"):
        export_run(run_dir, "onnx", "tensorflow", UNUSED_IMAGES)
    assert sorted(other.rglob("*")) == before  # the other run's folder untouched



def test_missing_data_or_a_damaged_config_is_refused_before_keras_starts(tiny_run_dir, tmp_path):
    run_dir = shutil.copytree(tiny_run_dir, tmp_path / "run")
    damaged = shutil.copytree(tiny_run_dir, tmp_path / "damaged")
    (damaged / artifacts.CONFIG).write_text('{"settings": ')
    noted = shutil.copytree(tiny_run_dir, tmp_path / "noted")
    (noted / artifacts.EXPORTS_DIR / "litert").mkdir(parents=True)
    (noted / artifacts.EXPORTS_DIR / "litert" / "NOTES.txt").write_text("mine")
    said = refused_before_keras([["export", str(run_dir), "--format", "onnx", "--data-dir", str(tmp_path / "none")],
                                 ["export", str(damaged), "--format", "onnx"],
                                 ["export", str(noted), "--format", "litert"]])
    assert f"fmnist: error: {tmp_path / 'none'} does not exist: give the folder" in said
    assert f"fmnist: error: {damaged / artifacts.CONFIG} is not valid JSON" in said
    assert "column 14 (char 13)): restore it from a copy ('fmnist predict' and 'fmnist serve' take the run" in said
    assert f"fmnist: error: {noted / artifacts.EXPORTS_DIR / 'litert'} holds NOTES.txt, which fmnist did not" in said
    assert not (run_dir / artifacts.EXPORTS_DIR / "onnx").exists()


def test_a_missing_converter_is_named_with_the_command_that_installs_it(tmp_path):
    from fmnist.export import _write_export

    class KerasWithoutOnnx:  # what Keras' export raises where tf2onnx or onnx is not installed
        def export(self, *args, **kwargs):
            raise ModuleNotFoundError("No module named 'onnx'")

    with pytest.raises(FmnistError, match=r"^onnx export needs a package that is missing \(No module named 'onnx'\); "
                                          f"install the export extra: {re.escape(sys.executable)} -m pip install "
                                          r".*\(in fmnist's checkout: bash "
                                          r"scripts/setup.sh true\)$") as refused:
        _write_export(KerasWithoutOnnx(), tmp_path / "model.onnx", "onnx")
    # Each of the extra's packages by name, with its bounds: installed from a wheel, there is no checkout to set up.
    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["export"]
    command = str(refused.value).split("install the export extra: ")[1].split(" (in fmnist's")[0]
    assert {str(Requirement(r)) for r in shlex.split(command)[4:]} == {str(Requirement(r)) for r in extra}


def test_the_printed_export_path_is_absolute_from_a_run_given_relative(tmp_path, monkeypatch):
    from fmnist.export import summary_text

    monkeypatch.chdir(tmp_path)
    record = {"format": "onnx", "file": "exports/onnx/model.onnx", "sha256": "0" * 64, "runtime": "onnxruntime",
              "backend": "tensorflow", "usage": "...",
              "input": {"name": "pixels", "dtype": "float32", "shape": [None, 784]},
              "output": {"name": "probabilities", "shape": [None, 10]},
              "parity": {"images": 1000, "max_abs_diff": 1e-7, "tolerance": 1e-4, "top_class_agreement": 1.0}}
    said = summary_text(Path("runs/r"), record)
    assert said.splitlines()[0] == f"onnx: {tmp_path / 'runs' / 'r' / 'exports' / 'onnx' / 'model.onnx'}"
