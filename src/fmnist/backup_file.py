"""The training backup's file: its format and its record, read without Keras (`fmnist runs` reads them too)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts
from fmnist.errors import FmnistError

FORMAT = 1


def run_id(run_dir: Path) -> str | None:
    """What ties a backup to its run: the SHA-256 of the run's config.json, written once when the run began."""
    config = Path(run_dir) / artifacts.CONFIG
    return artifacts.sha256_file(config) if config.is_file() else None


def _damaged(path: Path) -> FmnistError:
    return FmnistError(f"{path} is damaged, so the run cannot continue from it; remove it, and 'fmnist train "
                       f"--resume {path.parent}' trains the run again from its first epoch")


def load(path: Path, only_meta: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The backup's arrays and its record of what they are; a damaged file is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in (["meta"] if only_meta else data.files)}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # cut, not an archive, no record
        raise _damaged(path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
        raise _damaged(path)
    if meta["format"] != FORMAT:  # another version's layout would be misread
        raise FmnistError(f"{path} is a backup of format {meta['format']}, not {FORMAT} (another fmnist version): "
                          "continue the run with that version, or train it again")
    return arrays, meta


def read_meta(path: Path) -> dict[str, Any]:
    """The backup's record alone (epochs done, whether training had stopped, its run), without its arrays."""
    return load(path, only_meta=True)[1]
