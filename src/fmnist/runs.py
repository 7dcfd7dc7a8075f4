"""Run directories: created exclusively, never shared between runs, with a status file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fmnist import artifacts
from fmnist.errors import FmnistError


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """Make ``<runs_dir>/<UTC time>-<name>[-k]/`` exclusively: no two runs ever share a directory."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FmnistError(f"cannot create runs directory {runs_dir}: {exc.strerror}") from None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        candidate = runs_dir / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FmnistError(f"could not create a fresh run directory in {runs_dir}")


def require_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / artifacts.CONFIG).is_file():
        raise FmnistError(f"{run_dir} is not a run directory (no {artifacts.CONFIG}); give a directory made by 'fmnist train'")
    return run_dir


def set_status(run_dir: Path, state: str, **extra: Any) -> None:
    artifacts.write_json(Path(run_dir) / artifacts.STATUS, {"state": state, "updated": utc_now(), **extra})
