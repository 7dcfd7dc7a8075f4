import datetime as dt
import json
import logging
import os
import re
import shutil
import time
import types
from pathlib import Path

import pytest

from conftest import run_cli
from fmnist import artifacts, model_files, run_locks, run_lookup, runs
from fmnist.errors import FmnistError


def test_resolve_run_takes_a_path_or_a_name(mixed_runs, tmp_path):
    finished = mixed_runs["finished"]
    assert run_lookup.resolve_run(str(finished), mixed_runs["dir"] / "elsewhere") == finished
    assert run_lookup.resolve_run(finished.name, mixed_runs["dir"]) == finished
    with pytest.raises(FmnistError, match="no run 'nope'"):
        run_lookup.resolve_run("nope", mixed_runs["dir"])
    with pytest.raises(FmnistError, match=f"{mixed_runs['dir']} is a folder of runs, not a run: give one of them, "
                                          "such as "):
        run_lookup.resolve_run(str(mixed_runs["dir"]), mixed_runs["dir"])
    # A folder in the runs directory, named: what it is, as when given as a path.
    with pytest.raises(FmnistError, match=f"study is a folder of runs, not a run: give one of them, such as "
                                          f"{mixed_runs['grouped']}$"):
        run_lookup.resolve_run("study", mixed_runs["dir"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FmnistError, match="nothing is not a run directory"):
        run_lookup.resolve_run("nothing", tmp_path)
    # Nowhere at all: said alike to a command that reads a run and to a resume.
    with pytest.raises(FmnistError, match="^no run 'typo': give a run directory or the name of one in"):
        run_lookup.resolve_run("typo", tmp_path)
    with pytest.raises(FmnistError, match=f"^no run 'typo': give a run directory, or with --runs-dir the folder that "
                                          fr"holds the runs \({tmp_path / 'nodir'} does not exist\)$"):
        run_lookup.resolve_run("typo", tmp_path / "nodir")  # a --runs-dir mistyped: said, not "no run in it"
    with pytest.raises(FmnistError, match="^no run 'typo': give a run's or --seeds group's directory or the name of "
                                          f"one in {tmp_path}"):
        run_lookup.resolve_resumable(Path("typo"), tmp_path)
    with pytest.raises(FmnistError, match=f"model.keras is a file of a run: give the run's directory, {finished}$"):
        run_lookup.resolve_run(str(finished / artifacts.MODEL), mixed_runs["dir"])
    with pytest.raises(FmnistError, match=f"config.json is a file of a run: give the run's directory, {finished}$"):
        run_lookup.resolve_resumable(finished / artifacts.CONFIG, mixed_runs["dir"])  # a resume's, as every command's
    photo = tmp_path / "shirt.png"  # a photo given first, the run forgotten
    photo.write_bytes(b"\x89PNG")
    with pytest.raises(FmnistError, match=f"^{photo} is a file, not a run: give a run directory or the name of one"):
        run_lookup.resolve_run(str(photo), tmp_path)
    grouped = mixed_runs["grouped"]  # in a group: found by its own name too, as 'fmnist runs' shows it or alone
    for name in (grouped.name, f"{grouped.parent.name}/{grouped.name}"):
        assert (run_lookup.resolve_run(name, mixed_runs["dir"]) == run_lookup.resolve_resumable(name, mixed_runs["dir"])
                == grouped)


def test_a_name_two_groups_hold_is_refused(tmp_path):
    for group in ("a-x2", "b-x2"):
        (tmp_path / group / "run").mkdir(parents=True)
        artifacts.write_json(tmp_path / group / "run" / artifacts.CONFIG, {"settings": {}, "backend": "jax"})
    with pytest.raises(FmnistError, match=f"2 runs in {tmp_path} are named 'run': give one as a path, such as "
                                          f"{tmp_path / 'a-x2' / 'run'}"):
        run_lookup.resolve_run("run", tmp_path)


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


def test_a_model_is_found_as_a_file_a_bare_folder_or_a_run_whose_name_ends_in_keras(mixed_runs, tmp_path,
                                                                                     monkeypatch):
    named = shutil.copytree(mixed_runs["finished"], tmp_path / "runs" / "20261202-v2.keras")  # --name v2.keras
    assert run_lookup.resolve_model(named.name, tmp_path / "runs") == named
    assert run_lookup.resolve_model(named / artifacts.MODEL, tmp_path) == named / artifacts.MODEL
    bare = tmp_path / "model-only"  # a run's model and checksum copied alone: the model carries what predict needs
    bare.mkdir()
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(named / name, bare / name)
    assert run_lookup.resolve_model(bare, tmp_path) == bare and model_files.verified_model_path(bare)[0] == \
        bare / artifacts.MODEL
    assert run_lookup.resolve_model("gone.keras", tmp_path / "runs") == Path("gone.keras")  # its error: no model there
    onnx = named / artifacts.EXPORTS_DIR / "onnx"  # an export is for other runtimes: named so, with its run
    onnx.mkdir(parents=True)
    (onnx / artifacts.EXPORT_FILES["onnx"]).write_bytes(b"onnx")
    (onnx / artifacts.EXPORT_INFO).write_text("{}")
    for given in (onnx, onnx / artifacts.EXPORT_FILES["onnx"]):
        with pytest.raises(FmnistError, match=f"^{given} is an export, for other runtimes .*; fmnist takes the run it "
                                              f"was exported from, {named}, or its model.keras$"):
            run_lookup.resolve_model(given, tmp_path)
    monkeypatch.chdir(onnx)  # given from inside it: the run is still named whole
    with pytest.raises(FmnistError, match=f"^model.onnx is an export, .* the run it was exported from, {named}, or"):
        run_lookup.resolve_model(Path("model.onnx"), tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(FmnistError, match="--show x: its folder .*loop leads round in a loop of symbolic links"):
        runs.refuse_inside_run(loop, "--show x: its folder")
    with pytest.raises(FmnistError, match=f"^the run {loop} leads round in a loop of symbolic links: give a run "
                                          "directory made by 'fmnist train'$"):
        runs.require_run_dir(loop)  # as `fmnist train --resume loop` and `fmnist evaluate loop` give it


def test_a_run_asked_for_by_its_train_name_is_found_if_only_one_has_it_else_refused_naming_them(tmp_path, caplog,
                                                                                               monkeypatch):
    class Frozen(dt.datetime):  # every run made in one second, as fast as this test makes them on a fast machine
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=tz)

    monkeypatch.setattr(runs, "dt", types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone))

    def trained(folder, name):
        run = runs.create_run_dir(folder, name)
        artifacts.write_json(run / artifacts.CONFIG, {"settings": {"name": name}})
        return run

    made = [trained(tmp_path, "small") for _ in range(11)]  # the same second: -2, ..., -11 after the first
    trained(tmp_path / "study", "small")  # a trial's, in a study's folder
    other = trained(tmp_path, "small-2")  # another --name, whose folder could pass for the second "small"
    (tmp_path / "20261206T174935Z-smaller").mkdir()  # another name that begins alike
    shown = ", ".join(d.relative_to(tmp_path).as_posix() for d in made[:-4:-1])
    for refuse in (run_lookup.resolve_run, run_lookup.resolve_resumable):
        with pytest.raises(FmnistError, match=f"^no run 'small' in {tmp_path}/, but runs named 'small' there, newest "
                                              f"first: {re.escape(shown)} and 9 more; give one of them$"):
            refuse("small", tmp_path)
    caplog.set_level("INFO", logger="fmnist")
    assert run_lookup.resolve_run("small-2", tmp_path) == run_lookup.resolve_resumable("small-2", tmp_path) == other
    assert f"small-2: {other}, the only one of that --name in {tmp_path}" in caplog.messages  # which run, said
    # A --seeds group, asked for by its folder's name after its time, or by its --name: taken where a group is
    # (a resume, a comparison), not where one run is wanted (evaluate: its one run is taken instead).
    group = runs.create_run_dir(tmp_path, "grp-x2")
    artifacts.write_json(group / artifacts.SEED_GROUP, {"settings": {"name": "grp"}, "seeds": 2})
    member = trained(group, "grp")
    # Its runs share its --name: they are the group's, not others of that name.
    assert run_lookup.resolve_resumable(Path("grp-x2"), tmp_path) == run_lookup.resolve_resumable("grp", tmp_path) \
        == group
    with pytest.raises(FmnistError, match=f"{group.name} is a group of 1 runs made by 'fmnist train --seeds'"):
        run_lookup.resolve_run("grp-x2", tmp_path, groups_too=True)  # a comparison takes it before (runs_to_compare)
    # Where one run is wanted (evaluate writes into it), the group is said to be one, its lone run not taken for it.
    for name in ("grp", "grp-x2"):
        with pytest.raises(FmnistError, match=f"^{group} is a group of 1 runs made by 'fmnist train --seeds', not one "
                                              f"run: give one of its runs, such as {member}"):
            run_lookup.resolve_run(name, tmp_path)
    alone = trained(tmp_path, "grp")  # a run of its own of that --name too: neither is taken without a word
    assert run_lookup.named_one("grp", tmp_path, groups_only=True) is None
    with pytest.raises(FmnistError, match=f"^no run 'grp' in {tmp_path}/, but runs named 'grp' there") as refused:
        run_lookup.resolve_resumable("grp", tmp_path)
    assert f" {alone.name}," in str(refused.value) and f" {group.name}," in str(refused.value)
    (tmp_path / "afile").write_text("not a folder of runs")
    with pytest.raises(FmnistError, match=f"^no run 'grp-x2': give a run directory, or with --runs-dir the folder that "
                                          f"holds the runs \\({tmp_path / 'afile'} is a file\\)$"):
        run_lookup.resolve_run("grp-x2", tmp_path / "afile")


def test_a_run_whose_folder_takes_no_files_is_refused_before_the_work_that_writes_there(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    run.chmod(0o555)  # another user's, or a shared copy: evaluate, report and export write their files there
    try:
        for doing, args in (("evaluate it", ["evaluate", str(run)]), ("rebuild its report", ["report", str(run)]),
                            ("export it", ["export", str(run), "--format", "onnx"])):
            refused = run_cli(*args, as_another_user=True)
            assert (refused.returncode, refused.stderr) == (1, (
                f"fmnist: error: cannot write in {run} (Permission denied): to {doing}, fmnist writes files there; "
                "copy the run to a folder you may write in, and give that\n")), refused.stderr
    finally:
        run.chmod(0o755)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_command_writing_into_a_run_removes_what_killed_ones_left_unless_another_writes_there(tiny_run_dir,
                                                                                                tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    left = [run / ".curves.cs_b2hle.tmp.png", run / ".test_predictions.l4mat58a.tmp.npz"]  # as a kill -9 leaves them
    for path in left:
        path.write_bytes(b"half")
        os.utime(path, (time.time() - run_locks.LEFTOVER_AFTER_S - 1,) * 2)
    young = run / ".status.x1y2.tmp.json"  # a pruned trial's status, written after its training let the run go
    young.write_bytes(b"being written")
    with run_lookup.idle_run(run, tmp_path, "evaluate it"):
        assert not any(path.exists() for path in left) and young.exists()
        young.unlink()
        left[0].write_bytes(b"being drawn")  # this command's own, being written
        with run_lookup.idle_run(run, tmp_path, "export it"):  # a second command beside it leaves it alone
            assert left[0].read_bytes() == b"being drawn"
    assert {p.name for p in run.iterdir()} == {p.name for p in tiny_run_dir.iterdir()} | {left[0].name}


def test_commands_that_write_into_a_run_refuse_while_its_training_process_holds_it(tiny_run_dir, tmp_path, capsys):
    from fmnist.cli import main

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")  # its model saved, its process still scoring it
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with run_locks.claim_run(run):
        for command, doing in ((["evaluate"], "evaluate it"), (["report"], "rebuild its report"),
                               (["export", "--format", "onnx"], "export it")):
            assert main([*command, str(run)]) == 1
            assert capsys.readouterr().err == (f"fmnist: error: {run} is being trained right now; to {doing}, wait for "
                                               "it to finish ('fmnist runs' shows its epochs so far)\n")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_command_writing_into_a_run_keeps_training_away_until_it_ends(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    with run_lookup.idle_run(run.name, tmp_path, "evaluate it") as held:
        assert held == run
        with run_lookup.idle_run(run, tmp_path, "export it"):  # two such commands together: each writes its own files
            assert not run_locks.being_trained(run)
        with pytest.raises(FmnistError, match=f"^{run} is in use by another process \\(evaluating, reporting or "
                                              "exporting it\\); wait for it to end$"):  # a resume begun meanwhile
            with run_locks.claim_run(run):
                pass
    with run_locks.claim_run(run):  # and free once it ends
        pass


def test_a_training_of_a_name_that_a_run_has_already_is_warned_of(tmp_path, caplog):
    first = runs.create_run_dir(tmp_path, "quick")
    artifacts.write_json(first / artifacts.CONFIG, {"settings": {"name": "quick"}})
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        run_lookup.warn_if_named_already("fresh", tmp_path)
        assert caplog.messages == []  # a name of its own: nothing to say
        run_lookup.warn_if_named_already("quick", tmp_path)
    assert caplog.messages == [f"a run in {tmp_path} has --name quick already ({first.name}): given by that name, "
                               "commands will ask which run is meant; give them a run's folder"]
