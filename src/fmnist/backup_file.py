"""The training backup's file: its format and its record, read without Keras (`fmnist runs` reads them too)."""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from fmnist import artifacts, runs
from fmnist.errors import FmnistError

FORMAT = 1


def run_id(run_dir: Path) -> str | None:
    """What ties a backup to its run: the SHA-256 of what the run's config.json, written once when the run began,
    holds as JSON reads it (the file reformatted, or its keys reordered, is the same run)."""
    config = Path(run_dir) / artifacts.CONFIG
    if not config.is_file():
        return None
    try:
        record = artifacts.read_json(config)
    except FmnistError:  # damaged: its bytes, which no backup of this run can hold
        return artifacts.sha256_file(config)
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def start_over(run_dir: Path, remove: str = f"{artifacts.BACKUP} and {artifacts.HISTORY}") -> str:
    """How to train a stopped run again from its first epoch: what to remove (the backup and the history go together:
    a history of finished epochs without its backup is refused), then its resume, whole."""
    return f"remove {remove}, and '{runs.resume_command(run_dir)}' trains the run again from its first epoch"


def damaged(path: Path) -> FmnistError:
    return FmnistError(f"{path} is damaged, so the run cannot continue from it; {start_over(path.parent)}")


def load(path: Path, only_meta: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backup's arrays and its record of what they are; a damaged file is one clear error."""
    import numpy as np  # here: `fmnist runs` imports this module, and reads a backup only for a stopped run

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in (["meta"] if only_meta else data.files)}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # cut, not an archive, no record
        raise damaged(path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
        raise damaged(path)
    if meta["format"] != FORMAT:  # another version's layout would be misread
        raise FmnistError(f"{path} is a backup of format {meta['format']}, not {FORMAT} (another fmnist version): "
                          "continue the run with that version, or train it again")
    return arrays, meta


def read_meta(path: Path) -> dict[str, Any]:
    """The backup's record alone (epochs done, whether training had stopped, its run), without its arrays."""
    return load(path, only_meta=True)[1]


def epochs_done(run_dir: Path) -> int:
    """The finished epochs a run's resume continues from: its backup's (none without one); a backup or history it cannot
    continue from is one error saying what to do."""
    # That error's cases: a backup damaged, another run's, or gone after epochs were finished, or a history lacking some
    # of its epochs.
    meta = checked_meta(run_dir)
    return 0 if meta is None else meta["epochs_done"]


def checked_meta(run_dir: Path) -> dict[str, Any] | None:
    """A run's backup record as its resume checks it (its run's, with a count of epochs done, each in history.csv);
    None without a backup. Else one error saying what to do."""
    backup = Path(run_dir) / artifacts.BACKUP
    if not backup.is_file():
        finished = _finished_rows(run_dir)
        # Each epoch's backup is written just after its row: a kill between them leaves one row without a backup,
        # never two. Trained again from the first epoch without a word, the finished ones would be lost unsaid.
        if finished >= 2:
            raise FmnistError(f"{backup} is missing, though {artifacts.HISTORY} holds {finished} finished epochs: "
                              "restore it from a copy to continue after them; else "
                              f"{start_over(run_dir, artifacts.HISTORY)}")
        return None
    meta, this_run = read_meta(backup), run_id(run_dir)
    # A backup from before backups named their run is taken on trust; one from before 6 December named the file's
    # bytes.
    recorded, config = meta.get("run", this_run), Path(run_dir) / artifacts.CONFIG
    if recorded != this_run and not (config.is_file() and recorded == artifacts.sha256_file(config)):
        raise FmnistError(f"{backup} was written by another run, or before {artifacts.CONFIG} was changed: if it "
                          f"was, put {artifacts.CONFIG} back as it was; else {start_over(run_dir)}")
    epochs = meta.get("epochs_done")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise damaged(backup)
    kept, damaged_lines = finished_history(run_dir, epochs)
    rows = max(len(kept) - 1, 0)
    if rows < epochs:  # cut short or damaged by hand: the curves would have a gap
        why = f" (its line {damaged_lines[0]} is damaged)" if damaged_lines else ""
        raise FmnistError(f"{Path(run_dir) / artifacts.HISTORY} holds {rows} of the {epochs} epochs in {backup}{why}; "
                          f"restore it, or {start_over(run_dir)}")
    return meta


def finished_history(run_dir: Path, epochs: int) -> tuple[list[str], list[int]]:
    """history.csv's header and the first whole row of each of the backup's ``epochs`` finished epochs, in order; and
    the numbers of the lines that are not rows (damaged by hand), left out."""
    # A kill can land after an epoch's row was appended but before its backup was written, or halfway through a row;
    # the epoch is then trained again and must not appear twice.
    history = Path(run_dir) / artifacts.HISTORY
    try:
        lines = artifacts.history_lines(run_dir)
    except (FileNotFoundError, ValueError):  # none, or not text
        lines = []
    except OSError as exc:  # a resume needs it whole
        raise FmnistError(f"cannot read {history} ({exc.strerror}); restore it, or {start_over(run_dir)}") from None
    if not lines:
        return [], []
    width, rows, damaged_lines = len(next(csv.reader([lines[0]]))), {}, []
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]), [])
        try:
            epoch, _ = int(cells[0]), [float(cell) for cell in cells[1:]]
            whole = len(cells) == width
        except (ValueError, IndexError):
            whole = False
        if not whole:
            damaged_lines.append(number)
        elif 0 <= epoch < epochs:
            rows.setdefault(epoch, line)
    return [lines[0], *(rows[epoch] for epoch in sorted(rows))], damaged_lines


def _finished_rows(run_dir: Path) -> int:
    """The whole rows of a run's history.csv; 0 where there is none to read."""
    try:  # rows damaged by hand are rows still: counted, so that the missing backup is said
        return max(0, len(artifacts.history_lines(run_dir, errors="replace")) - 1)  # less its header
    except OSError:
        return 0


def training_over(run_dir: Path, planned_epochs: Any) -> bool:
    """Whether a stopped run's backup holds its whole training (stopped early, or all ``planned_epochs``): its resume
    then trains no more, only saves and scores the model. False where the backup is missing or damaged."""
    try:
        meta = read_meta(Path(run_dir) / artifacts.BACKUP)
    except FmnistError:
        return False
    return holds_whole_training(meta, planned_epochs)


def holds_whole_training(meta: dict[str, Any], planned_epochs: Any) -> bool:
    """:func:`training_over` for a backup record already read."""
    done = meta.get("epochs_done")
    return meta.get("stopped") is True or (
        isinstance(done, int) and isinstance(planned_epochs, int) and done >= planned_epochs > 0)
