import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import compare_page, refused_before_keras, run_cli, write_backup_record
from fmnist import artifacts, model_files, run_list, run_locks, run_lookup, runs
from fmnist.errors import FmnistError


def test_a_run_whose_name_is_not_utf8_is_refused_in_one_line(mixed_runs, tmp_path):
    import os

    odd = shutil.copytree(mixed_runs["finished"], tmp_path / os.fsdecode(b"run-\xff"))  # a name from another system
    with pytest.raises(FmnistError, match="has a name that is not UTF-8: rename it"):
        run_lookup.resolve_run(str(odd), tmp_path)
    result = run_cli("report", str(odd))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "has a name that is not UTF-8" in result.stderr
    # Listed all the same, its odd byte escaped, by a terminal that takes UTF-8 alone (a UTF-8 locale's).
    listed = run_cli("runs", "--runs-dir", str(tmp_path), env={"PYTHONIOENCODING": "utf-8:strict"})
    assert listed.returncode == 0 and "run-\\udcff" in listed.stdout, listed.stderr


def test_a_runs_folder_whose_name_is_not_utf8_is_refused_before_training(tmp_path):
    import os

    odd = tmp_path / os.fsdecode(b"runs-\xfe")
    result = run_cli("train", "--runs-dir", str(odd / "deeper"), "--limit", "100", "--epochs", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "epoch" not in result.stderr
    assert result.stderr == (f"fmnist: error: the folder runs-\\udcfe in {tmp_path}/runs-\\udcfe/deeper has a name "
                             "that is not UTF-8: rename it, then try again\n")
    assert not odd.exists()


def test_a_runs_dir_in_a_missing_folder_is_refused_before_anything_is_made(tmp_path):
    typo, in_the_way = tmp_path / "typo" / "runs", tmp_path / "afile" / "runs"
    (tmp_path / "afile").write_text("not a folder")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    said = refused_before_keras([
        ["train", "--runs-dir", str(typo), "--epochs", "1"], ["train", "--runs-dir", str(in_the_way), "--epochs", "1"],
        ["tune", "--runs-dir", str(typo), "--epochs", "1"], ["tune", "--runs-dir", str(in_the_way), "--epochs", "1"],
        # tune's report and its best trial's training would make the folders too
        ["tune", "--report", "s", "--storage", storage, "--runs-dir", str(typo)],
        ["tune", "--train-best", "s", "--storage", storage, "--runs-dir", str(typo)]])
    missing = (f"fmnist: error: --runs-dir {typo}: the folder {typo.parent} does not exist; make it first (mkdir -p "
               f"{typo.parent}), or give a runs folder in one that does (the runs folder itself is made)\n")
    blocked = f"fmnist: error: --runs-dir {in_the_way}: a file is in the way of its folder {in_the_way.parent}\n"
    assert said == missing + blocked + missing + blocked + missing + missing
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_a_run_directory_the_system_refuses_is_one_line_naming_its_folder(tmp_path):
    with pytest.raises(FmnistError, match="cannot create a run directory in .*: File name too long"):
        runs.create_run_dir(tmp_path / "runs", "a" * 300)


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
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()  # the current folder deleted (by another shell, say): the path as given
    assert runs.absolute(Path("runs")) == Path("runs")


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


def test_an_output_folder_is_checked_before_the_work_and_never_made(tmp_path):
    nested = tmp_path / "new" / "deeper" / "out.png"
    with pytest.raises(FmnistError, match=f"^--show {nested}: the folder {nested.parent} does not exist; make it first "
                                          fr"\(mkdir -p {nested.parent}\), or name a file in a folder that does$"):
        runs.prepare_output(nested, "--show")
    assert not (tmp_path / "new").exists()  # a typo leaves no stray folders
    nested.parent.mkdir(parents=True)
    assert runs.prepare_output(nested, "--show") == nested
    assert list(nested.parent.iterdir()) == []  # the probe leaves nothing behind
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


def test_a_file_of_the_users_is_never_written_over_and_one_fmnist_wrote_may_be(tmp_path, tiny_run_dir):
    from PIL import Image

    from fmnist import plots

    copy = shutil.copytree(tiny_run_dir, tmp_path / "runs" / "copy")
    ours = {  # what fmnist wrote: a page, a picture, a benchmark's figures, the inputs predict saved
        "page.html": lambda path: compare_page([tiny_run_dir, copy], path),
        "seen.png": lambda path: plots.bar_chart_png(["a"], [1.0], "t", path),
        "bench.json": lambda path: artifacts.write_json(path, {"machine": {}, "results": {}, "gemm_gflops": 1.0}),
    }
    theirs = {  # the user's own, of the same kinds
        "page.html": lambda path: path.write_text("<html><title>my notes</title></html>"),
        "seen.png": lambda path: Image.new("RGB", (4, 4)).save(path),  # not drawn by fmnist: no Software field of it
        "bench.json": lambda path: artifacts.write_json(path, {"results": "mine"}),
    }
    for name in ours:
        mine, fmnists = tmp_path / "mine" / name, tmp_path / "fmnist" / name
        mine.parent.mkdir(exist_ok=True)
        fmnists.parent.mkdir(exist_ok=True)
        theirs[name](mine)
        ours[name](fmnists)
        with pytest.raises(FmnistError, match=f"^--output {mine}: a (file that fmnist did not write is there|picture "
                                              r"that fmnist did not draw is there \(an older fmnist's are not known "
                                              r"as its own\)); move it, or name another file$"):
            runs.prepare_output(mine, "--output", mine.suffix)
        assert runs.prepare_output(fmnists, "--output", fmnists.suffix) == fmnists
        mine.write_bytes(b"")  # empty, as a failed copy leaves it: not fmnist's either, and said so in one line
        with pytest.raises(FmnistError, match="that fmnist did not (write|draw) is there"):
            runs.prepare_output(mine, "--output", mine.suffix)
    inputs = tmp_path / "inputs.npy"  # the inputs predict saves are arrays users make too: never written over
    np.save(inputs, np.zeros((3, 784), np.float32))
    with pytest.raises(FmnistError, match=f"^--save-inputs {inputs}: an array is there, and fmnist writes over none "
                                          r"\(the inputs it saves look like yours\); move it, or name another file$"):
        runs.prepare_output(inputs, "--save-inputs", ".npy")


def test_a_folder_that_takes_no_files_is_named_so():
    # /proc exists but answers "no such file" to a new file in it, which read as if /proc were missing
    with pytest.raises(FmnistError, match=r"^--show /proc/x.png: cannot write in /proc \(it takes no new files\)$"):
        runs.prepare_output(Path("/proc/x.png"), "--show", ".png")


def test_a_run_without_test_metrics_is_refused_saying_why_and_what_to_do(tiny_run_dir, tmp_path, caplog):
    from fmnist.report import build_report

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.METRICS).unlink()
    said = f"metrics.json is missing: 'fmnist train --resume {run}' scores the run"
    for refused in (lambda: run_list.require_scored(run, "x"), lambda: build_report(run)):
        # finished, so stopped while it was scored, as `fmnist runs` says: its resume scores it
        with pytest.raises(FmnistError, match=said):
            refused()
    with caplog.at_level(logging.WARNING, logger="fmnist"):  # a comparison says so, and sets its curves beside
        compare_page([run, tiny_run_dir], tmp_path / "compare.html")
    assert f"{said}: the page compares its settings and learning curves, not its scores" in caplog.text
    status = (run / artifacts.STATUS).read_bytes()
    # Killed after its model was saved, before its status said finished: its backup still there.
    epochs = len(artifacts.read_history(run)["loss"])
    write_backup_record(run, epochs, stopped=True)
    runs.set_status(run, "running")
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
    with run_locks.claim_run(run):  # as its training process holds it
        with pytest.raises(FmnistError, match="is being trained right now; its report needs it scored: wait for it"):
            build_report(run)
        with pytest.raises(FmnistError, match="has no model yet: it is being trained right now; wait for it"):
            model_files.verified_model_path(run)
    with pytest.raises(FmnistError, match="has no model yet: its training has not finished; 'fmnist train --resume"):
        model_files.verified_model_path(run)  # its process gone
    (run / artifacts.HISTORY).unlink()  # beside its backup: the advice is what its resume would say
    with pytest.raises(FmnistError, match=r"has no model yet: its training has not finished; its resume would refuse "
                                          rf"it: .*history.csv holds 0 of the {epochs} epochs in .*backup.npz; restore "
                                          "it, or remove backup.npz and history.csv"):
        model_files.verified_model_path(run)


@pytest.mark.parametrize("content", [b"", b"  \n", b"\xff\xfe", b"not-a-checksum  model.keras\n"])
def test_a_damaged_model_checksum_file_is_named_as_damaged(tiny_run_dir, tmp_path, content):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    (run / artifacts.MODEL_SHA256).write_bytes(content)
    with pytest.raises(FmnistError,
                       match="model.keras.sha256 is damaged: it holds no SHA-256; restore it from a copy, or train "
                             "a new run$"):
        model_files.verified_model_path(run)


def test_a_runs_directory_that_is_a_file_is_named_so(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(FmnistError, match="the runs directory .*runs is a file: give a folder"):
        runs.create_run_dir(tmp_path / "runs", "x")
    (tmp_path / "gone").symlink_to(tmp_path / "unmounted")  # a link to a disk not mounted, say
    with pytest.raises(FmnistError, match=f"^the runs directory {tmp_path / 'gone'} is a link to "
                                          f"{tmp_path / 'unmounted'}, which is missing: give a folder"):
        runs.create_run_dir(tmp_path / "gone", "x")


def test_advice_names_a_run_as_a_shell_takes_it_from_wherever_it_was_given(tmp_path, monkeypatch):
    run = runs.create_run_dir(tmp_path / "my runs", "spaced")
    artifacts.write_json(run / artifacts.CONFIG, {"settings": {"seed": 1}})
    assert runs.resume_command(run) == f'fmnist train --resume "{run}"'
    assert runs.shell_word("it's $HOME") == "'it'\"'\"'s $HOME'" and runs.shell_word("plain/path") == "plain/path"
    monkeypatch.chdir(run)  # `fmnist train --resume .`: the run's own name, not ""
    assert runs.require_run_dir(Path(".")) == run and runs.require_run_dir(Path(".")).name == run.name
