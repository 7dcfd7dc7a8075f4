import os

import pytest

from fmnist import artifacts
from fmnist.errors import DamagedFile, FmnistError


def test_write_atomic_leaves_old_file_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    artifacts.write_json(target, {"a": 1})

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        artifacts.write_atomic(target, crash)
    assert artifacts.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_full_disk_is_said_of_the_file_being_written_and_the_old_one_is_kept(tmp_path):
    target = tmp_path / "metrics.json"
    artifacts.write_json(target, {"a": 1})

    def onto_a_full_disk(tmp):  # /dev/full answers every write as a full disk does
        with open("/dev/full", "w") as full:
            full.write("{}")

    with pytest.raises(FmnistError, match=f"^cannot write {target}: No space left on device$"):
        artifacts.write_atomic(target, onto_a_full_disk)
    assert artifacts.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_folder_made_read_only_mid_write_is_said_of_the_file_being_written(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "backup.npz"

    def read_only(self, missing_ok=False):  # nor may the temporary file be removed then
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    def refused(tmp):
        monkeypatch.setattr(type(tmp), "unlink", read_only)
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    with pytest.raises(FmnistError, match=f"^cannot write {target}: Read-only file system$"):  # not the temporary
        artifacts.write_atomic(target, refused)


@pytest.mark.parametrize("content, said", [
    ("[]", "is damaged: it holds a JSON list"), ('"x"', "is damaged: it holds a JSON str"),
    ("{", "is not valid JSON"), (b"\xff", "is not valid JSON"),
    ('{"epochs": ' + "9" * 5000 + "}", "is not valid JSON"),  # Python refuses integers of 4,300+ digits
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),  # too deep for Python's parser
])
def test_a_json_file_that_is_not_the_object_fmnist_wrote_is_named_as_damaged(tmp_path, content, said):
    path = tmp_path / "status.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FmnistError, match=f"status.json {said}"):
        artifacts.read_json(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(FmnistError, match="cannot read .*status.json: Is a directory"):
        artifacts.read_json(path)


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    artifacts.write_json(tmp_path / "a.json", {"a": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_name_near_the_systems_limit_is_written_as_any_other(tmp_path):
    # 255 bytes, the most a name may have here: its temporary name beside it must not be longer.
    for name in ("b" * 250 + ".json", "\u00e9" * 124 + "xx.json"):  # one byte a letter, or two
        assert len(name.encode()) == 255
        artifacts.write_json(tmp_path / name, {"ok": True})
        assert artifacts.read_json(tmp_path / name) == {"ok": True}
    assert len(list(tmp_path.iterdir())) == 2


def test_history_of_no_epochs_reads_as_its_columns_or_nothing(tmp_path):
    history = tmp_path / artifacts.HISTORY
    history.write_bytes(b"")  # CSVLogger writes its header with the first epoch's row: a run stopped before has none
    assert artifacts.read_history(tmp_path) == {}
    history.write_text("epoch,loss\n")
    assert artifacts.read_history(tmp_path) == {"epoch": [], "loss": []}
    history.write_text("epoch,loss\n0,1.5\n1,1.25\n")
    assert artifacts.read_history(tmp_path) == {"epoch": [0.0, 1.0], "loss": [1.5, 1.25]}


def test_a_historys_whole_lines_keep_their_ends_and_a_row_cut_short_is_not_one(tmp_path):
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n2,1.")  # killed mid-row
    assert artifacts.history_lines(tmp_path) == ["epoch,loss\r\n", "0,1.5\r\n", "1,1.2\r\n"]
    (tmp_path / artifacts.HISTORY).write_bytes(b"epoch,loss\n0,\xff\n")
    with pytest.raises(ValueError):
        artifacts.history_lines(tmp_path)


def test_a_history_cell_too_large_for_csv_is_named_as_damage(tmp_path):
    (tmp_path / artifacts.HISTORY).write_text("epoch,loss\n0," + "1" * 200_000 + "\n")  # past csv's field limit
    with pytest.raises(DamagedFile, match="history.csv is damaged"):
        artifacts.read_history(tmp_path)


def test_a_history_column_named_twice_is_one_column(tmp_path):
    (tmp_path / artifacts.HISTORY).write_text("epoch,loss,loss\n0,1.5,1.4\n1,1.2,1.1\n")
    assert artifacts.read_history(tmp_path) == {"epoch": [0.0, 1.0], "loss": [1.4, 1.1]}  # two epochs, not four


def test_a_history_row_of_other_cells_than_its_header_is_named_by_its_line(tmp_path):
    for row in ("1,2,3", "1"):  # one cell too many, then too few: neither a number Python cannot read
        (tmp_path / artifacts.HISTORY).write_text(f"epoch,loss\n0,1.5\n{row}\n2,1.1\n")
        with pytest.raises(DamagedFile, match=r"^\S*history.csv is damaged at line 3 \(not as many cells as the "
                                              r"header has columns\)$"):
            artifacts.read_history(tmp_path)


@pytest.mark.parametrize("value, number", [
    (0.5, 0.5), (3, 3.0), (True, None), ("0.5", None), (None, None),
    (float("nan"), None), (float("inf"), None), pytest.param(10**400, None, id="10**400"),  # json.loads reads all three
])
def test_json_number_is_a_finite_float_or_none(value, number):
    assert artifacts.json_number(value) == number


def test_the_best_epoch_is_the_lowest_finite_validation_loss():
    assert artifacts.best_epoch({"val_loss": [0.9, 0.5, float("nan"), 0.7]}) == 2
    assert artifacts.best_epoch({"val_loss": [float("nan"), 0.8, 0.6]}) == 3  # argmin alone picks the NaN
    assert artifacts.best_epoch({"val_loss": [float("nan")]}) is None
    assert artifacts.best_epoch({"val_loss": []}) is None


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not an archive"])
def test_a_damaged_split_is_named_as_damaged_and_a_missing_one_is_an_oserror(tmp_path, content):
    import numpy as np

    np.savez(tmp_path / artifacts.SPLIT, train=np.arange(3), validation=np.arange(3, 5))
    assert artifacts.read_split(tmp_path, "validation").tolist() == [3, 4]
    (tmp_path / artifacts.SPLIT).write_bytes(content)
    with pytest.raises(DamagedFile, match=f"^{tmp_path / artifacts.SPLIT} is damaged "):
        artifacts.read_split(tmp_path, "train")
    (tmp_path / artifacts.SPLIT).unlink()
    with pytest.raises(FileNotFoundError):  # not there: its callers make it again, or do without it
        artifacts.read_split(tmp_path, "train")
