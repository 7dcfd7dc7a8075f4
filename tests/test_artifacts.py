import os

import pytest

from fmnist import artifacts
from fmnist.errors import FmnistError


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


@pytest.mark.parametrize("content, said", [
    ("[]", "is damaged: it holds a JSON list"), ('"x"', "is damaged: it holds a JSON str"),
    ("{", "is not valid JSON"), (b"\xff", "is not valid JSON"),
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


def test_history_of_no_epochs_reads_as_its_columns_or_nothing(tmp_path):
    history = tmp_path / artifacts.HISTORY
    history.write_bytes(b"")  # CSVLogger writes its header with the first epoch's row: a run stopped before has none
    assert artifacts.read_history(tmp_path) == {}
    history.write_text("epoch,loss\n")
    assert artifacts.read_history(tmp_path) == {"epoch": [], "loss": []}
    history.write_text("epoch,loss\n0,1.5\n1,1.25\n")
    assert artifacts.read_history(tmp_path) == {"epoch": [0.0, 1.0], "loss": [1.5, 1.25]}
