import contextlib
import logging
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from fmnist.errors import FmnistError
from fmnist.tune_report import write_report
from fmnist.tune_storage import MAX_JOURNAL_LINE, open_storage


def test_unknown_study_and_bad_storage_are_one_line_errors(tmp_path, caplog, refusing_port):
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
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "study.db")) as database:  # given without sqlite:///
        database.execute("create table t (x)")
    with pytest.raises(FmnistError, match=f"study.db is an SQLite database, not a journal: give it as --storage "
                                          f"sqlite:///{tmp_path / 'study.db'}$"):
        write_report("s", storage=str(tmp_path / "study.db"), runs_dir=tmp_path)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(FmnistError, match="photo.png/x.journal: a file is in the way of its folder$"):
        open_storage(str(tmp_path / "photo.png" / "x.journal"), tmp_path)  # as tune, which makes the journal
    with pytest.raises(FmnistError, match="photo.png is not an Optuna journal"):
        write_report("s", storage=str(tmp_path / "photo.png"), runs_dir=tmp_path)
    for content in ('{"a": 1}\n', "[1, 2]\n", '{"op_code": 99, "worker_id": "w"}\n',  # JSON, not Optuna's
                    "garbage\n"):  # its only line bad, which Optuna would skip as one half written
        (tmp_path / "other.journal").write_text(content)
        with pytest.raises(FmnistError, match="other.journal is not an Optuna journal"):
            write_report("s", storage=str(tmp_path / "other.journal"), runs_dir=tmp_path)
    journal = (tmp_path / "other.journal")
    journal.write_text('{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n')
    assert write_report("s", storage=str(journal), runs_dir=tmp_path)  # a study of no trials drawn all the same
    for edited in ('garbage{\n', 'garbage{\n{"op_code": 0, "worker_id": "w", "study_name": "t", "directions": [1]}\n'):
        journal.write_text(journal.read_text().splitlines(keepends=True)[0] + edited)  # last, or not: one line
        with pytest.raises(FmnistError, match=f"^line 2 of the journal {journal} is not JSON, as each of Optuna's is "
                                              r"\(edited by hand, or damaged\): remove that line, or restore"):
            write_report("s", storage=str(journal), runs_dir=tmp_path)
        with pytest.raises(FmnistError, match="^line 2 of the journal"):
            open_storage(str(journal), tmp_path)  # as tune, which would append after it
    with pytest.raises(FmnistError, match="study name '..'"):
        write_report("..", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match="not a database URL"):
        write_report("s", storage="postgresql://:bad:", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match=rf"cannot open the study storage postgresql://u:\*\*\*@127.0.0.1:"
                                          rf"{refusing_port}/db"):
        write_report("s", storage=f"postgresql://u:secret@127.0.0.1:{refusing_port}/db", runs_dir=tmp_path)
    for url in ("postgresql://u:secret@host:notaport/db", f"postgresql://u@127.0.0.1:{refusing_port}/db?password=secret"):
        with pytest.raises(FmnistError) as refused:
            write_report("s", storage=url, runs_dir=tmp_path)
        assert "secret" not in str(refused.value) and "***" in str(refused.value)
    with pytest.raises(FmnistError, match="sqlite:// keeps the study in memory, lost when this process ends"):
        write_report("s", storage="sqlite://", runs_dir=tmp_path)
    with pytest.raises(FmnistError, match=r"no study 'nope': there is no database file .*missing.db \(check the path "
                                          r"--storage gives\)$"):  # given: not told to give it
        write_report("nope", storage=f"sqlite:///{tmp_path / 'missing.db'}", runs_dir=tmp_path)
    (tmp_path / "journals").mkdir()
    with pytest.raises(FmnistError, match=f"^--storage {tmp_path / 'journals'} is a folder: give a journal file "
                                          fr"\(such as {tmp_path / 'journals' / 'tune.journal'}, made if"):
        open_storage(str(tmp_path / "journals"), tmp_path)
    with pytest.raises(FmnistError, match=f"^--storage {tmp_path / 'journals'} is a folder"):  # to read a study too
        write_report("s", storage=str(tmp_path / "journals"), runs_dir=tmp_path)
    os.mkfifo(tmp_path / "fifo")  # Optuna would wait on it, and read /dev/full until the memory ran out
    for device in (tmp_path / "fifo", Path("/dev/full"), Path("/dev/null")):
        for refused in (lambda: open_storage(str(device), tmp_path),
                        lambda: write_report("s", storage=str(device), runs_dir=tmp_path)):
            with pytest.raises(FmnistError, match=f"^--storage {device} is not a regular file \\(a device, or a "
                                                  "pipe\\): give a journal file or a database URL$"):
                refused()
    (tmp_path / "endless.journal").write_bytes(b"\0" * (MAX_JOURNAL_LINE + 1))  # truncate -s 20G, in small
    with pytest.raises(FmnistError, match=r"endless.journal is not an Optuna journal \(its line 1 runs over 16 MiB, "
                                          r"where Optuna's lines are short\); give --storage a journal file"):
        open_storage(str(tmp_path / "endless.journal"), tmp_path)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(FmnistError, match=f"cannot open the study storage .*: there is no folder {tmp_path / 'no'}$"):
        open_storage(f"sqlite:///{tmp_path / 'no' / 'study.db'}", tmp_path)  # as tune, which makes the database
    with pytest.raises(FmnistError, match=f"cannot open the journal file .*: there is no folder {tmp_path / 'no'}; "
                                          "make it, or give the path of an existing journal$"):
        open_storage(str(tmp_path / "no" / "study.journal"), tmp_path)  # a typo would begin a study of its own
    assert not (tmp_path / "no").exists()
    open_storage(None, tmp_path / "runs")  # the default journal's folder, ./runs, is made as runs are
    assert (tmp_path / "runs" / "tune.journal").is_file()
    with pytest.raises(FmnistError, match=rf"cannot open the study storage mysql://u:\*\*\*@127.0.0.1:{refusing_port}"
                                          r"/db: SQLAlchemy cannot import its driver \(No module named 'MySQLdb'\): "
                                          "install"):
        open_storage(f"mysql://u:secret@127.0.0.1:{refusing_port}/db", tmp_path)  # no MySQL driver comes with fmnist


def test_a_database_url_written_wrong_is_refused_not_taken_for_a_journal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:study.db", "postgresql:u:secret@host/db", "postgresql+psycopg:u:secret@host/db"):
        with pytest.raises(FmnistError, match=r"is not a database URL, e\.g\. sqlite:///study\.db") as refused:
            open_storage(url, tmp_path)  # as tune, which makes a journal
        assert "secret" not in str(refused.value)
    assert not any(tmp_path.iterdir())  # no journal, no folder named after the URL
    with pytest.raises(FmnistError, match=r"^postgres://u:\*\*\*@host/db: SQLAlchemy names PostgreSQL 'postgresql', "
                                          r"not 'postgres': write postgresql://...$"):
        open_storage("postgres://u:secret@host/db", tmp_path)
    for url, scheme in (("bogus://u:secret@x/db", "bogus"), ("postgresql+nodriver://u:secret@host/db",
                                                            "postgresql+nodriver")):
        with pytest.raises(FmnistError, match=rf"^{re.escape(url.replace('secret', '***'))}: SQLAlchemy knows no "
                                              rf"database \(or driver\) '{re.escape(scheme)}': give postgresql://"):
            open_storage(url, tmp_path)


def test_a_database_of_another_optuna_version_is_one_line_with_optunas_advice(tmp_path):
    import sqlite3

    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=url)
    with contextlib.closing(sqlite3.connect(tmp_path / "study.db")) as database, database:
        database.execute("update alembic_version set version_num = 'v0.9.0.a'")  # as an older Optuna left it
    with pytest.raises(FmnistError, match=r"^cannot open the study storage sqlite:///.*study\.db: .*optuna storage "
                                          r"upgrade"):
        write_report("s", storage=url, runs_dir=tmp_path)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # Optuna's, for a trial asked for outside optimize
def test_a_heartbeat_the_database_refuses_is_said_and_tried_again_not_the_end_of_the_beats(tmp_path, caplog):
    import sqlite3

    import optuna

    store, _ = open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    trial = optuna.create_study(study_name="s", storage=store).ask()
    store.record_heartbeat(trial._trial_id)
    with contextlib.closing(sqlite3.connect(tmp_path / "study.db")) as database, database:
        database.execute("alter table trial_heartbeats rename to away")  # as a server that fails a write
    with caplog.at_level(logging.WARNING, logger="fmnist.tune_storage"):
        store.record_heartbeat(trial._trial_id)  # Optuna's heartbeat thread would end on an exception here
    assert ("could not record this worker's heartbeat in the study's database ((sqlite3.OperationalError) no such "
            "table: trial_heartbeats); trying again in 60 s") in caplog.text


def test_the_lock_of_a_journal_in_a_relative_folder_is_waited_out_or_named(tmp_path, monkeypatch):
    import optuna

    from fmnist import tune_storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tune_storage, "JOURNAL_LOCK_GRACE_S", 3)
    lock = Path("runs/tune.journal.lock")
    held = []
    acquire = optuna.storages.journal.JournalFileSymlinkLock.acquire

    def acquire_and_look(self):
        taken = acquire(self)
        held.append(lock.exists())  # the link leads to the journal, so a worker waiting on it can time it
        return taken

    monkeypatch.setattr(optuna.storages.journal.JournalFileSymlinkLock, "acquire", acquire_and_look)
    store, _ = tune_storage.open_storage(None, Path("runs"))  # the default ./runs, relative
    store.create_new_study([optuna.study.StudyDirection.MINIMIZE], "first")
    assert held and all(held)

    lock.symlink_to(Path("runs/tune.journal").absolute())  # as a killed worker leaves it
    store, _ = tune_storage.open_storage(None, Path("runs"))
    writer = threading.Thread(target=store.create_new_study, args=([optuna.study.StudyDirection.MINIMIZE], "second"),
                              daemon=True)
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive() and not lock.exists()  # taken over after the grace period, then released
    assert {s.study_name for s in store.get_all_studies()} == {"first", "second"}

    lock.symlink_to("runs/tune.journal")  # as a worker of an earlier fmnist left it: leading nowhere
    with pytest.raises(FmnistError, match=r"the journal's lock runs/tune.journal.lock points to runs/tune.journal, "
                                          r"which is not there .* remove runs/tune.journal.lock$"):
        tune_storage.open_storage(None, Path("runs"))


def test_a_half_written_last_line_is_cut_off_and_the_study_goes_on(tmp_path, caplog):
    import optuna

    journal = tmp_path / "s.journal"
    storage, _ = open_storage(str(journal), tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":4,"worker_id":"killed-')  # a worker stopped mid-write, or a full disk
    with caplog.at_level(logging.WARNING, logger="fmnist.tune_storage"):
        storage, _ = open_storage(str(journal), tmp_path)
    assert "the last line of the journal" in caplog.text and "cut off, 33 bytes" in caplog.text
    assert journal.read_bytes() == whole
    optuna.load_study(study_name="s", storage=storage).optimize(lambda trial: trial.suggest_float("x", 0, 1),
                                                                n_trials=1)
    storage, _ = open_storage(str(journal), tmp_path)  # read again, whole: four trials, none lost
    assert len(optuna.load_study(study_name="s", storage=storage).get_trials()) == 4


def test_a_database_of_another_program_is_refused_and_left_as_it_was(tmp_path):
    import sqlite3

    database = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("create table users (name)")
    for report in (True, False):
        with pytest.raises(FmnistError, match="app.db is not a database of Optuna studies .*users"):
            if report:
                write_report("s", storage=f"sqlite:///{database}", runs_dir=tmp_path)
            else:
                open_storage(f"sqlite:///{database}", tmp_path)  # as tune, which would add its study
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert [name for (name,) in connection.execute("select name from sqlite_master")] == ["users"]


def test_a_database_another_worker_is_still_making_is_not_refused(tmp_path):
    """Workers started together race on a fresh SQLite file: one that looks while another is adding Optuna's tables,
    one at a time, must see a study database, not another program's."""
    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models

    from fmnist.tune_storage import _refuse_foreign_sqlite

    database = tmp_path / "study.db"
    looked_after = []

    def look(table, connection, **_):
        _refuse_foreign_sqlite(database, str(database))  # as the other worker, on its own connection
        looked_after.append(table.name)

    tables = models.BaseModel.metadata.sorted_tables
    for table in tables:
        sqlalchemy.event.listen(table, "after_create", look)
    try:
        optuna.storages.RDBStorage(f"sqlite:///{database}")
    finally:
        for table in tables:
            sqlalchemy.event.remove(table, "after_create", look)
    assert sorted(looked_after) == sorted(table.name for table in tables)


def test_a_worker_that_loses_the_race_to_make_a_fresh_sqlite_database_tries_again(tmp_path):
    """Two workers started together on a new SQLite file: the one whose CREATE TABLE comes second gets SQLite's
    "already exists", and opens the study once the other has made it."""
    import sqlalchemy
    from optuna.storages._rdb import models

    database = tmp_path / "study.db"
    values = next(table for table in models.BaseModel.metadata.sorted_tables if table.name == "trial_values")

    raced = []

    def other_worker(table, connection, **_):  # makes the table first, on its own connection, once
        if not raced:
            raced.append(table.name)
            other = sqlalchemy.create_engine(f"sqlite:///{database}")
            table.create(other)
            other.dispose()

    sqlalchemy.event.listen(values, "before_create", other_worker)
    try:
        store, shown = open_storage(f"sqlite:///{database}", tmp_path)
    finally:
        sqlalchemy.event.remove(values, "before_create", other_worker)
    assert raced == ["trial_values"]
    assert shown == f"sqlite:///{database}" and store.get_all_studies() == []


def test_a_journal_in_a_folder_that_takes_no_files_is_read_but_not_tuned_in(tmp_path):
    import optuna

    from fmnist.settings import TrainSettings
    from fmnist.tune import open_study

    folder = tmp_path / "shared"
    store, shown = open_storage(None, folder)
    open_study("s", store, shown, TrainSettings(epochs=2))
    (folder / "s").mkdir()
    def fmnist(*args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, as_another_user=True)

    folder.chmod(0o555), (folder / "s").chmod(0o555)
    try:
        tuned = fmnist("tune", "--study", "s2", "--runs-dir", str(folder), "--trials", "1", "--epochs", "2")
        assert (tuned.returncode, tuned.stderr) == (1, (
            f"fmnist: error: cannot open the journal file {folder / 'tune.journal'}: its lock needs a new file in "
            f"{folder}, which cannot be written (Permission denied); give --runs-dir a folder you may write in, or "
            "--storage a journal file in one\n"))
        page = fmnist("tune", "--report", "s", "--runs-dir", str(folder))
        assert (page.returncode, page.stderr) == (1, (  # the page's default place, not a flag never given
            f"fmnist: error: the page (--output writes it elsewhere) {folder / 's' / 'tune_report.html'}: cannot "
            f"write in {folder / 's'} (Permission denied)\n"))
        elsewhere = fmnist("tune", "--report", "s", "--runs-dir", str(folder), "--output", str(tmp_path / "page.html"))
        assert elsewhere.returncode == 0, elsewhere.stderr  # the study read where nothing may be written
        assert optuna.load_study(study_name="s", storage=open_storage(None, folder)[0]).trials  # as it was
    finally:
        folder.chmod(0o755), (folder / "s").chmod(0o755)


def test_a_journal_lock_the_system_will_not_let_go_is_said_not_taken_over_without_end(tmp_path, monkeypatch):
    import errno
    import os

    from fmnist.errors import WriteRefused
    from fmnist.tune_storage import SteadyJournalLock

    journal = tmp_path / "tune.journal"
    journal.touch()
    lock = SteadyJournalLock(str(journal), grace_period=3)
    rename, refusals = os.rename, []

    def read_only(source, target):  # the folder made read-only: Optuna renames the lock's link to release it
        if len(refusals) >= 50:  # Optuna's own lock retries without end: let it go, so that the test fails, not hangs
            return rename(source, target)
        refusals.append(source)
        raise OSError(errno.EROFS, "Read-only file system", source)

    assert lock.acquire()
    monkeypatch.setattr(os, "rename", read_only)
    with pytest.raises(WriteRefused, match=rf"^cannot release the journal's lock {journal}\.lock: Read-only file "
                                           "system; once the system lets fmnist write there again, remove it if no "
                                           "'fmnist tune' runs on this journal$"):
        lock.release()
    # Held still (by a worker the refusal stopped): taken over after the grace period, which fails alike, and says so.
    with pytest.raises(WriteRefused, match="cannot release the journal's lock"):
        lock.acquire()
    assert len(refusals) == 2
