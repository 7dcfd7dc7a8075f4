import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
import weakref

import pytest

from fmnist import artifacts, stopping


@pytest.fixture
def installed(monkeypatch):
    """Inside stopping.handled(), with a recorder as the unraisable hook it passes other exceptions on to."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with stopping.handled():
        yield unraisable


def signal_inside_a_gc_callback(signum: signal.Signals) -> None:
    """A signal that arrives while a weakref callback runs: Python drops the exception its handler raises there."""
    class Thing:
        pass

    thing = Thing()
    kept = weakref.ref(thing, lambda _: signal.raise_signal(signum))
    del thing
    gc.collect()
    assert kept() is None  # the callback ran


def test_a_stop_that_python_swallows_in_a_garbage_collection_callback_is_kept(installed):
    signal_inside_a_gc_callback(signal.SIGTERM)  # as if `kill` came during a collection
    assert installed == []  # Python dropped the KeyboardInterrupt, and said nothing of it
    with pytest.raises(KeyboardInterrupt):
        stopping.check()


def test_other_unraisable_exceptions_are_still_reported(installed):
    class Thing:
        def __del__(self):
            raise ValueError("a real bug")

    Thing()
    gc.collect()
    assert [u.exc_type for u in installed] == [ValueError]
    stopping.check()  # no signal came: nothing to stop


@pytest.mark.realdata
def test_kill_while_the_model_compiles_stops_the_run_cleanly(tmp_path, real_data_dir):
    """Leaving mid-compilation crashed JAX (SIGSEGV) in 5 of 7 tries; SIGTERM left the run 'running'. The command
    that resumes it names the run absolutely, though the runs folder was given relative to the training's own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fmnist", "train", "--limit", "2000", "--epochs", "2", "--runs-dir", "runs", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("training on"):
            time.sleep(1.0)  # compiling the training step takes several seconds
            process.send_signal(signal.SIGTERM)
            break
    out, rest = process.communicate(timeout=120)
    err = "".join(seen) + rest
    assert process.returncode == -signal.SIGTERM, err  # ended by the signal, as for systemd and `timeout`
    assert err.rstrip().endswith("fmnist: stopped by SIGTERM") and "Traceback" not in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads((run_dir / artifacts.STATUS).read_text())
    assert status["state"] == "interrupted" and status["resume"] == f"fmnist train --resume {run_dir}"
    assert f"stopped: 'fmnist train --resume {run_dir}' continues from the last finished epoch" in err
    # --json says so on stdout too, for a script that reads it.
    assert json.loads(out) == {"state": "interrupted", "run_dir": str(run_dir),
                               "resume": f"fmnist train --resume {run_dir}"}


@pytest.fixture
def sigint_as_at_a_terminal():
    """Ctrl-C handled as at a terminal: a test runner started in the background (`cmd &`) has SIGINT ignored, and
    fmnist rightly leaves an ignored SIGINT alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_as_at_a_terminal")
def test_main_called_in_process_returns_the_stop_and_puts_the_handlers_back(monkeypatch, tmp_path, capsys):
    from fmnist import run_list
    from fmnist.cli import main

    before = {signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}, sys.unraisablehook
    progress = logging.getLogger("fmnist")
    logged_before = progress.handlers[:], progress.level  # main's handler writes to this test's captured stderr

    # A Ctrl-C that lands in a garbage-collection callback while the command runs.
    def swallowed_stop(runs_dir, **options):
        signal_inside_a_gc_callback(signal.SIGINT)
        return []

    monkeypatch.setattr(run_list, "list_runs", swallowed_stop)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 130  # the caller goes on: no exit, no crash
    assert capsys.readouterr().err.strip().splitlines()[-1] == "fmnist: interrupted"
    assert ({signum: signal.getsignal(signum) for signum in stopping.STOP_SIGNALS}, sys.unraisablehook) == before
    assert (progress.handlers, progress.level) == logged_before
    stopping.check()  # that stop is over: the caller's next training is not stopped by it


def test_a_stop_after_the_command_finished_ends_the_process_with_its_own_status(tmp_path):
    """`kill` or `timeout` landing while Python shuts down (an atexit hook stands in for that moment): the results
    are out, and the exit status says the command succeeded, not that it was killed."""
    ended = subprocess.run(
        [sys.executable, "-c", "import atexit, os, signal, sys; from fmnist.cli import run; "
                               "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM)); "
                               f"sys.argv = ['fmnist', 'runs', '--json', '--runs-dir', {str(tmp_path)!r}]; run()"],
        capture_output=True, text=True, timeout=60)
    assert ended.returncode == 0, ended.stderr
    assert json.loads(ended.stdout)["runs_dir"] == str(tmp_path) and ended.stderr == ""


def test_a_stop_ends_by_its_signal_though_the_reader_of_stdout_is_gone():
    # Ctrl-C stops `fmnist train --json | jq .` whole: the JSON of the stop then has nowhere to go.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        ended = subprocess.run(
            [sys.executable, "-c", "from fmnist import stopping; print('{}'); stopping.end_process(130)"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # buffered, as into a pipe
    finally:
        os.close(write_end)
    assert ended.returncode == -signal.SIGINT and "Traceback" not in ended.stderr, ended.stderr
