import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import run_cli, write_backup_record
from fmnist import artifacts, backup_file, run_list, run_locks, runs
from fmnist.errors import FmnistError


def test_listing_reads_every_run_and_never_fails(mixed_runs):
    rows = run_list.list_runs(mixed_runs["dir"])
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
    # Every setting, for scripts: the name and teacher too, which the recipe label does not count.
    assert finished["settings"] == json.loads((mixed_runs["finished"] / artifacts.CONFIG).read_text())["settings"]
    assert {"name", "teacher", "validation_fraction"} <= set(finished["settings"])
    assert finished["recipe"] == "spec with batch_size 16, hidden_sizes 16-8"
    assert by_name[f"study/{mixed_runs['grouped'].name}"]["recipe"] == "spec with 3 settings changed"  # and dropout

    killed = by_name[mixed_runs["running"].name]  # status.json says running, but no process holds the run's lock
    assert killed["status"] == "killed" and killed["epochs"] == 1 and killed["test_accuracy"] is None
    for stopped in (mixed_runs["running"], mixed_runs["interrupted"]):  # said whole, to paste from any folder
        assert by_name[stopped.name]["notes"] == [f"fmnist train --resume {stopped} continues it"]
    assert by_name[mixed_runs["interrupted"].name]["epochs"] == 0
    with run_locks.claim_run(mixed_runs["running"]):  # as the process training it does
        assert run_list.summarize(mixed_runs["running"])["status"] == "running"
    assert by_name[mixed_runs["interrupted"].name]["status"] == "interrupted"
    damaged = by_name[mixed_runs["damaged"].name]
    assert damaged["status"] == "unknown"
    assert set(damaged["notes"]) == {"config.json damaged: restore it from a copy",
                                     "status.json damaged: restore it from a copy", "metrics.json damaged",
                                     run_list.HISTORY_DAMAGED}
    old = by_name[mixed_runs["old"].name]
    assert old["backend"] == "tensorflow" and old["settings"] == {} and old["notes"] == ["no status.json"]
    mistyped = by_name[mixed_runs["mistyped"].name]
    assert mistyped["status"] == "finished" and mistyped["epochs"] is None and mistyped["train_seconds"] is None
    # Finished, but no metrics.json: not "--resume scores it", which would refuse, as nothing is left to score.
    # Settings fmnist could not have trained with are said to be damaged, not shown as the run's.
    assert mistyped["notes"] == ["config.json damaged (invalid setting: hidden_sizes must be a list of whole numbers, "
                                 "not 'wide'): restore it from a copy",
                                 "no model.keras, model.keras.sha256: restore them from a copy, or train a new run "
                                 "with its settings"]
    assert by_name[mixed_runs["empty"].name]["notes"] == ["no config.json", "no status.json"]
    assert by_name[mixed_runs["empty"].name]["recipe"] is None
    assert set(by_name[mixed_runs["unreadable"].name]["notes"]) == {
        "config.json unreadable", "status.json unreadable", "history.csv unreadable"}


def test_a_folder_we_may_not_enter_is_listed_as_such_and_the_listing_goes_on(mixed_runs, tmp_path):
    # Another user's run, mode 700: its folder is seen, but nothing in it. And one of mode 744, listed but not
    # entered: its files' names are seen, but nothing of them. Here ours, with no right for us either (as_another_user:
    # root, who runs CI, reads any folder unless it gives up that power).
    runs_dir = shutil.copytree(mixed_runs["dir"], tmp_path / "runs", symlinks=True)
    locked = runs.create_run_dir(runs_dir, "locked")
    unentered = runs.create_run_dir(runs_dir, "unentered")
    group = runs_dir / "20261206T000000Z-grp-x2"  # a --seeds group, one of its runs another user's too
    group.mkdir()
    artifacts.write_json(group / artifacts.SEED_GROUP, {"seeds": 2, "settings": {"seed": 1}, "backend": "jax"})
    locked_member = runs.create_run_dir(group, "member")
    for folder in (locked, unentered, locked_member):
        (folder / artifacts.CONFIG).write_text("{}")
        (folder / "inner").mkdir()
    modes = {locked: 0o000, unentered: 0o644, locked_member: 0o000}
    for folder, mode in modes.items():
        folder.chmod(mode)
    try:
        listed = run_cli("runs", "--runs-dir", str(runs_dir), "--json", as_another_user=True)
        table = run_cli("runs", "--runs-dir", str(runs_dir), "--wide", as_another_user=True)
    finally:
        for folder in modes:
            folder.chmod(0o755)
    assert listed.returncode == 0 and table.returncode == 0, listed.stderr + table.stderr
    rows = json.loads(listed.stdout)["runs"]
    for folder in modes:
        [row] = [r for r in rows if r["run"] == folder.relative_to(runs_dir).as_posix()]
        assert (row["status"], row["notes"]) == ("unknown", ["cannot be read (Permission denied)"])
    assert len(rows) == 12  # the others listed as before
    [group_row] = json.loads(listed.stdout)["groups"]  # the group's line too: no seed's run among those it may read
    assert (group_row["group"], group_row["scored"]) == (group.name, 0)
    lines = table.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(locked.name))
    assert lines[at].endswith("  unknown") and lines[at + 1] == "    cannot be read (Permission denied)"


def test_a_finished_run_whose_files_were_edited_or_deleted_says_so(mixed_runs, tmp_path):
    edited = shutil.copytree(mixed_runs["finished"], tmp_path / "edited")
    artifacts.write_json(edited / artifacts.METRICS, {"test_accuracy": 93, "macro_f1": 1.5})
    row = run_list.summarize(edited)
    assert row["notes"] == ["metrics.json damaged: fmnist evaluate scores it again"]
    assert row["test_accuracy"] is None and row["macro_f1"] is None  # not shown, nor counted in a group's mean
    (edited / artifacts.PREDICTIONS).unlink()
    assert run_list.summarize(edited)["notes"] == [
        "metrics.json damaged, no test_predictions.npz: fmnist evaluate scores it again"]
    (edited / artifacts.METRICS).write_text("{bad")  # not JSON at all: said the same way, with what to do
    assert run_list.summarize(edited)["notes"] == [
        "metrics.json damaged, no test_predictions.npz: fmnist evaluate scores it again"]
    shutil.copy(mixed_runs["finished"] / artifacts.METRICS, edited)
    assert run_list.summarize(edited)["notes"] == ["no test_predictions.npz: fmnist evaluate scores it again"]
    whole = (mixed_runs["finished"] / artifacts.PREDICTIONS).read_bytes()
    (edited / artifacts.PREDICTIONS).write_bytes(whole[:len(whole) // 2])  # cut short
    assert run_list.summarize(edited)["notes"] == ["test_predictions.npz damaged: fmnist evaluate scores it again"]
    (edited / artifacts.PREDICTIONS).write_bytes(whole)
    (edited / artifacts.REPORT_HTML).unlink()  # as a kill while the report was drawn leaves it
    assert run_list.summarize(edited)["notes"] == ["no report.html: fmnist report draws it"]
    with run_locks.claim_run(edited):  # as while training draws it, after the metrics: not yet a thing to mend
        assert run_list.summarize(edited)["notes"] == []
    artifacts.write_json(edited / artifacts.STATUS, {"state": "banana"})
    assert run_list.summarize(edited)["status"] == "unknown"
    assert run_list.summarize(edited)["notes"][0] == "status.json damaged (state 'banana'): restore it from a copy"
    runs.set_status(edited, "finished")
    shutil.copy(mixed_runs["finished"] / artifacts.REPORT_HTML, edited)
    advice = "restore it from a copy, or train a new run with its settings"
    model = (edited / artifacts.MODEL).read_bytes()
    (edited / artifacts.MODEL).write_bytes(model[:100])  # cut short, as the commands that load it refuse it
    assert run_list.summarize(edited)["notes"] == [f"model.keras damaged: {advice}"]
    (edited / artifacts.MODEL).write_bytes(model)
    checksum = (edited / artifacts.MODEL_SHA256).read_bytes()
    (edited / artifacts.MODEL_SHA256).write_text("garbage\n")
    assert run_list.summarize(edited)["notes"] == [f"model.keras.sha256 damaged: {advice}"]
    (edited / artifacts.MODEL_SHA256).write_bytes(checksum)
    assert run_list.summarize(edited)["notes"] == []
    (edited / artifacts.MODEL).unlink()
    assert run_list.summarize(edited)["notes"][0] == ("no model.keras: restore it from a copy, or train a new run with "
                                                      "its settings")


def test_runs_command_prints_a_table_and_json(mixed_runs):
    result = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "recipe", "network"]
    assert len([line for line in lines if not line.startswith(run_list.NOTE_INDENT)]) == 11  # each run's notes below it
    # The folder holding a run (a study's, say) a line of its own, its run indented under it by its own name.
    folder = mixed_runs["grouped"].parent
    at = lines.index(next(line for line in lines if line.startswith(f"{folder.name}/ ")))
    assert lines[at].endswith("a folder of 1 run") and lines[at + 1].startswith(f"  {mixed_runs['grouped'].name} ")
    finished = next(line for line in lines if line.startswith(mixed_runs["finished"].name))
    assert "16-8" in finished and "finished" in finished
    convnet = run_list.summarize(mixed_runs["finished"]) | {"settings": {"architecture": "cnn", "hidden_sizes": [512]}}
    cells = run_list.format_runs([convnet]).splitlines()[1].split()
    assert "ConvNet" in cells and "512" not in cells
    as_json = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]), "--json")
    assert as_json.returncode == 0
    listed = [r["run"] for r in run_list.list_runs(mixed_runs["dir"])]
    assert [r["run"] for r in json.loads(as_json.stdout)["runs"]] == listed


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_table_fits_the_terminal_and_names_the_columns_it_left_out(mixed_runs, width):
    every = run_cli("runs", "--runs-dir", str(mixed_runs["dir"])).stdout.splitlines()  # a pipe: every column
    assert max(map(len, every)) > 120 and every[0].split("  ")[0] == "run"
    fitted = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]), env={"COLUMNS": str(width)}).stdout.splitlines()
    footer = next(i for i, line in enumerate(fitted) if line.startswith("(left out"))
    header, *rows = fitted[:footer]
    told = fitted[footer:]  # wrapped to the width too
    assert all(len(line) <= width for line in told)
    kept = re.split(r"\s{2,}", header)
    left_out = [name for name in run_list.NARROWING if name not in kept]  # in the order they go
    assert set(kept) | set(left_out) == set(re.split(r"\s{2,}", every[0]))
    assert left_out == list(run_list.NARROWING[:len(left_out)]) and {"run", "recipe", "test acc", "status"} <= set(kept)
    assert " ".join(told) == f"(left out to fit {width} characters: {', '.join(left_out)}; --wide shows them)"
    assert all(any(name in line for line in told) for name in left_out)  # each name whole on a line: "train s"
    # The lines fit, a status counted as at most STATUS_FITTED wide (a longer one wraps), and no more was left out
    # than needed: the last column left out, put back, would not have fitted.
    status_at = header.index("status")
    fitted_width = max(status_at + min(len(line) - status_at, run_list.STATUS_FITTED)
                       for line in rows if not line.startswith(run_list.NOTE_INDENT))
    full = [re.split(r"\s{2,}", line.strip()) for line in every if not line.startswith(run_list.NOTE_INDENT)]
    last = full[0].index(left_out[-1])
    assert fitted_width <= width < fitted_width + 2 + max(len(cells[last]) for cells in full)
    assert len(rows) == len(every) - 1  # every run and note still there
    wide = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]), "--wide", env={"COLUMNS": str(width)})
    assert wide.stdout.splitlines() == every
    for unset in ("", "abc", "0", "-5")[:4 if width == 80 else 0]:  # set blank or wrong: a pipe gets every column
        piped = run_cli("runs", "--runs-dir", str(mixed_runs["dir"]), env={"COLUMNS": unset})
        assert piped.stdout.splitlines() == every, unset


def test_no_runs_and_a_bad_runs_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_list.list_runs(tmp_path / "empty") == []
    fresh = run_cli("runs", cwd=tmp_path / "empty")  # the default ./runs, before the first training
    said = f"no runs in {tmp_path / 'empty' / 'runs'} yet: start one with 'fmnist train'"
    assert fresh.returncode == 0 and said in fresh.stdout
    named = run_cli("runs", "--runs-dir", "runs", cwd=tmp_path / "empty")  # the same folder, named: a typo?
    assert named.returncode == 1 and "runs does not exist: give the folder that holds the runs" in named.stderr
    mistyped = run_cli("runs", "--runs-dir", str(tmp_path / "none"))
    assert (mistyped.returncode, mistyped.stderr) == (1, f"fmnist: error: {tmp_path / 'none'} does not exist: give "
                                                         "the folder that holds the runs with --runs-dir (default "
                                                         "./runs)\n")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FmnistError, match="not a directory"):
        run_list.list_runs(tmp_path / "file")
    # A page written into the runs folder is no run; an empty folder, a run killed before its first file, is one.
    (tmp_path / "empty" / "pages").mkdir()
    (tmp_path / "empty" / "pages" / "compare.html").write_text("<html></html>")
    (tmp_path / "empty" / "20261205T000000Z-spec").mkdir()
    assert [r["run"] for r in run_list.list_runs(tmp_path / "empty")] == ["20261205T000000Z-spec"]


def test_a_run_given_as_the_runs_folder_is_named_so(tiny_run_dir):
    with pytest.raises(FmnistError, match=f"^{re.escape(str(tiny_run_dir))} is a run, not a folder of runs: give the "
                                          f"folder that holds it \\(--runs-dir {re.escape(str(tiny_run_dir.parent))}"):
        run_list.list_runs(tiny_run_dir, must_exist=True)


def test_numbers_that_json_reads_but_no_run_has_are_listed_as_unknown(tmp_path):
    run = runs.create_run_dir(tmp_path, "odd")
    (run / artifacts.STATUS).write_text('{"state": "finished", "epochs": Infinity, "train_seconds": NaN}')
    (row,) = run_list.list_runs(tmp_path)
    assert (row["run"], row["epochs"], row["train_seconds"]) == (run.name, None, None)


@pytest.mark.parametrize("problem", ["damaged", "another run's", "gone", "history's row"])
def test_a_stopped_runs_damaged_backup_is_named_with_what_to_do(tmp_path, problem):
    run = runs.create_run_dir(tmp_path, "cut")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": 1}})
    runs.set_status(run, "interrupted")
    (run / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n1,1.2\n")
    if problem == "damaged":
        (run / artifacts.BACKUP).write_bytes(b"PK\x03\x04 cut short")
    elif problem == "another run's":  # as a resume refuses it
        meta = {"format": backup_file.FORMAT, "epochs_done": 1, "run": "0" * 64}
        np.savez(run / artifacts.BACKUP, meta=np.array(json.dumps(meta)))
    elif problem == "history's row":  # edited by hand: the backup's second epoch has no row left
        write_backup_record(run, 2)
        (run / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n1,1.2,7\n2,1.1\n")
    (row,) = run_list.list_runs(tmp_path)
    assert row["epochs"] is None
    start_over = f"remove backup.npz and history.csv, and 'fmnist train --resume {run}' trains the run again from " \
                 "its first epoch"
    said = {"damaged": f"backup.npz is damaged, so the run cannot continue from it; {start_over}",
            "another run's": "backup.npz was written by another run, or before config.json was changed: if it was, "
                             f"put config.json back as it was; else {start_over}",
            "gone": "backup.npz is missing, though history.csv holds 2 finished epochs: restore it from a copy to "
                    f"continue after them; else remove history.csv, and 'fmnist train --resume {run}' trains the run "
                    "again from its first epoch",
            "history's row": "history.csv holds 1 of the 2 epochs in backup.npz (its line 3 is damaged); restore it, "
                             f"or {start_over}"}
    assert row["notes"] == [said[problem]]  # as the resume says it, not "--resume continues it" too: it would refuse
    (run / artifacts.BACKUP).unlink(missing_ok=True)  # the advice followed
    (run / artifacts.HISTORY).unlink(missing_ok=problem == "gone")
    assert run_list.summarize(run)["notes"] == [f"fmnist train --resume {run} continues it"]  # from its first epoch


def test_a_stopped_runs_history_that_cannot_be_read_is_a_note_not_a_row_that_cannot_be_read(tmp_path):
    run = runs.create_run_dir(tmp_path, "cut")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": 1}})
    runs.set_status(run, "interrupted")
    (run / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n1,1.2\n")
    write_backup_record(run, 2)
    (run / artifacts.HISTORY).chmod(0)
    listed = run_cli("runs", "--runs-dir", str(tmp_path), "--json", as_another_user=True)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["runs"]
    assert row["settings"] == {"seed": 1} and row["status"] == "interrupted"  # the rest of the row still read
    assert any(note.startswith("cannot read history.csv (Permission denied); restore it") for note in row["notes"]), row


def test_a_run_whose_name_is_not_utf8_is_listed_in_line_and_told_to_be_renamed(tiny_run_dir, tmp_path):
    shutil.copytree(tiny_run_dir, tmp_path / "plain")
    shutil.copytree(tiny_run_dir, tmp_path / os.fsdecode(b"odd\xffname"))  # made on a system of another encoding
    rows = run_list.list_runs(tmp_path)
    assert [r["notes"] for r in rows if r["run"] != "plain"] == [["its name is not UTF-8: rename it to use it"]]
    lines = [line for line in run_list.format_runs(rows).splitlines() if not line.startswith(run_list.NOTE_INDENT)]
    accuracy = f"{rows[0]['test_accuracy']:.4f}"
    assert len(lines) == 3 and len({line.index(accuracy) for line in lines[1:]}) == 1  # printed escaped, in line
    shutil.copytree(tiny_run_dir, tmp_path / os.fsdecode(b"odd\xffpool") / "plain")
    (row,) = run_list.list_runs(tmp_path / os.fsdecode(b"odd\xffpool"))
    assert row["notes"] == ["the path to it is not UTF-8: move it to use it"]  # not its name's fault


def test_a_tuned_learning_rate_is_shown_to_three_figures_and_given_whole_in_json(tmp_path):
    run = runs.create_run_dir(tmp_path, "tuned")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"learning_rate": 0.000234995}, "backend": "jax"})
    rows = run_list.list_runs(tmp_path)
    assert rows[0]["settings"]["learning_rate"] == 0.000234995
    line = run_list.format_runs(rows).splitlines()[1]
    assert " 0.000235 " in line and "0.000234995" not in line  # as the study's report shows it


def test_a_finished_run_says_which_epoch_its_model_is_from(mixed_runs, tmp_path):
    run = shutil.copytree(mixed_runs["finished"], tmp_path / "finished")
    artifacts.write_text(run / artifacts.HISTORY, "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.0,0.5,0.9\n"
                                                  "1,0.6,0.8,0.6,0.5\n2,0.7,0.7,0.6,0.6\n")
    runs.set_status(run, runs.FINISHED, epochs=3)
    row = run_list.summarize(run)
    assert (row["epochs"], row["epoch_kept"]) == (3, 2)
    assert re.search(r"\s3 \(2\)\s", run_list.format_runs([row]).splitlines()[1])  # run 3, the model epoch 2's
    config = json.loads((run / artifacts.CONFIG).read_text())
    artifacts.write_json(run / artifacts.CONFIG, config | {"settings": config["settings"] | {"schedule": "cosine"}})
    assert run_list.summarize(run)["epoch_kept"] == 3  # a schedule keeps its last epoch
    artifacts.write_json(run / artifacts.CONFIG, config | {"settings": ["edited by hand"]})
    assert run_list.summarize(run)["epoch_kept"] == 2  # not the end of the listing
    (run / artifacts.HISTORY).unlink()
    assert run_list.summarize(run)["epoch_kept"] is None
    rows = {r["run"]: r for r in run_list.list_runs(mixed_runs["dir"])}
    assert rows[mixed_runs["running"].name]["epoch_kept"] is None  # killed: its best so far is not its model's


def test_a_runs_changed_settings_and_notes_go_below_it_keeping_the_table_narrow(mixed_runs, tmp_path):
    run = shutil.copytree(mixed_runs["finished"], tmp_path / "stopped")
    runs.set_status(run, "interrupted")  # no backup beside it: its resume trains it from its first epoch
    artifacts.write_text(run / artifacts.HISTORY, "epoch,loss\n0,1.5\n")
    row = run_list.summarize(run)
    header, line, *below = run_list.format_runs([row]).splitlines()
    assert line.split()[1:3] == ["spec", "+2"] and line.endswith("  interrupted")  # the cells alone
    assert below == ["    spec with batch_size 16, hidden_sizes 16-8", f"    fmnist train --resume {run} continues it"]
    assert len(line) < len(header) + 10  # as wide as its cells


def test_only_a_tune_trials_run_is_told_its_study_may_take_it_up(mixed_runs, tmp_path):
    interrupted = mixed_runs["interrupted"]
    trial = shutil.copytree(interrupted, tmp_path / "s" / "20261207T000000Z-trial-0003")
    named_so = shutil.copytree(interrupted, tmp_path / "20261207T000000Z-my-trial-0003")  # a user's --name
    told = run_list.summarize(trial)["notes"][-1]
    assert "or the next worker of its study takes it up ('fmnist tune --study s'" in told
    notes = run_list.summarize(named_so)["notes"]
    assert notes and not any("study" in note for note in notes)
    # Failed: its study counts the trial failed, unless a file the system refused cut it short (a full disk).
    for refused, taken_up in (({}, False), ({"refused": True}, True)):
        runs.set_status(trial, runs.FAILED, error="cannot write ...", resume=runs.resume_command(trial), **refused)
        told = run_list.summarize(trial)["notes"][-1]
        assert told.startswith(f"fmnist train --resume {trial} continues it") and ("study" in told) == taken_up


def test_a_stopped_run_whose_config_is_damaged_is_told_to_restore_that_not_to_remove_its_backup(tiny_data,
                                                                                                tmp_path):
    import keras

    from conftest import tiny_train

    class CtrlCAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # its backup written after the epoch, naming its config
        tiny_train(tmp_path / "runs", tiny_data, extra_callbacks=(CtrlCAfterOneEpoch(),))
    [killed] = (tmp_path / "runs").iterdir()
    assert any("continues it" in note for note in run_list.summarize(killed)["notes"])
    config = (killed / artifacts.CONFIG).read_text()
    edited = json.loads(config)
    artifacts.write_json(killed / artifacts.CONFIG, {**edited, "settings": {**edited["settings"], "hidden_sizes": "8"}})
    notes = run_list.summarize(killed)["notes"]  # its settings edited out of their type: the same
    assert notes[0].startswith("config.json damaged (invalid setting: hidden_sizes") and len(notes) == 1, notes
    (killed / artifacts.CONFIG).write_text('{"settings": ')
    notes = run_list.summarize(killed)["notes"]
    assert any(note.startswith("config.json damaged") for note in notes), notes
    assert not any(artifacts.BACKUP in note for note in notes), notes  # the backup is likely sound: kept
    from fmnist.resume import resume_run

    with pytest.raises(FmnistError, match="config.json is not valid JSON .*: restore it from a copy \\(a resume needs "
                                          "what it holds\\), or train it again$"):
        resume_run(killed)


def test_a_finished_runs_history_edited_out_of_shape_is_noted(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name)
    assert run_list.summarize(run)["notes"] == []
    (run / artifacts.HISTORY).write_text("x,y\n")  # as `fmnist report` refuses it: no loss column
    summary = run_list.summarize(run)
    assert summary["notes"] == [run_list.HISTORY_DAMAGED] and summary["epoch_kept"] is None


def test_settings_of_their_type_that_this_fmnist_would_refuse_are_an_older_runs_not_damage(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name)
    config = json.loads((run / artifacts.CONFIG).read_text())
    artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {**config["settings"], "limit": 20}})
    assert run_list.summarize(run)["notes"] == []  # --limit 20 trained before 2 December's split rule refuses it


def test_a_symbolic_link_is_followed_to_a_run_a_seed_group_or_a_folder_of_them_and_no_further(tiny_run_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    group = elsewhere / "group"
    shutil.copytree(tiny_run_dir, group / "seed1")
    artifacts.write_json(group / artifacts.SEED_GROUP, {"seeds": 1, "settings": {"seed": 1}, "backend": "jax"})
    shutil.copytree(tiny_run_dir, elsewhere / "kept")
    shutil.copytree(tiny_run_dir, tmp_path / "disk" / "study" / "trial-0000")  # a study's folder, moved to a disk
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "kept").symlink_to(elsewhere / "kept")
    (tmp_path / "runs" / "group").symlink_to(group)
    (tmp_path / "runs" / "study").symlink_to(tmp_path / "disk" / "study")
    (tmp_path / "runs" / "all").symlink_to(tmp_path)  # runs only further down, as from / or a home: not looked for
    assert sorted(r["run"] for r in run_list.list_runs(tmp_path / "runs")) == ["group/seed1", "kept",
                                                                               "study/trial-0000"]
