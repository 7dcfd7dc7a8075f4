"""Names of the files fmnist writes (a run directory's, and the dataset cache's manifest), the atomic, checksummed
way they are written, and how a run's history is read back."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from fmnist.errors import DamagedFile, FmnistError, WriteRefused

CONFIG = "config.json"
SPLIT = "split.npz"
HISTORY = "history.csv"
HISTORY_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")  # in every epoch's row, among others
MODEL = "model.keras"
CHECKSUM_SUFFIX = ".sha256"  # beside any .keras file fmnist loads: its SHA-256, as sha256sum writes it
MODEL_SHA256 = MODEL + CHECKSUM_SUFFIX
METRICS = "metrics.json"
PREDICTIONS = "test_predictions.npz"
PREDICTION_ARRAYS = ("y_true", "probabilities", "mistake_indices", "mistake_images")  # what PREDICTIONS holds
# ... and its occlusion maps (runs evaluated before fmnist drew them lack these: `fmnist evaluate RUN` adds them)
EXPLANATION_ARRAYS = ("example_indices", "example_images", "example_maps", "mistake_maps")
CLASSIFICATION_REPORT = "classification_report.txt"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"
MISCLASSIFIED_PNG = "misclassified.png"
EVIDENCE_CLASSES_PNG = "evidence_classes.png"  # occlusion maps: what in each class's clearest test image counts
EVIDENCE_MISTAKES_PNG = "evidence_mistakes.png"  # ... and in the most confident mistakes, for both classes
REPORT_HTML = "report.html"
STATUS = "status.json"
EXPORTS_DIR = "exports"  # one folder per format, each with its file(s) and EXPORT_INFO
EXPORT_INFO = "export.json"  # checksum and parity check of one export
EXPORT_FILES = {"onnx": "model.onnx", "saved_model": "saved_model", "litert": "model.tflite"}
TEMPORARY = ".tmp"  # in the name of write_atomic's temporary files, before the suffix: .metrics.x1y2.tmp.json
CALIBRATION = "calibration.json"  # the temperature folded into the model, and its fit
RELIABILITY_PNG = "reliability.png"
BACKUP = "backup.npz"  # the training state after the last finished epoch, for --resume
TEACHER_ANSWERS = "teacher_answers.npz"  # a distilled run's teacher's answers, so that --resume need not ask again
RESUME_FILES = (BACKUP, TEACHER_ANSWERS)  # kept only until the run's training finishes or diverges
LOCK = ".lock"  # held while a process trains the run
REPORT_LOCK = ".report.lock"  # held while report.html and its pictures are drawn
SEED_SUMMARY = "summary.json"  # a --seeds group's statistics over its runs
COMPARISON_HTML = "compare.html"  # `fmnist runs compare`'s page, beside the runs unless --output says
SEED_GROUP = "group.json"  # a --seeds group's settings, backend and seed count, so a killed group can be resumed
TUNE_JOURNAL = "tune.journal"  # the default Optuna storage, in the runs directory
TUNE_REPORT = "tune_report.html"
DATA_MANIFEST = "manifest.json"  # in the dataset's cache: the source files the cached arrays were verified from
PNG_SOFTWARE = "fmnist"  # the Software field of every PNG fmnist draws, as the title of every page begins


def written_by_fmnist(path: Path) -> bool:
    """Whether the file at ``path`` is, by its content, one fmnist writes where a user says (a page, a picture, a
    benchmark's JSON; never an array), which a later command may replace."""
    # Never an array: the inputs predict saved are the n x 784 float32 arrays that users make for an exported model too.
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".html":
            with open(path, "rb") as page:
                return b"<title>fmnist" in page.read(8192)  # near the top of the page's head
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as picture:
                return str(picture.info.get("Software", "")).startswith(PNG_SOFTWARE)
        if suffix == ".json":
            return {"gemm_gflops", "results", "machine"} <= set(read_json(path))
    except Exception:  # unreadable, empty, a picture too large to open: any file it cannot make out is not fmnist's
        return False
    return False


def sha256_file(path: Path, copy_to: Path | None = None) -> str:
    """The file's SHA-256; with ``copy_to``, the file is copied there as it is read, so the copy is what was hashed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, open(copy_to, "wb") if copy_to else contextlib.nullcontext() as copy:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            if copy:
                copy.write(chunk)
    return digest.hexdigest()


def _file_mode() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def remove_temporaries(folder: Path, older_than_s: float | None = None) -> None:
    """Delete what a killed process left of ``write_atomic``'s temporary files: all, while nothing writes there, else
    those older than ``older_than_s`` (a younger one may be another process's, being written now)."""
    for leftover in Path(folder).glob(f".*{TEMPORARY}*"):
        if older_than_s is None:
            leftover.unlink()
        else:
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
                if time.time() - leftover.stat().st_mtime > older_than_s:
                    leftover.unlink()


def remove_resume_files(run_dir: Path) -> None:
    """Delete what only a resume of the run would need, once its training has finished (or diverged: no resume)."""
    for name in RESUME_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)


def json_number(value: Any) -> float | None:
    """A finite number read from JSON as a float; anything else (a bool, text, null, NaN, Infinity, an integer past
    float's range) as None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def temporary_beside(path: Path) -> Path:
    """A new empty file beside ``path``, named as one of ours that a killed writer left (see remove_temporaries)."""
    # The temporary name keeps the suffix, since some writers (Keras) insist on it, and only the stem's start: a
    # name near the system's limit of 255 bytes is allowed, while one 14 bytes longer would not be.
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:50]}.",
                                        suffix=f"{TEMPORARY}{path.suffix}")
    except OSError as exc:
        raise WriteRefused(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    return Path(tmp_name)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place: a crash mid-write leaves
    the old file (or none), never a half-written one."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        try:
            write(tmp)
            _fsync(tmp)  # on disk before the rename, or a power cut could leave the new name on an empty file
        except OSError as exc:  # a full disk or quota: said of the file the user knows, as the rename's is
            if not exc.strerror:
                raise
            raise WriteRefused(f"cannot write {path}: {exc.strerror}") from None
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it private (0600); a run's files are as readable as any other
        try:
            os.replace(tmp, path)
        except OSError as exc:  # named by the file the user knows, not the temporary one
            raise WriteRefused(f"cannot write {path}: {exc.strerror}") from None
        fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):  # a folder made read-only meanwhile: its refusal is said, not this one's
            tmp.unlink(missing_ok=True)


def fsync_tree(path: Path) -> None:
    """Flush every file and folder under ``path`` to disk, before a finished folder is renamed into place."""
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync(Path(folder) / name)
        fsync_folder(Path(folder))


def fsync_folder(path: Path) -> None:
    """Flush a folder's entries (a file renamed into it, say) to disk, where the filesystem can."""
    try:
        _fsync(path)
    except OSError:  # some filesystems (FUSE, SMB) cannot sync a folder; the rename itself is done
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """One of our JSON files, each an object: anything else in it is damage, named with the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FmnistError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path} is not valid JSON ({exc})") from None
    except (ValueError, RecursionError):  # what Python's parser refuses of valid JSON
        raise DamagedFile(f"{path} is not valid JSON as fmnist writes it (a number of 4,300 digits or more, or "
                          "arrays nested too deep)") from None
    except OSError as exc:  # unreadable, or a folder
        raise FmnistError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} is damaged: it holds a JSON {type(data).__name__}, not the object fmnist wrote")
    return data


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """The per-epoch history as columns of floats."""
    path = Path(run_dir) / HISTORY
    line = ""  # where a row read whole is not one of numbers: csv's own errors come before its count of lines
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            # The header's columns even before the first epoch's row, so that a header of the wrong columns shows
            # (an empty file, a run stopped in its first epoch, has none).
            columns = reader.fieldnames or ()
            history: dict[str, list[float]] = {key: [] for key in columns}
            for row in reader:
                line = f" at line {reader.line_num}"
                if None in row or None in row.values():
                    raise ValueError("not as many cells as the header has columns")
                for key in history:  # a column named twice is one (its last cell), as the row holds it
                    history[key].append(float(row[key]))
                line = ""
        return history
    except (ValueError, csv.Error) as exc:  # not text, not a number, a huge cell
        raise DamagedFile(f"{path} is damaged{line} ({exc})") from None


def missing_history_columns(history: dict[str, list[float]]) -> list[str]:
    """The columns every epoch's row has that a history read from history.csv lacks (edited out of shape); none for an
    empty one, a run stopped in its first epoch."""
    return [column for column in HISTORY_COLUMNS if history and column not in history]


def history_lines(run_dir: Path, errors: str = "strict") -> list[str]:
    """A run's history.csv as its whole lines, header first, each with its line end (CSVLogger's \\r\\n). Unreadable is
    an OSError; not text, with ``errors`` "strict", a ValueError."""
    # Whole lines alone: a kill can cut the last row short, and that epoch is not finished.
    with open(Path(run_dir) / HISTORY, encoding="utf-8", errors=errors, newline="") as f:
        return [line for line in f.read().splitlines(keepends=True) if line.endswith("\n")]


def read_split(run_dir: Path, part: str) -> Any:
    """The image indices of ``part`` ("train" or "validation") in the run's split.npz, as NumPy reads them; a file
    that cannot be read is an OSError, one damaged (empty, cut short, not an archive) a DamagedFile."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(run_dir) / SPLIT
    try:
        with np.load(path, allow_pickle=False) as split:
            return split[part]
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {exc})") from None


def best_epoch(history: dict[str, list[float]]) -> int | None:
    """The epoch (from 1) of the lowest val_loss, the one early stopping keeps; None before the first epoch."""
    # NaN is no loss: early stopping never keeps such an epoch. Plain Python: `fmnist runs` does without NumPy.
    finite = [(loss, epoch) for epoch, loss in enumerate(history.get("val_loss") or [], 1) if math.isfinite(loss)]
    return min(finite)[1] if finite else None


def scheduled(config: dict[str, Any]) -> bool:
    """Whether the run followed a fixed schedule (cosine), keeping its last epoch, not the best on a plateau."""
    settings = config.get("settings")  # a config.json edited by hand may hold anything there
    return isinstance(settings, dict) and settings.get("schedule") == "cosine"


def kept_epoch(history: dict[str, list[float]], config: dict[str, Any]) -> int | None:
    """The epoch (from 1) whose weights the run's model has, by its history and config: the best (restored by early
    stopping) or, on a schedule, the last; None before any."""
    return (len(history.get("loss", [])) or None) if scheduled(config) else best_epoch(history)


def kept_because(on_schedule: bool) -> str:
    """Why a run's model has its kept epoch's weights (``on_schedule``: see :func:`scheduled`), in words, as the
    report and the curves say it."""
    return "the last, as the schedule fixes" if on_schedule else "the lowest val_loss"
