import logging
import re

import pytest

from fmnist.errors import FmnistError
from fmnist.tune_report import write_report


def test_unknown_study_and_bad_storage_are_one_line_errors(tmp_path, caplog):
    with pytest.raises(FmnistError, match="no study 'nope': there is no journal"):
        write_report("nope", runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # looking for a study creates nothing
    (tmp_path / "empty.journal").touch()
    with pytest.raises(FmnistError, match="no study 'nope'.*studies there: none"):
        write_report("nope", storage=str(tmp_path / "empty.journal"), runs_dir=tmp_path)
    (tmp_path / "empty.journal.lock").symlink_to(tmp_path / "empty.journal")  # Optuna's lock, as a kill leaves it
    with (caplog.at_level(logging.WARNING, logger="fmnist.tune_storage"),
          pytest.raises(FmnistError, match="no study 'nope'")):
        write_report("nope", storage=str(tmp_path / "empty.journal"), runs_dir=tmp_path)
    assert re.search(r"empty.journal is locked \(empty.journal.lock\): .* taken over after 30 s of waiting in "
                     r"which the journal does not change", caplog.text)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(FmnistError, match="photo.png is not an Optuna journal"):
        write_report("s", storage=str(tmp_path / "photo.png"), runs_dir=tmp_path)
    for content in ('{"a": 1}\n', "[1, 2]\n", '{"op_code": 99, "worker_id": "w"}\n'):  # JSON, not Optuna's
        (tmp_path / "other.journal").write_text(content)
        with pytest.raises(FmnistError, match="other.journal is not an Optuna journal"):
            write_report("s", storage=str(tmp_path / "other.journal"), runs_dir=tmp_path)
    with pytest.raises(FmnistError, match="study name '..'"):
        write_report("..", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match="not a database URL"):
        write_report("s", storage="postgresql://:bad:", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match=r"cannot open the study storage postgresql://u:\*\*\*@127.0.0.1:9/db"):
        write_report("s", storage="postgresql://u:secret@127.0.0.1:9/db", runs_dir=tmp_path)
    for url in ("postgresql://u:secret@host:notaport/db", "postgresql://u@127.0.0.1:9/db?password=secret"):
        with pytest.raises(FmnistError) as refused:
            write_report("s", storage=url, runs_dir=tmp_path)
        assert "secret" not in str(refused.value) and "***" in str(refused.value)
    with pytest.raises(FmnistError, match="sqlite:// keeps the study in memory, lost when this process ends"):
        write_report("s", storage="sqlite://", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match="no study 'nope': there is no database file .*missing.db"):
        write_report("nope", storage=f"sqlite:///{tmp_path / 'missing.db'}", runs_dir=tmp_path)
    assert not (tmp_path / "missing.db").exists()
