import os
import shutil
import time

import pytest

from fmnist import run_locks, run_lookup
from fmnist.errors import FmnistError


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
