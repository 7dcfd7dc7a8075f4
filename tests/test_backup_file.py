import json

import numpy as np
import pytest

from conftest import write_backup_record
from fmnist import artifacts
from fmnist.backup_file import FORMAT, epochs_done, read_meta, run_id, training_over
from fmnist.errors import FmnistError


def write_backup(path, meta) -> None:
    """A backup's record alone, as `fmnist runs` reads it (the arrays beside it are not read)."""
    np.savez(path, meta=np.array(json.dumps(meta)), model_0=np.zeros(3))


def test_the_record_is_read_without_the_arrays(tmp_path):
    meta = {"format": FORMAT, "epochs_done": 3, "stopped": False, "run": None}
    write_backup(tmp_path / "backup.npz", meta)
    assert read_meta(tmp_path / "backup.npz") == meta


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not a backup at all"])
def test_a_damaged_backup_is_one_line_saying_what_to_do(tmp_path, content):
    (tmp_path / "backup.npz").write_bytes(content)
    with pytest.raises(FmnistError, match="backup.npz is damaged, so the run cannot continue from it; remove "
                                          "backup.npz and history.csv, and 'fmnist train --resume .*' trains the run "
                                          "again from its first"):
        read_meta(tmp_path / "backup.npz")


def test_a_backup_gone_after_two_finished_epochs_is_refused_not_trained_again_unsaid(tmp_path):
    """One row without a backup is a kill between the row and its backup; two or more mean the backup was lost."""
    assert epochs_done(tmp_path) == 0  # nothing trained yet
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.")  # the second row cut short
    assert epochs_done(tmp_path) == 0
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n2,1.")
    with pytest.raises(FmnistError, match=f"^{tmp_path / artifacts.BACKUP} is missing, though history.csv holds 2 "
                                          "finished epochs: restore it from a copy to continue after them; else "
                                          "remove history.csv, and 'fmnist train --resume "):
        epochs_done(tmp_path)
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,\xff\r\n2,1.1\r\n")  # damaged by hand
    with pytest.raises(FmnistError, match="history.csv holds 3 finished epochs"):  # rows all the same
        epochs_done(tmp_path)


def test_a_history_that_cannot_be_read_beside_a_backup_is_one_line(tmp_path):
    artifacts.write_json(tmp_path / artifacts.CONFIG, {"settings": {"seed": 1}})
    write_backup_record(tmp_path, 2)
    (tmp_path / artifacts.HISTORY).mkdir()  # what the system refuses to read, as a file without permission
    with pytest.raises(FmnistError, match=rf"^cannot read {tmp_path / artifacts.HISTORY} \(Is a directory\); restore "
                                          "it, or remove backup.npz and history.csv"):
        epochs_done(tmp_path)


@pytest.mark.parametrize("meta, refusal", [
    ({"format": FORMAT + 1}, f"backup of format {FORMAT + 1}, not {FORMAT} \\(another fmnist version"),  # a later one
    ({"format": str(FORMAT)}, "is damaged"), ([{"format": FORMAT}], "is damaged"),  # a record edited by hand
])
def test_a_backup_of_another_format_is_refused_not_misread(tmp_path, meta, refusal):
    write_backup(tmp_path / "backup.npz", meta)
    with pytest.raises(FmnistError, match=refusal):
        read_meta(tmp_path / "backup.npz")


def test_a_backup_is_tied_to_its_run_by_the_config_it_began_with(tmp_path):
    assert run_id(tmp_path) is None  # no config.json: a run before it had one
    artifacts.write_json(tmp_path / artifacts.CONFIG, {"settings": {"seed": 1}})
    first = run_id(tmp_path)
    (tmp_path / artifacts.CONFIG).write_text('{\n  "settings" :  {"seed": 1}\n}\n')  # reformatted: the same run
    assert run_id(tmp_path) == first
    artifacts.write_json(tmp_path / artifacts.CONFIG, {"settings": {"seed": 2}})
    assert run_id(tmp_path) != first
    (tmp_path / artifacts.CONFIG).write_text('{"settings": ')  # damaged: no run's, by its bytes
    assert run_id(tmp_path) == artifacts.sha256_file(tmp_path / artifacts.CONFIG)


@pytest.mark.parametrize("epochs_done, stopped, planned, over", [
    (3, False, 5, False), (3, True, 5, True), (5, False, 5, True), (5, False, None, False),
])
def test_a_backup_tells_whether_the_training_is_over(tmp_path, epochs_done, stopped, planned, over):
    assert not training_over(tmp_path, 5)  # no backup: all to train
    write_backup(tmp_path / artifacts.BACKUP, {"format": FORMAT, "epochs_done": epochs_done, "stopped": stopped})
    assert training_over(tmp_path, planned) is over
    (tmp_path / artifacts.BACKUP).write_bytes(b"cut")
    assert not training_over(tmp_path, planned)  # damaged: the resume says so
