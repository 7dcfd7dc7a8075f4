import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from fmnist import artifacts, model_files, runs
from fmnist.errors import FmnistError


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
    # Nowhere at all: said alike to a command that reads a run and to a resume.
    with pytest.raises(FmnistError, match="^no run 'typo': give a run directory or the name of one in"):
        runs.resolve_run("typo", tmp_path)
    with pytest.raises(FmnistError, match="^no run 'typo': give a run's or --seeds group's directory or the name of "
                                          f"one in {tmp_path}"):
        runs.resolve_resumable(Path("typo"), tmp_path)
    with pytest.raises(FmnistError, match=f"model.keras is a file of a run: give the run's directory, {finished}$"):
        runs.resolve_run(str(finished / artifacts.MODEL), mixed_runs["dir"])
    photo = tmp_path / "shirt.png"  # a photo given first, the run forgotten
    photo.write_bytes(b"\x89PNG")
    with pytest.raises(FmnistError, match=f"^{photo} is a file, not a run: give a run directory or the name of one"):
        runs.resolve_run(str(photo), tmp_path)
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


def test_a_model_is_found_as_a_file_a_bare_folder_or_a_run_whose_name_ends_in_keras(mixed_runs, tmp_path,
                                                                                     monkeypatch):
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
    onnx = named / artifacts.EXPORTS_DIR / "onnx"  # an export is for other runtimes: named so, with its run
    onnx.mkdir(parents=True)
    (onnx / artifacts.EXPORT_FILES["onnx"]).write_bytes(b"onnx")
    (onnx / artifacts.EXPORT_INFO).write_text("{}")
    for given in (onnx, onnx / artifacts.EXPORT_FILES["onnx"]):
        with pytest.raises(FmnistError, match=f"^{given} is an export, for other runtimes .*; fmnist takes the run it "
                                              f"was exported from, {named}, or its model.keras$"):
            runs.resolve_model(given, tmp_path)
    monkeypatch.chdir(onnx)  # given from inside it: the run is still named whole
    with pytest.raises(FmnistError, match=f"^model.onnx is an export, .* the run it was exported from, {named}, or"):
        runs.resolve_model(Path("model.onnx"), tmp_path)
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
        # finished, so stopped while it was scored, as `fmnist runs` says: its resume scores it
        with pytest.raises(FmnistError, match=f"metrics.json is missing: 'fmnist train --resume {run}' scores the run"):
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
    (tmp_path / "gone").symlink_to(tmp_path / "unmounted")  # a link to a disk not mounted, say
    with pytest.raises(FmnistError, match=f"^the runs directory {tmp_path / 'gone'} is a link to "
                                          f"{tmp_path / 'unmounted'}, which is missing: give a folder"):
        runs.create_run_dir(tmp_path / "gone", "x")


def test_a_groups_run_of_each_seed_is_a_finished_one_else_the_newest():
    candidates = [(1, True, "a"), (1, False, "b"), (2, False, "c"), (2, False, "d"), (3, True, "e"), (3, True, "f")]
    assert runs.pick_members(candidates) == {1: "a", 2: "d", 3: "f"}


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


def test_a_run_asked_for_by_its_train_name_is_refused_naming_the_runs_of_that_name(tmp_path):
    def trained(folder, name):
        run = runs.create_run_dir(folder, name)
        artifacts.write_json(run / artifacts.CONFIG, {"settings": {"name": name}})
        return run

    made = [trained(tmp_path, "small") for _ in range(11)]  # the same second: -2, ..., -11 after the first
    trial = trained(tmp_path / "study", "small")
    other = trained(tmp_path, "small-2")  # another --name, whose folder could pass for the second "small"
    (tmp_path / "20261206T174935Z-smaller").mkdir()  # another name that begins alike
    newest = [trial, made[-1], made[-2], made[-3]] if trial.name > made[0].name else [made[-1], made[-2], made[-3]]
    shown = ", ".join(d.relative_to(tmp_path).as_posix() for d in newest[:3])
    for refuse in (runs.resolve_run, runs.resolve_resumable):
        with pytest.raises(FmnistError, match=f"^no run 'small' in {tmp_path}/, but runs named 'small' there, newest "
                                              f"first: {re.escape(shown)} and 9 more; give one of them$"):
            refuse("small", tmp_path)
    with pytest.raises(FmnistError, match=f"runs named 'small-2' there, newest first: {other.name}; give one"):
        runs.resolve_run("small-2", tmp_path)
