"""Names of the files fmnist writes (a run directory's, and the dataset cache's manifest), the atomic, checksummed
way they are written, and how a run's history is read back."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from fmnist.errors import FmnistError, first_line

CONFIG = "config.json"
SPLIT = "split.npz"
HISTORY = "history.csv"
HISTORY_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")  # in every epoch's row, among others
MODEL = "model.keras"
MODEL_SHA256 = "model.keras.sha256"
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
LOCK = ".lock"  # held while a process trains the run
SEED_SUMMARY = "summary.json"  # a --seeds group's statistics over its runs
COMPARISON_HTML = "compare.html"  # `fmnist runs compare`'s page, in the runs directory unless --output says
SEED_GROUP = "group.json"  # a --seeds group's settings, backend and seed count, so a killed group can be resumed
TUNE_JOURNAL = "tune.journal"  # the default Optuna storage, in the runs directory
TUNE_REPORT = "tune_report.html"
DATA_MANIFEST = "manifest.json"  # in the dataset's cache: the source files the cached arrays were verified from


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_mode() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def remove_temporaries(folder: Path) -> None:
    """Delete what a killed process left of ``write_atomic``'s temporary files; only while nothing writes there."""
    for leftover in Path(folder).glob(f".*{TEMPORARY}*"):
        leftover.unlink()


def json_number(value: Any) -> float | None:
    """A number read from JSON as a float; anything else (a bool, text, null) as None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the old file (or none), never a half-written one.
    The temporary name keeps the suffix, since some writers (Keras) insist on it.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{TEMPORARY}{path.suffix}")
    except OSError as exc:
        raise FmnistError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _fsync(tmp)  # on disk before the rename, or a power cut could leave the new name on an empty file
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it private (0600); a run's files are as readable as any other
        try:
            os.replace(tmp, path)
        except OSError as exc:  # named by the file the user knows, not the temporary one
            raise FmnistError(f"cannot write {path}: {exc.strerror}") from None
        try:
            _fsync(path.parent)
        except OSError:  # some filesystems (FUSE, SMB) cannot sync a folder; the rename itself is done
            pass
    finally:
        tmp.unlink(missing_ok=True)


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
        raise FmnistError(f"{path} is not valid JSON ({exc})") from None
    except OSError as exc:  # unreadable, or a folder
        raise FmnistError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise FmnistError(f"{path} is damaged: it holds a JSON {type(data).__name__}, not the object fmnist wrote")
    return data


def save_model(model: Any, run_dir: Path) -> str:
    """Write ``model.keras`` atomically, then its SHA-256 beside it; return the checksum."""
    path = Path(run_dir) / MODEL
    write_atomic(path, lambda tmp: model.save(tmp))
    checksum = sha256_file(path)
    write_text(Path(run_dir) / MODEL_SHA256, f"{checksum}  {MODEL}\n")
    return checksum


def refuse_seed_group(path: Path) -> None:
    """A group made by ``--seeds``, given where one run is wanted, is refused, naming one of its runs."""
    if (Path(path) / SEED_GROUP).is_file():
        members = sorted(member.name for member in Path(path).iterdir() if (member / CONFIG).is_file())
        example = f", such as {Path(path) / members[0]}" if members else ""
        raise FmnistError(f"{path} is a group of {len(members)} runs made by 'fmnist train --seeds', not one run: "
                          f"give one of its runs{example}")


def verified_model_path(source: Path) -> tuple[Path, str]:
    """Resolve a run directory or ``.keras`` file to a model whose recorded SHA-256 matches."""
    source = Path(source)
    refuse_seed_group(source)
    model_path = source / MODEL if source.is_dir() else source
    status = source / STATUS
    resumable = ("running", "interrupted", "failed")  # killed, stopped, or failed mid-training
    if not model_path.is_file() and status.is_file() and read_json(status).get("state") in resumable:
        from fmnist.runs import WAIT_FOR_TRAINING, being_trained, how_to_finish  # runs imports this module

        if being_trained(source):
            raise FmnistError(f"{source} has no model yet: it is being trained right now; {WAIT_FOR_TRAINING}")
        raise FmnistError(f"{source} has no model yet: its training has not finished; {how_to_finish(source)}")
    if not model_path.is_file() and (source / CONFIG).is_file():  # a run whose training finished, its model gone
        raise FmnistError(f"{source} has lost its {MODEL}: restore it from a copy, or train a new run with its "
                          "settings")
    if not model_path.is_file():
        raise FmnistError(f"no model at {model_path}: give a run directory made by 'fmnist train' or its {MODEL}")
    if model_path.suffix != ".keras":
        raise FmnistError(f"{model_path} is not a .keras model; only models written by 'fmnist train' are loaded")
    checksum_path = model_path.with_name(model_path.name + ".sha256")
    if not checksum_path.is_file():
        raise FmnistError(
            f"{checksum_path} is missing: only models written by 'fmnist train' (with their checksum) are loaded"
        )
    recorded = checksum_path.read_bytes().split()
    expected = recorded[0].decode("ascii") if recorded and re.fullmatch(rb"[0-9a-f]{64}", recorded[0]) else None
    if expected is None:
        raise FmnistError(f"{checksum_path} is damaged: it holds no SHA-256; restore it from the run, or retrain")
    actual = sha256_file(model_path)
    if actual != expected:
        raise FmnistError(
            f"{model_path} does not match its recorded SHA-256 (expected {expected}, got {actual}); "
            "the file was changed or damaged: retrain, or restore it from its run"
        )
    return model_path, actual


def load_model(source: Path) -> tuple[Any, str]:
    """Load a checksum-verified Fashion-MNIST model (never with ``safe_mode=False``); return it and its SHA-256."""
    model_path, checksum = verified_model_path(source)
    import keras

    from fmnist.data import NUM_CLASSES, NUM_FEATURES

    damaged = "the file is damaged or from another tool; retrain, or restore it from a copy"
    if not zipfile.is_zipfile(model_path):  # Keras would say "File not found" of a file it has just opened
        raise FmnistError(f"{model_path} is not a Keras model (a .keras file is a zip archive): {damaged}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive; all mean the same to the user.
        raise FmnistError(f"Keras cannot load {model_path} ({first_line(exc)}): {damaged} "
                          "(--debug shows Keras' error)") from exc
    features, classes = model.input_shape[-1], model.output_shape[-1]
    if (features, classes) != (NUM_FEATURES, NUM_CLASSES):
        raise FmnistError(f"{source} maps {features} features to {classes} classes, "
                          f"not {NUM_FEATURES} pixels to {NUM_CLASSES} classes")
    import numpy as np

    if not all(np.isfinite(keras.ops.convert_to_numpy(weight)).all() for weight in model.weights):
        # Its answers would all be NaN, each served as a confident one.
        raise FmnistError(f"{source} holds NaN or infinite weights: it cannot classify anything; retrain it")
    return model, checksum


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """The per-epoch history as columns of floats."""
    path = Path(run_dir) / HISTORY
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}
    except (ValueError, TypeError, KeyError) as exc:  # not text, a cell not a number, a row cut short
        raise FmnistError(f"{path} is damaged ({exc})") from None


def best_epoch(history: dict[str, list[float]]) -> int | None:
    """The epoch (from 1) of the lowest val_loss, the one early stopping keeps; None before the first epoch."""
    import numpy as np

    losses = history.get("val_loss") or []
    return int(np.argmin(losses)) + 1 if losses else None
