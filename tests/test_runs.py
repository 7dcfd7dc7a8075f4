import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import module_data, run_cli, tiny_train
from fmnist import artifacts, backup_file, model_files, runs
from fmnist.errors import FmnistError


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """A runs directory with one real finished run beside half-written, damaged and old-style ones (read only)."""
    with module_data(tmp_path_factory) as (base, tiny_data):
        yield make_mixed_runs(base / "runs", tiny_data)


def make_mixed_runs(runs_dir, tiny_data):
    finished = tiny_train(runs_dir, tiny_data).run_dir
    config = json.loads((finished / artifacts.CONFIG).read_text())

    running = runs.create_run_dir(runs_dir, "running")
    artifacts.write_json(running / artifacts.CONFIG, config)
    runs.set_status(running, "running")
    # Killed mid-write of epoch 2's row, after writing epoch 1's row but before its backup: resumed after epoch 0.
    (running / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n1,1.2\n2,1.")
    np.savez(running / artifacts.BACKUP, meta=np.array(json.dumps({"format": backup_file.FORMAT, "epochs_done": 1})))

    interrupted = runs.create_run_dir(runs_dir, "interrupted")
    artifacts.write_json(interrupted / artifacts.CONFIG, config)
    runs.set_status(interrupted, "interrupted")
    (interrupted / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n")  # and no backup: resumed from the start

    damaged = runs.create_run_dir(runs_dir, "damaged")
    (damaged / artifacts.CONFIG).write_text("{\"settings\": ")
    (damaged / artifacts.STATUS).write_text("[1, 2]")
    (damaged / artifacts.METRICS).write_text("\"not an object\"")

    old = runs_dir / "old-style"  # an older layout: a config without settings or time, no status file
    old.mkdir()
    (old / artifacts.CONFIG).write_text(json.dumps({"backend": "tensorflow", "settings": "512,256"}))

    mistyped = runs.create_run_dir(runs_dir, "mistyped")  # valid JSON, values of the wrong types
    artifacts.write_json(mistyped / artifacts.CONFIG, {"settings": {"learning_rate": "fast", "hidden_sizes": "wide"}})
    artifacts.write_json(mistyped / artifacts.STATUS, {"state": "finished", "epochs": "three", "train_seconds": [1]})

    empty = runs.create_run_dir(runs_dir, "empty")  # made, then the process died before writing anything
    # Files that are there but cannot be read (as root, no permission bit stops a read: a read of
    # /proc/self/mem at offset 0 fails with an I/O error instead).
    unreadable = runs.create_run_dir(runs_dir, "unreadable")
    for name in (artifacts.CONFIG, artifacts.STATUS, artifacts.HISTORY):
        (unreadable / name).symlink_to("/proc/self/mem")
    grouped = tiny_train(runs_dir / "study", tiny_data, dropout=0.1, name="member").run_dir  # a group, one level down
    (runs_dir / "notes.txt").write_text("not a run")
    return {"dir": runs_dir, "finished": finished, "running": running, "interrupted": interrupted,
            "damaged": damaged, "old": old, "mistyped": mistyped, "empty": empty, "unreadable": unreadable,
            "grouped": grouped}


def test_listing_reads_every_run_and_never_fails(mixed_runs):
    rows = runs.list_runs(mixed_runs["dir"])
    by_name = {row["run"]: row for row in rows}
    expected = {mixed_runs[k].name
                for k in ("finished", "running", "interrupted", "damaged", "old", "mistyped", "empty", "unreadable")}
    assert set(by_name) == expected | {f"study/{mixed_runs['grouped'].name}"}
    assert [r["created"] for r in rows] == sorted((r["created"] for r in rows), reverse=True)

    finished = by_name[mixed_runs["finished"].name]
    metrics = json.loads((mixed_runs["finished"] / artifacts.METRICS).read_text())
    status = json.loads((mixed_runs["finished"] / artifacts.STATUS).read_text())
    assert finished["status"] == "finished" and finished["notes"] == []
    assert finished["test_accuracy"] == metrics["test_accuracy"] and finished["macro_f1"] == metrics["macro_f1"]
    assert finished["train_seconds"] == status["train_seconds"] and finished["epochs"] == status["epochs"]
    assert finished["settings"]["hidden_sizes"] == [16, 8] and finished["backend"] == "jax"
    assert finished["recipe"] == "spec (+batch_size, hidden_sizes)"  # the spec with other hidden sizes and batch size
    assert by_name[f"study/{mixed_runs['grouped'].name}"]["recipe"] == "spec (+3)"  # and dropout

    killed = by_name[mixed_runs["running"].name]  # status.json says running, but no process holds the run's lock
    assert killed["status"] == "killed" and killed["epochs"] == 1 and killed["test_accuracy"] is None
    assert killed["notes"] == by_name[mixed_runs["interrupted"].name]["notes"] == ["fmnist train --resume continues it"]
    assert by_name[mixed_runs["interrupted"].name]["epochs"] == 0
    with runs.claim_run(mixed_runs["running"]):  # as the process training it does
        assert runs.summarize(mixed_runs["running"])["status"] == "running"
    assert by_name[mixed_runs["interrupted"].name]["status"] == "interrupted"
    damaged = by_name[mixed_runs["damaged"].name]
    assert damaged["status"] == "unknown"
    assert set(damaged["notes"]) == {"config.json unreadable", "status.json unreadable", "metrics.json unreadable"}
    old = by_name[mixed_runs["old"].name]
    assert old["backend"] == "tensorflow" and old["settings"] == {} and old["notes"] == ["no status.json"]
    mistyped = by_name[mixed_runs["mistyped"].name]
    assert mistyped["status"] == "finished" and mistyped["epochs"] is None and mistyped["train_seconds"] is None
    assert mistyped["notes"] == ["not scored: fmnist train --resume scores it",  # finished, but no metrics.json
                                 "no model.keras, model.keras.sha256: restore them from a copy, or train a new run "
                                 "with its settings"]
    assert by_name[mixed_runs["empty"].name]["notes"] == ["no config.json", "no status.json"]
    assert by_name[mixed_runs["empty"].name]["recipe"] is None
    assert set(by_name[mixed_runs["unreadable"].name]["notes"]) == {
        "config.json unreadable", "status.json unreadable", "history.csv unreadable"}


def test_a_folder_we_may_not_enter_is_listed_as_such_and_the_listing_goes_on(mixed_runs, monkeypatch, tmp_path):
    import errno
    import pathlib

    # Another user's run, mode 700: its folder is seen, but nothing in it (root enters any, so the refusal is made
    # here as the system makes it for a user without the right).
    runs_dir = shutil.copytree(mixed_runs["dir"], tmp_path / "runs", symlinks=True)
    locked = runs.create_run_dir(runs_dir, "locked")
    (locked / artifacts.CONFIG).write_text("{}")
    stat, iterdir = pathlib.Path.stat, pathlib.Path.iterdir

    def refused(method, inside):
        def call(path, *args, **kwargs):
            if (path.parent if inside else path) == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return method(path, *args, **kwargs)
        return call

    monkeypatch.setattr(pathlib.Path, "stat", refused(stat, inside=True))
    monkeypatch.setattr(pathlib.Path, "iterdir", refused(iterdir, inside=False))
    rows = runs.list_runs(runs_dir)
    [row] = [r for r in rows if r["run"] == locked.name]
    assert (row["status"], row["notes"]) == ("unknown", ["cannot be read (Permission denied)"])
    assert len(rows) == 10  # the others listed as before
    table = runs.format_runs(rows, runs.seed_groups(rows, runs_dir), runs_dir)
    assert any(line.startswith(locked.name) and line.endswith("unknown (cannot be read (Permission denied))")
               for line in table.splitlines())


def test_a_finished_run_whose_files_were_edited_or_deleted_says_so(mixed_runs, tmp_path):
    edited = shutil.copytree(mixed_runs["finished"], tmp_path / "edited")
    artifacts.write_json(edited / artifacts.METRICS, {"test_accuracy": 93, "macro_f1": 1.5})
    row = runs.summarize(edited)
    assert row["notes"] == ["metrics.json damaged: fmnist evaluate scores it again"]
    assert row["test_accuracy"] is None and row["macro_f1"] is None  # not shown, nor counted in a group's mean
    (edited / artifacts.PREDICTIONS).unlink()
    assert runs.summarize(edited)["notes"] == [
        "metrics.json damaged, no test_predictions.npz: fmnist evaluate scores it again"]
    (edited / artifacts.METRICS).write_text("{bad")  # not JSON at all: said the same way, with what to do
    assert runs.summarize(edited)["notes"] == [
        "metrics.json damaged, no test_predictions.npz: fmnist evaluate scores it again"]
    shutil.copy(mixed_runs["finished"] / artifacts.METRICS, edited)
    assert runs.summarize(edited)["notes"] == ["no test_predictions.npz: fmnist evaluate scores it again"]
    whole = (mixed_runs["finished"] / artifacts.PREDICTIONS).read_bytes()
    (edited / artifacts.PREDICTIONS).write_bytes(whole[:len(whole) // 2])  # cut short
    assert runs.summarize(edited)["notes"] == ["test_predictions.npz damaged: fmnist evaluate scores it again"]
    (edited / artifacts.PREDICTIONS).write_bytes(whole)
    (edited / artifacts.REPORT_HTML).unlink()  # as a kill while the report was drawn leaves it
    assert runs.summarize(edited)["notes"] == ["no report.html: fmnist report draws it"]
    with runs.claim_run(edited):  # as while training draws it, after the metrics: not yet a thing to mend
        assert runs.summarize(edited)["notes"] == []
    artifacts.write_json(edited / artifacts.STATUS, {"state": "banana"})
    assert runs.summarize(edited)["status"] == "unknown"
    assert runs.summarize(edited)["notes"][0] == "status.json damaged (state 'banana'): restore it from a copy"
    runs.set_status(edited, "finished")
    (edited / artifacts.MODEL).unlink()
    assert runs.summarize(edited)["notes"][0] == ("no model.keras: restore it from a copy, or train a new run with its "
                                                  "settings")


def test_closest_recipe_names_the_preset_and_counts_changes():
    from fmnist.settings import RECIPES, TrainSettings

    for name, preset in RECIPES.items():
        teacher = {"teacher": "/runs/cnn"} if name == "distilled" else {}
        assert runs.closest_recipe(TrainSettings.from_dict({**preset, **teacher}).to_dict()) == name
    # Taught, however far its settings went towards "best": only "distilled" takes a teacher.
    taught = {**RECIPES["distilled"], "teacher": "/runs/cnn", "dropout": 0.3, "learning_rate": 4e-3, "batch_size": 512}
    assert runs.closest_recipe(TrainSettings.from_dict(taught).to_dict()) == "distilled (+3)"
    assert runs.closest_recipe(TrainSettings(dropout=0.1, epochs=3, limit=500, name="x").to_dict()) == "spec (+dropout)"
    assert runs.closest_recipe({"dropout": 0.3}) == "spec"  # settings an older version did not have are defaults


def test_runs_command_prints_a_table_and_json(mixed_runs):
    result = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "created", "recipe"] and len(lines) == 10
    finished = next(line for line in lines if line.startswith(mixed_runs["finished"].name))
    assert "16-8" in finished and "finished" in finished
    convnet = runs.summarize(mixed_runs["finished"]) | {"settings": {"architecture": "cnn", "hidden_sizes": [512]}}
    cells = runs.format_runs([convnet]).splitlines()[1].split()
    assert "ConvNet" in cells and "512" not in cells
    as_json = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]), "--json")
    assert as_json.returncode == 0
    listed = [r["run"] for r in runs.list_runs(mixed_runs["dir"])]
    assert [r["run"] for r in json.loads(as_json.stdout)["runs"]] == listed


def test_no_runs_and_a_bad_runs_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    assert runs.list_runs(tmp_path / "empty") == []
    fresh = run_cli("runs", cwd=tmp_path / "empty")  # the default ./runs, before the first training
    assert fresh.returncode == 0 and "no runs in runs yet: start one with 'fmnist train'" in fresh.stdout
    named = run_cli("runs", "--runs-dir", "runs", cwd=tmp_path / "empty")  # the same folder, named: a typo?
    assert named.returncode == 1 and "runs does not exist: give the folder that holds the runs" in named.stderr
    mistyped = run_cli("runs", "--runs-dir", str(tmp_path / "none"))
    assert (mistyped.returncode, mistyped.stderr) == (1, f"fmnist: error: {tmp_path / 'none'} does not exist: give "
                                                         "the folder that holds the runs with --runs-dir (default "
                                                         "./runs)\n")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FmnistError, match="not a directory"):
        runs.list_runs(tmp_path / "file")
    # A page written into the runs folder is no run; an empty folder, a run killed before its first file, is one.
    (tmp_path / "empty" / "pages").mkdir()
    (tmp_path / "empty" / "pages" / "compare.html").write_text("<html></html>")
    (tmp_path / "empty" / "20261205T000000Z-spec").mkdir()
    assert [r["run"] for r in runs.list_runs(tmp_path / "empty")] == ["20261205T000000Z-spec"]


def test_a_run_given_as_the_runs_folder_is_named_so(tiny_run_dir):
    with pytest.raises(FmnistError, match=f"^{re.escape(str(tiny_run_dir))} is a run, not a folder of runs: give the "
                                          f"folder that holds it \\(--runs-dir {re.escape(str(tiny_run_dir.parent))}"):
        runs.list_runs(tiny_run_dir, must_exist=True)


def test_resolve_run_takes_a_path_or_a_name(mixed_runs, tmp_path):
    finished = mixed_runs["finished"]
    assert runs.resolve_run(str(finished), mixed_runs["dir"] / "elsewhere") == finished
    assert runs.resolve_run(finished.name, mixed_runs["dir"]) == finished
    with pytest.raises(FmnistError, match="no run 'nope'"):
        runs.resolve_run("nope", mixed_runs["dir"])
    with pytest.raises(FmnistError, match=f"{mixed_runs['dir']} is a folder of runs, not a run: give one of them, "
                                          "such as "):
        runs.resolve_run(str(mixed_runs["dir"]), mixed_runs["dir"])
    # A folder in the runs directory, named: what it is, as when given as a path.
    with pytest.raises(FmnistError, match=f"study is a folder of runs, not a run: give one of them, such as "
                                          f"{mixed_runs['grouped']}$"):
        runs.resolve_run("study", mixed_runs["dir"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FmnistError, match="nothing is not a run directory"):
        runs.resolve_run("nothing", tmp_path)
    with pytest.raises(FmnistError, match=f"model.keras is a file of a run: give the run's directory, {finished}$"):
        runs.resolve_run(str(finished / artifacts.MODEL), mixed_runs["dir"])
    grouped = mixed_runs["grouped"]  # in a group: found by its own name too, as 'fmnist runs' shows it or alone
    for name in (grouped.name, f"{grouped.parent.name}/{grouped.name}"):
        assert runs.resolve_run(name, mixed_runs["dir"]) == runs.resolve_resumable(name, mixed_runs["dir"]) == grouped


def test_a_name_two_groups_hold_is_refused(tmp_path):
    for group in ("a-x2", "b-x2"):
        (tmp_path / group / "run").mkdir(parents=True)
        artifacts.write_json(tmp_path / group / "run" / artifacts.CONFIG, {"settings": {}, "backend": "jax"})
    with pytest.raises(FmnistError, match=f"2 runs in {tmp_path} are named 'run': give one as a path, such as "
                                          f"{tmp_path / 'a-x2' / 'run'}"):
        runs.resolve_run("run", tmp_path)


def test_a_run_whose_name_is_not_utf8_is_refused_in_one_line(mixed_runs, tmp_path):
    import os

    odd = shutil.copytree(mixed_runs["finished"], tmp_path / os.fsdecode(b"run-\xff"))  # a name from another system
    with pytest.raises(FmnistError, match="has a name that is not UTF-8: rename it"):
        runs.resolve_run(str(odd), tmp_path)
    result = run_cli("report", str(odd))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "has a name that is not UTF-8" in result.stderr
    # Listed all the same, its odd byte escaped, by a terminal that takes UTF-8 alone (a UTF-8 locale's).
    listed = run_cli("runs", "--runs-dir", str(tmp_path), env={"PYTHONIOENCODING": "utf-8:strict"})
    assert listed.returncode == 0 and "run-\\udcff" in listed.stdout, listed.stderr


def test_commands_take_a_run_by_name(mixed_runs, tmp_path, monkeypatch, capsys):
    from fmnist.cli import main

    finished = shutil.copytree(mixed_runs["finished"], tmp_path / "runs" / mixed_runs["finished"].name)
    # --json gives absolute paths, though the runs directory was given relative to the working folder.
    monkeypatch.chdir(tmp_path)
    assert main(["report", finished.name, "--runs-dir", "runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"] == str(finished / artifacts.REPORT_HTML)
    listed = run_cli("runs", "--runs-dir", "runs", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["runs_dir"] == str(tmp_path / "runs")
    assert [r["path"] for r in json.loads(listed.stdout)["runs"]] == [str(finished)]
    (tmp_path / "elsewhere").mkdir()
    roundabout = run_cli("runs", "--runs-dir", "../runs", "--json", cwd=tmp_path / "elsewhere")
    assert json.loads(roundabout.stdout)["runs_dir"] == str(tmp_path / "runs")  # no "elsewhere/.." left in it
    assert [r["path"] for r in json.loads(roundabout.stdout)["runs"]] == [str(finished)]


def test_a_model_is_found_as_a_file_a_bare_folder_or_a_run_whose_name_ends_in_keras(mixed_runs, tmp_path):
    named = shutil.copytree(mixed_runs["finished"], tmp_path / "runs" / "20261202-v2.keras")  # --name v2.keras
    assert runs.resolve_model(named.name, tmp_path / "runs") == named
    assert runs.resolve_model(named / artifacts.MODEL, tmp_path) == named / artifacts.MODEL
    bare = tmp_path / "model-only"  # a run's model and checksum copied alone: the model carries what predict needs
    bare.mkdir()
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(named / name, bare / name)
    assert runs.resolve_model(bare, tmp_path) == bare and model_files.verified_model_path(bare)[0] == \
        bare / artifacts.MODEL
    assert runs.resolve_model("gone.keras", tmp_path / "runs") == Path("gone.keras")  # its error: no model there
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(FmnistError, match="--show x: its folder .*loop leads round in a loop of symbolic links"):
        runs.refuse_inside_run(loop, "--show x: its folder")
    with pytest.raises(FmnistError, match=f"^the run {loop} leads round in a loop of symbolic links: give a run "
                                          "directory made by 'fmnist train'$"):
        runs.require_run_dir(loop)  # as `fmnist train --resume loop` and `fmnist evaluate loop` give it


def test_absolute_takes_out_dotdot_through_links_and_keeps_the_rest_as_given(tmp_path, monkeypatch):
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "real" / "photo.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep")  # link/.. is real, not tmp_path
    (tmp_path / "real" / "shirt.png").symlink_to("photo.png")
    (tmp_path / "real" / "loop.png").symlink_to("loop.png")
    monkeypatch.chdir(tmp_path)
    assert runs.absolute(Path("link/../shirt.png")) == tmp_path / "real" / "shirt.png"  # the name given, not photo
    assert runs.absolute(Path("real/loop.png")) == tmp_path / "real" / "loop.png"
    assert runs.absolute(Path("link/../loop.png")) == tmp_path / "real" / "loop.png"


def test_no_run_is_made_inside_another_run(mixed_runs, tmp_path):
    finished = mixed_runs["finished"]
    for inside in (finished, finished / "deeper"):
        with pytest.raises(FmnistError, match="is inside the run"):
            runs.create_run_dir(inside, "nested")
    assert not (finished / "deeper").exists()
    project = tmp_path / "project"  # a Keras project's own config.json and model.keras are not a run
    project.mkdir()
    (project / artifacts.CONFIG).write_text('{"batch_size": 32}')
    (project / artifacts.MODEL).write_bytes(b"weights")
    assert runs.create_run_dir(project / "runs", "fine").parent == project / "runs"
    damaged = tmp_path / "damaged"  # a run whose config.json was cut short: its other files say it is a run
    damaged.mkdir()
    (damaged / artifacts.CONFIG).write_text('{"settings": ')
    for name in runs.RUN_ONLY_FILES:
        (damaged / name).write_text("")
        with pytest.raises(FmnistError, match="is inside the run"):
            runs.create_run_dir(damaged, "nested")
        with pytest.raises(FmnistError, match="is inside the run"):
            runs.prepare_output(damaged / "page.html", "--output", ".html")
        (damaged / name).unlink()
    assert [p.name for p in damaged.iterdir()] == [artifacts.CONFIG]


def test_an_output_folder_is_made_and_checked_before_the_work(tmp_path):
    nested = tmp_path / "new" / "deeper" / "out.png"
    assert runs.prepare_output(nested, "--show") == nested
    assert nested.parent.is_dir() and list(nested.parent.iterdir()) == []  # the probe leaves nothing behind
    with pytest.raises(FmnistError, match=r"^--output .* is a folder: name a file in it$"):
        runs.prepare_output(tmp_path, "--output")
    (tmp_path / "plain").write_text("a file, not a folder")
    for output in (tmp_path / "plain" / "out.png", tmp_path / "plain" / "deeper" / "out.png"):
        with pytest.raises(FmnistError, match=r"^--show .*: a file is in the way of its folder"):
            runs.prepare_output(output, "--show")
    run = tmp_path / "run"  # no user-named file goes inside a run either
    run.mkdir()
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {}, "backend": "jax", "created": "now"})
    with pytest.raises(FmnistError, match=r"^--show .*: its folder .* is inside the run"):
        runs.prepare_output(run / "pictures" / "seen.png", "--show")
    assert not (run / "pictures").exists()
    into_run = tmp_path / "into_run.png"  # nor by a symbolic link that leads into one
    into_run.symlink_to(run / "seen.png")
    with pytest.raises(FmnistError, match=r"^--show .*: its folder .* is inside the run"):
        runs.prepare_output(into_run, "--show")


def test_a_symbolic_link_as_output_is_followed_so_it_stays_a_link(tmp_path):
    kept = tmp_path / "pictures" / "kept.png"
    kept.parent.mkdir()
    link = tmp_path / "latest.png"
    link.symlink_to(kept)
    assert runs.prepare_output(link, "--show", ".png") == kept.resolve()
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(FmnistError, match=r"^--show: the symbolic link .*loop.png leads round in a loop of symbolic "
                                          "links: remove it, or name another file"):
        runs.prepare_output(loop, "--show", ".png")
    notes = tmp_path / "notes.png"  # what is written is what the link leads to: a user's notes are not replaced
    notes.symlink_to(tmp_path / "notes.txt")
    with pytest.raises(FmnistError, match=r"^--show .*notes.txt: it is written as PNG; name it notes.png$"):
        runs.prepare_output(notes, "--show", ".png")


def test_a_folder_that_takes_no_files_is_named_so():
    # /proc exists but answers "no such file" to a new file in it, which read as if /proc were missing
    with pytest.raises(FmnistError, match=r"^--show /proc/x.png: cannot write in /proc \(it takes no new files\)$"):
        runs.prepare_output(Path("/proc/x.png"), "--show", ".png")


def test_a_run_without_test_metrics_is_refused_saying_why_and_what_to_do(tiny_run_dir, tmp_path):
    from fmnist.compare import compare_runs
    from fmnist.report import build_report

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.METRICS).unlink()
    for refused in (lambda: runs.require_scored(run, "x"), lambda: build_report(run),
                    lambda: compare_runs([run, tiny_run_dir], tmp_path / "compare.html")):
        with pytest.raises(FmnistError, match=f"metrics.json is missing: 'fmnist evaluate {run}' scores the run"):
            refused()
    status = (run / artifacts.STATUS).read_bytes()
    runs.set_status(run, "running")  # killed after its model was saved, before its status said finished
    with pytest.raises(FmnistError, match=rf"has not finished training \(status killed\), so it has no test metrics "
                                          rf"for its report; 'fmnist train --resume {run}' finishes it"):
        build_report(run)
    (run / artifacts.STATUS).unlink()  # the model alone says the run finished: resume would refuse it
    with pytest.raises(FmnistError, match=f"metrics.json is missing: 'fmnist evaluate {run}' scores the run"):
        build_report(run)
    (run / artifacts.STATUS).write_bytes(status)
    (run / artifacts.MODEL).unlink()
    (run / artifacts.MODEL_SHA256).unlink()
    runs.set_status(run, "interrupted")
    with pytest.raises(FmnistError, match=rf"has not finished training \(status interrupted\), so it has no test "
                                          rf"metrics for its report; 'fmnist train --resume {run}' finishes it"):
        build_report(run)
    runs.set_status(run, "running")
    with runs.claim_run(run):  # as its training process holds it
        with pytest.raises(FmnistError, match="is being trained right now; its report needs it scored: wait for it"):
            build_report(run)
        with pytest.raises(FmnistError, match="has no model yet: it is being trained right now; wait for it"):
            model_files.verified_model_path(run)
    with pytest.raises(FmnistError, match="has no model yet: its training has not finished; 'fmnist train --resume"):
        model_files.verified_model_path(run)  # its process gone


def test_commands_that_write_into_a_run_refuse_while_its_training_process_holds_it(tiny_run_dir, tmp_path, capsys):
    from fmnist.cli import main

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")  # its model saved, its process still scoring it
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with runs.claim_run(run):
        for command, doing in ((["evaluate"], "evaluate it"), (["report"], "rebuild its report"),
                               (["export", "--format", "onnx"], "export it")):
            assert main([*command, str(run)]) == 1
            assert capsys.readouterr().err == (f"fmnist: error: {run} is being trained right now; to {doing}, wait for "
                                               "it to finish ('fmnist runs' shows its epochs so far)\n")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


@pytest.mark.parametrize("content", [b"", b"  \n", b"\xff\xfe", b"not-a-checksum  model.keras\n"])
def test_a_damaged_model_checksum_file_is_named_as_damaged(tiny_run_dir, tmp_path, content):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.MODEL_SHA256).write_bytes(content)
    with pytest.raises(FmnistError,
                       match="model.keras.sha256 is damaged: it holds no SHA-256; restore it from the run"):
        model_files.verified_model_path(run)


def test_a_runs_directory_that_is_a_file_is_named_so(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(FmnistError, match="the runs directory .*runs is a file: give a folder"):
        runs.create_run_dir(tmp_path / "runs", "x")


def test_a_groups_run_of_each_seed_is_a_finished_one_else_the_newest():
    candidates = [(1, True, "a"), (1, False, "b"), (2, False, "c"), (2, False, "d"), (3, True, "e"), (3, True, "f")]
    assert runs.pick_members(candidates) == {1: "a", 2: "d", 3: "f"}


def test_numbers_that_json_reads_but_no_run_has_are_listed_as_unknown(tmp_path):
    run = runs.create_run_dir(tmp_path, "odd")
    (run / artifacts.STATUS).write_text('{"state": "finished", "epochs": Infinity, "train_seconds": NaN}')
    (row,) = runs.list_runs(tmp_path)
    assert (row["run"], row["epochs"], row["train_seconds"]) == (run.name, None, None)


@pytest.mark.parametrize("problem", ["damaged", "another run's"])
def test_a_stopped_runs_damaged_backup_is_named_with_what_to_do(tmp_path, problem):
    run = runs.create_run_dir(tmp_path, "cut")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": 1}})
    runs.set_status(run, "interrupted")
    (run / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n")
    if problem == "damaged":
        (run / artifacts.BACKUP).write_bytes(b"PK\x03\x04 cut short")
    else:  # as a resume refuses it
        meta = {"format": backup_file.FORMAT, "epochs_done": 1, "run": "0" * 64}
        np.savez(run / artifacts.BACKUP, meta=np.array(json.dumps(meta)))
    (row,) = runs.list_runs(tmp_path)
    assert row["epochs"] is None
    said = {"damaged": f"is damaged, so the run cannot continue from it; remove it, and 'fmnist train --resume {run}' "
                       "trains the run again from its first epoch",
            "another run's": "was written by another run (or before its config.json was changed); remove it, and the "
                             "resume trains the run again from its first epoch"}  # as the resume says it
    assert row["notes"] == [f"backup.npz {said[problem]}", "fmnist train --resume continues it"]


def test_advice_names_a_run_as_a_shell_takes_it_from_wherever_it_was_given(tmp_path, monkeypatch):
    run = runs.create_run_dir(tmp_path / "my runs", "spaced")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": 1}})
    assert runs.resume_command(run) == f'fmnist train --resume "{run}"'
    assert runs.shell_word("it's $HOME") == "'it'\"'\"'s $HOME'" and runs.shell_word("plain/path") == "plain/path"
    monkeypatch.chdir(run)  # `fmnist train --resume .`: the run's own name, not ""
    assert runs.require_run_dir(Path(".")) == run and runs.require_run_dir(Path(".")).name == run.name


def test_a_command_writing_into_a_run_keeps_training_away_until_it_ends(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    with runs.idle_run(run.name, tmp_path, "evaluate it") as held:
        assert held == run
        with runs.idle_run(run, tmp_path, "export it"):  # two such commands together: each writes its own files
            assert not runs.being_trained(run)
        with pytest.raises(FmnistError, match="in use by another process"):  # a resume begun meanwhile
            with runs.claim_run(run):
                pass
    with runs.claim_run(run):  # and free once it ends
        pass
