"""Shared fixtures: tiny IDX files the tests write, the real dataset, and a CLI runner in a fresh process."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# Keras fixes its backend once per process: the in-process tests use JAX; other backends run in subprocesses.
os.environ.setdefault("KERAS_BACKEND", "jax")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX (magic 0x08 = ubyte, then the number of dimensions)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, gz: bool = True) -> dict[str, str]:
    """Write four tiny IDX files (every class present) and return their SHA-256 by name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        checksums[name] = hashlib.sha256(raw).hexdigest()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return checksums


@pytest.fixture(scope="session", autouse=True)
def compiled_programs_kept(tmp_path_factory):
    """XLA keeps what it compiles for this process's in-process tests, which train the same tiny networks again and
    again: most of a tiny run's seconds went to compiling. The cache is keyed by the exact program, compile options
    and versions, so the code run is the same; subprocesses (the CLI tests) compile as a user's run does."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """Each test gets its own verified-array cache and keras home, so no test sees another's files."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(base / "keras"))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.delenv("FMNIST_DATA_URL", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)  # `fmnist runs` fits a table to it: the tests read every column


@pytest.fixture
def tiny_data(tmp_path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "tiny"
    return folder, write_idx_set(folder)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real dataset's folder; its absence is a failure, not a skip (the setup script installs it)."""
    from fmnist.data import DEBIAN_DIR, keras_cache_dir

    for folder in (os.environ.get("FMNIST_DATA_DIR"), DEBIAN_DIR, keras_cache_dir()):
        if folder and (Path(folder) / "train-images-idx3-ubyte.gz").is_file():
            return Path(folder)
    pytest.fail("the real Fashion-MNIST files are missing: "
                "run 'bash scripts/setup.sh' (installs dataset-fashion-mnist)")


# `python -m fmnist`, with Ctrl-C handled as at a terminal: a test runner started in the background (`cmd &`)
# passes SIGINT on ignored, and Python then leaves it ignored.
AS_AT_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "sys.argv[0] = 'fmnist'; runpy.run_module('fmnist', run_name='__main__')")


def start_server(run_dir: Path, log: Path, start_s: float = 180, options: tuple[str, ...] = ()
                 ) -> tuple[subprocess.Popen, str]:
    """``fmnist serve RUN --port 0 [OPTIONS]`` in a fresh process, on the free port it says it took, once it answers
    /v1/health: the process and its URL.

    Its log goes to ``log``, and anything it prints on stdout beside it, with the suffix .stdout."""
    import re
    import time

    import httpx

    with open(log, "wb") as errors, open(log.with_suffix(".stdout"), "wb") as results:
        process = subprocess.Popen([sys.executable, "-c", AS_AT_A_TERMINAL, "serve", str(run_dir), "--port", "0",
                                    *options],
                                   stdout=results, stderr=errors)
    deadline = time.monotonic() + start_s
    while True:
        # At a line's start: a line a script reads, not a warning (docs/serve.md)
        serving = re.search(r"^serving .* on (http://127\.0\.0\.1:[1-9]\d*)/ \(API docs", log.read_text(), re.M)
        try:
            if serving and httpx.get(f"{serving[1]}/v1/health", timeout=5).status_code == 200:
                return process, serving[1]
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not come up:\n{log.read_text()}")
        time.sleep(0.3)


@pytest.fixture
def refusing_port() -> int:
    """A port of 127.0.0.1 that refuses every connection for the test: bound by it and never listened on, so no other
    process can take it meanwhile (a fixed one, such as the discard port 9, may have a server on some machine)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@contextlib.contextmanager
def uvicorn_in_thread(app, **config):
    """uvicorn serving ``app`` (with ``config``, uvicorn's options) in a thread of this process until the block ends:
    the port. It is given its socket already listening, as `fmnist serve` gives it, so that no other process can take
    the port between its choice and the server's start."""
    import threading
    import time

    import uvicorn

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 120
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
            yield listener.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def refused_before_keras(commands: list[list[str]]) -> str:
    """Run each command line through ``fmnist.cli.main`` in one fresh process; check each failed before any backend
    was imported, and return what they printed on stderr."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from fmnist.cli import main; "
                               f"codes = [main(args) for args in {commands!r}]; "
                               "print(codes, sorted(m for m in ('keras', 'jax', 'tensorflow') if m in sys.modules))"],
        capture_output=True, text=True, timeout=120,
    )
    assert probe.stdout.strip() == f"{[1] * len(commands)} []", probe.stderr
    return probe.stderr


def page_text(path: Path) -> str:
    """A page's HTML as its text runs: without the <wbr> break hints in its tables' paths and run names."""
    return Path(path).read_text().replace("<wbr>", "")


def compare_page(run_dirs: list, output: Path | None, runs_dir: Path = Path("runs")) -> Path:
    """The page `fmnist runs compare` writes of ``run_dirs`` (runs or --seeds groups)."""
    from fmnist.compare import compare_command

    return compare_command(run_dirs, output, runs_dir)["comparison"]


def write_backup_record(run_dir: Path, epochs_done: int, **meta) -> None:
    """A run's backup.npz with its record alone (what `fmnist runs` and the resume's checks read), of this run."""
    import json

    from fmnist import artifacts, backup_file

    record = {"format": backup_file.FORMAT, "epochs_done": epochs_done, "run": backup_file.run_id(run_dir), **meta}
    np.savez(Path(run_dir) / artifacts.BACKUP, meta=np.array(json.dumps(record)))


# Run as a user other than a folder's owner would: root, as tests may run, writes anywhere unless it drops that power.
AS_ANOTHER_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600,
            as_another_user: bool = False):
    """Run ``python -m fmnist ARGS`` in a fresh process (its own Keras backend) and return the result;
    ``as_another_user``: one that may not write in a folder made read-only (:data:`AS_ANOTHER_USER`)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*(AS_ANOTHER_USER if as_another_user else ()), sys.executable, "-m", "fmnist", *args],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def _train_once(base: Path, dataset_dir: Path, checksums: dict[str, str] | None, **settings) -> Path:
    """Train one run under ``base`` with its own verified-array cache; return its directory."""
    from fmnist.data import CHECKSUMS, load_dataset
    from fmnist.settings import TrainSettings
    from fmnist.train import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FMNIST_CACHE_DIR", str(base / "cache"))
        dataset = load_dataset(dataset_dir, checksums=checksums or CHECKSUMS)
        return train(TrainSettings(**settings), "jax", runs_dir=base / "runs", dataset=dataset).run_dir


def tiny_train(runs_dir: Path, tiny_data: tuple[Path, dict[str, str]], extra_callbacks: tuple = (), **overrides):
    """Train a tiny run (two epochs of a 16-8 network) into ``runs_dir``, with ``extra_callbacks`` after fmnist's;
    return train's result."""
    from fmnist.data import load_dataset
    from fmnist.settings import TrainSettings
    from fmnist.train import train

    folder, sums = tiny_data
    settings = TrainSettings(**{"hidden_sizes": (16, 8), "epochs": 2, "batch_size": 16, "name": "tiny", **overrides})
    return train(settings, "jax", runs_dir=runs_dir, dataset=load_dataset(folder, checksums=sums),
                 extra_callbacks=list(extra_callbacks))


@pytest.fixture
def full_disk_for(monkeypatch):
    """``full_disk_for(name)``: from then on, each JSON file of that name is written as onto a full disk (/dev/full
    answers every write so)."""
    from fmnist import artifacts

    write_json = artifacts.write_json

    def onto_full_disk(tmp):
        with open("/dev/full", "w") as full:
            full.write("{}")

    def full_disk_for(name: str) -> None:
        monkeypatch.setattr(artifacts, "write_json", lambda path, value: artifacts.write_atomic(path, onto_full_disk)
                            if Path(path).name == name else write_json(path, value))
    return full_disk_for


@contextlib.contextmanager
def module_data(tmp_path_factory, **sizes):
    """Tiny IDX files and a private verified-array cache, for a fixture that trains once per module."""
    base = tmp_path_factory.mktemp("module")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMNIST_CACHE_DIR", str(base / "cache"))
        yield base, (base / "tiny", write_idx_set(base / "tiny", **sizes))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A run trained for two epochs on tiny random data: a real model file, made in seconds, shared by the session."""
    base = tmp_path_factory.mktemp("tiny_run")
    checksums = write_idx_set(base / "data")
    return _train_once(base, base / "data", checksums, hidden_sizes=(16, 8), epochs=2, batch_size=16, name="tiny")


SERVE_BODY_LIMIT = 1024 * 1024  # the test app's upload limit: small, so that a test reaches it quickly


@pytest.fixture(scope="module")
def client(tiny_run_dir):
    """The app on the tiny run (upload limit SERVE_BODY_LIMIT), one per test module."""
    from fastapi.testclient import TestClient

    from fmnist.serve import create_app

    # raise_server_exceptions: a 5xx would fail the test with its traceback instead of passing as a status.
    app = create_app(tiny_run_dir, max_body_bytes=SERVE_BODY_LIMIT)
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


def assert_serving(client) -> None:
    """A good request still gets a good answer."""
    from samples import encode, garment

    answer = client.post("/v1/predict", files={"files": ("ok.png", encode(garment()), "image/png")})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1


class LeavingRequest:
    """A stand-in request whose client leaves after the first check; the test sets its ``app.state``."""

    def __init__(self) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace())
        self.checks = 0

    async def is_disconnected(self) -> bool:
        self.checks += 1
        return self.checks > 1


@pytest.fixture(scope="session")
def real_run_dir(tmp_path_factory, real_data_dir) -> Path:
    """A run trained briefly on real data (about 83% test accuracy), for tests that need sensible predictions."""
    base = tmp_path_factory.mktemp("real_run")
    return _train_once(base, real_data_dir, None, hidden_sizes=(256, 128), epochs=5, limit=12000, name="real")


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """A runs directory with one real finished run beside half-written, damaged and old-style ones (read only)."""
    with module_data(tmp_path_factory) as (base, tiny_data):
        yield make_mixed_runs(base / "runs", tiny_data)


def make_mixed_runs(runs_dir, tiny_data):
    import json

    from fmnist import artifacts, backup_file, runs

    finished = tiny_train(runs_dir, tiny_data).run_dir
    config = json.loads((finished / artifacts.CONFIG).read_text())

    running = runs.create_run_dir(runs_dir, "running")
    artifacts.write_json(running / artifacts.CONFIG, config)
    runs.set_status(running, "running")
    # Killed mid-write of epoch 2's row, after writing epoch 1's row but before its backup: resumed after epoch 0.
    (running / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n1,1.2\n2,1.")
    np.savez(running / artifacts.BACKUP, meta=np.array(json.dumps({"format": backup_file.FORMAT, "epochs_done": 1})))

    interrupted = runs.create_run_dir(runs_dir, "interrupted")
    artifacts.write_json(interrupted / artifacts.CONFIG, config)
    runs.set_status(interrupted, "interrupted")
    (interrupted / artifacts.HISTORY).write_text("epoch,loss\n0,1.5\n")  # and no backup: resumed from the start

    damaged = runs.create_run_dir(runs_dir, "damaged")
    (damaged / artifacts.CONFIG).write_text("{\"settings\": ")
    (damaged / artifacts.STATUS).write_text("[1, 2]")
    (damaged / artifacts.METRICS).write_text("\"not an object\"")
    (damaged / artifacts.HISTORY).write_bytes(b"epoch,loss\n0,\xff\n")  # not text

    old = runs_dir / "old-style"  # an older layout: a config without settings or time, no status file
    old.mkdir()
    (old / artifacts.CONFIG).write_text(json.dumps({"backend": "tensorflow", "settings": "512,256"}))

    mistyped = runs.create_run_dir(runs_dir, "mistyped")  # valid JSON, values of the wrong types
    artifacts.write_json(mistyped / artifacts.CONFIG, {"settings": {"learning_rate": "fast", "hidden_sizes": "wide"}})
    artifacts.write_json(mistyped / artifacts.STATUS, {"state": "finished", "epochs": "three", "train_seconds": [1]})

    empty = runs.create_run_dir(runs_dir, "empty")  # made, then the process died before writing anything
    # Files that are there but cannot be read (as root, no permission bit stops a read: a read of
    # /proc/self/mem at offset 0 fails with an I/O error instead).
    unreadable = runs.create_run_dir(runs_dir, "unreadable")
    for name in (artifacts.CONFIG, artifacts.STATUS, artifacts.HISTORY):
        (unreadable / name).symlink_to("/proc/self/mem")
    grouped = tiny_train(runs_dir / "study", tiny_data, dropout=0.1, name="member").run_dir  # a group, one level down
    (runs_dir / "notes.txt").write_text("not a run")
    return {"dir": runs_dir, "finished": finished, "running": running, "interrupted": interrupted,
            "damaged": damaged, "old": old, "mistyped": mistyped, "empty": empty, "unreadable": unreadable,
            "grouped": grouped}
