"""A run's model file: saved with its SHA-256 beside it, loaded only when that checksum matches."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from fmnist import artifacts, run_locks, run_lookup, run_settings, runs
from fmnist.errors import DamagedFile, FmnistError, first_line, warn_once
from fmnist.facts import NUM_CLASSES, NUM_FEATURES

log = logging.getLogger(__name__)

# What Keras reads of a .keras archive that fmnist wrote (its layers keep no assets), and the most each may unpack to
# (the spec's model's weights: 6.7 MB).
ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
MAX_MEMBER_BYTES = 1 << 30
DAMAGED = "the file is damaged or from another tool; restore it from a copy, or train a new run"


# Every initializer of a model loaded for its saved weights: drawing random ones, only to replace them, compiled a
# program per layer shape on JAX.
ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def save_model(model: Any, run_dir: Path) -> str:
    """Write ``model.keras`` atomically, then its SHA-256 beside it; return the checksum."""
    path = Path(run_dir) / artifacts.MODEL
    artifacts.write_atomic(path, lambda tmp: model.save(tmp))
    checksum = artifacts.sha256_file(path)
    artifacts.write_text(Path(run_dir) / artifacts.MODEL_SHA256, f"{checksum}  {artifacts.MODEL}\n")
    return checksum


def verified_model_path(source: Path, copy_to: Path | None = None) -> tuple[Path, str]:
    """Resolve a run directory or ``.keras`` file to a model whose recorded SHA-256 matches; with ``copy_to``, copy
    the file there as it is hashed, so that what is loaded from the copy is what was checked."""
    model_path, expected = recorded_model_path(source)
    actual = artifacts.sha256_file(model_path, copy_to)
    if actual != expected:
        raise FmnistError(
            f"{model_path} does not match its recorded SHA-256 (expected {expected}, got {actual}); "
            "the file was changed or damaged: restore it from a copy, or train a new run"
        )
    if not zipfile.is_zipfile(copy_to or model_path):  # said before Keras starts; Keras would say "File not found"
        raise FmnistError(f"{model_path} is not a Keras model (a .keras file is a zip archive): {DAMAGED}")
    return model_path, actual


def recorded_model_path(source: Path) -> tuple[Path, str]:
    """A run directory's or ``.keras`` file's model and the SHA-256 recorded beside it, each checked to be there
    (not yet the model against it: that reads the whole file)."""
    source = Path(source)
    runs.refuse_seed_group(source)
    model_path = source / artifacts.MODEL if source.is_dir() else source
    checksum_path = model_path.with_name(model_path.name + artifacts.CHECKSUM_SUFFIX)
    status = source / artifacts.STATUS
    # Its checksum follows the model a moment later: a kill between them left an unfinished run, as one before both.
    whole = model_path.is_file() and checksum_path.is_file()
    if not whole and status.is_file() and artifacts.read_json(status).get("state") in runs.RESUMABLE:
        missing = "no model" if not model_path.is_file() else "no checksummed model"
        if run_locks.being_trained(source):
            raise FmnistError(f"{source} has {missing} yet: it is being trained right now; "
                              f"{run_locks.WAIT_FOR_TRAINING}")
        raise FmnistError(f"{source} has {missing} yet: its training has not finished; {runs.how_to_finish(source)}")
    if not model_path.is_file() and (source / artifacts.CONFIG).is_file():  # its training finished, its model gone
        raise FmnistError(f"{source} has lost its {artifacts.MODEL}: restore it from a copy, or train a new run with "
                          "its settings")
    if not model_path.is_file():
        raise FmnistError(f"no model at {model_path}: give a run directory made by 'fmnist train' or its "
                          f"{artifacts.MODEL}")
    if model_path.suffix != ".keras":
        raise FmnistError(f"{model_path} is not a .keras model; only models written by 'fmnist train' are loaded")
    if not checksum_path.is_file():
        if run_locks.being_trained(model_path.parent):  # its checksum comes a moment after it
            raise FmnistError(f"{source} has no checksummed model yet: it is being trained right now; "
                              f"{run_locks.WAIT_FOR_TRAINING}")
        raise FmnistError(
            f"{checksum_path} is missing: only models written by 'fmnist train' (with their checksum) are loaded"
        )
    expected = recorded_sha256(checksum_path)
    if expected is None:
        raise FmnistError(f"{checksum_path} is damaged: it holds no SHA-256; restore it from a copy, or train a new "
                          "run")
    return model_path, expected


def recorded_sha256(checksum_path: Path) -> str | None:
    """The SHA-256 a model's checksum file holds (``sha256sum``'s form), or None where it holds none."""
    recorded = checksum_path.read_bytes().split()
    return recorded[0].decode("ascii") if recorded and re.fullmatch(rb"[0-9a-f]{64}", recorded[0]) else None


def plainly_damaged(run_dir: Path) -> list[str]:
    """Which of a run's model and checksum files are damaged, as far as a glance tells (the checksum's form, the
    archive's end) without reading the whole model, as loading it does."""
    model_path = Path(run_dir) / artifacts.MODEL
    checksum_path = model_path.with_name(model_path.name + artifacts.CHECKSUM_SUFFIX)
    damaged = []
    try:
        if model_path.is_file():
            model_path.open("rb").close()  # is_zipfile calls a file it cannot read no archive
            if not zipfile.is_zipfile(model_path):
                damaged.append(model_path.name)
        if checksum_path.is_file() and recorded_sha256(checksum_path) is None:
            damaged.append(checksum_path.name)
    except OSError:  # unreadable, not damaged: the commands that load it say why
        pass
    return damaged


def _unpack_with_zero_initializers(model_path: Path, folder: Path) -> None:
    """Unpack what Keras reads of a .keras archive, every initializer set to zeros, for Keras to load as a folder."""
    # The saved weights replace them at once, while on JAX drawing each layer's random start compiled a program per
    # shape (4 of the 5 s a load of the spec's model took on the 2-core machine).
    with zipfile.ZipFile(model_path) as archive:
        missing = sorted(set(ARCHIVE_MEMBERS) - set(archive.namelist()))
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        for member in ARCHIVE_MEMBERS:  # Keras' own loader bounds what it unpacks; so do we
            size = archive.getinfo(member).file_size
            if size > MAX_MEMBER_BYTES:
                raise ValueError(f"its {member} unpacks to {size:,} bytes, over the {MAX_MEMBER_BYTES:,} allowed")
            archive.extract(member, folder)
    config = folder / "config.json"
    config.write_text(json.dumps(_zero_initializers(json.loads(config.read_text()))))


def _zero_initializers(node: Any) -> Any:
    if isinstance(node, list):
        return [_zero_initializers(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: ZEROS if key.endswith("_initializer") and value is not None else _zero_initializers(value)
            for key, value in node.items()}


def load_model(source: Path) -> tuple[Any, str]:
    """Load a checksum-verified Fashion-MNIST model (never with ``safe_mode=False``); return it and its SHA-256."""
    # A folder the system refuses (a full disk) is named by the command's own guard, not blamed on the model.
    with tempfile.TemporaryDirectory(prefix="fmnist-model-") as folder:
        checked, unpacked = Path(folder) / artifacts.MODEL, Path(folder) / "unpacked"
        model_path, checksum = verified_model_path(source, copy_to=checked)  # the file may be replaced meanwhile
        import keras

        try:
            _unpack_with_zero_initializers(checked, unpacked)
        # A damaged member, an unreadable or too deeply nested config, one missing, an encrypted one, an unknown
        # compression.
        except (zipfile.BadZipFile, ValueError, EOFError, zlib.error, RuntimeError, NotImplementedError,
                RecursionError) as exc:
            raise FmnistError(f"{model_path} cannot be unpacked ({first_line(exc)}): {DAMAGED}") from exc
        try:
            model = keras.saving.load_model(unpacked, compile=False)
        except Exception as exc:  # Keras raises many types for a bad archive; all mean the same to the user.
            raise FmnistError(f"Keras cannot load {model_path} ({first_line(exc)}): {DAMAGED} "
                              "(--debug shows Keras' error)") from exc
    taken, answered = _shape_text(model.input_shape, "features"), _shape_text(model.output_shape, "classes")
    if (taken, answered) != (f"{NUM_FEATURES} features", f"{NUM_CLASSES} classes"):
        raise FmnistError(f"{source} maps {taken} to {answered}, not {NUM_FEATURES} pixels to {NUM_CLASSES} classes")
    last = model.layers[-1]
    if not (isinstance(last, keras.layers.Softmax) or getattr(getattr(last, "activation", None), "__name__", None)
            == "softmax"):  # a hand-made model's scores would be served as probabilities, negative ones too
        raise FmnistError(f"{source} does not end in a softmax, so its answers are not probabilities of the "
                          f"{NUM_CLASSES} classes: end it in Dense({NUM_CLASSES}, activation='softmax'), as fmnist's "
                          "models do")
    import numpy as np

    if not all(np.isfinite(keras.ops.convert_to_numpy(weight)).all() for weight in model.weights):
        # Its answers would all be NaN, each served as a confident one.
        raise FmnistError(f"{source} holds NaN or infinite weights: it cannot classify anything; retrain it")
    if not run_lookup.is_model_alone(source):  # a run's, given as its folder or as its model.keras
        _require_runs_network(model, Path(source) if Path(source).is_dir() else Path(source).parent)
    return model, checksum


def _shape_text(shape: Any, unit: str) -> str:
    """A model's input or output shape in words: "784 features", one of another shape "shape 28x28"."""
    if isinstance(shape, list):  # a model of several inputs or outputs
        return f"{len(shape)} tensors"
    rest = tuple(shape[1:])  # less the batch
    return f"{rest[0]} {unit}" if len(rest) == 1 else f"shape {'x'.join(map(str, rest))}"


def _network_of(model: Any) -> str:
    """The network a model is, as :func:`run_settings.network_text` names one from settings."""
    import keras

    if any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers):
        return "ConvNet"
    units = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    return "-".join(map(str, units[:-1]))  # the last is the 10 classes'


def _require_runs_network(model: Any, run_dir: Path) -> None:
    """Refuse a run's model that is not the network its config.json describes: copied in from another run, it would
    be scored, served or exported under this run's settings, with this run's calibration."""
    config = run_dir / artifacts.CONFIG
    try:
        settings = run_settings.settings_of(artifacts.read_json(config)) if config.is_file() else {}
        expected = run_settings.network_text(settings)  # None without settings
    except FmnistError as exc:  # the model carries its own architecture: predicted with and served, unchecked
        mend = f": restore {artifacts.CONFIG} from a copy" if isinstance(exc, DamagedFile) else ""
        warn_once(log, config, "%s; the model is used as it is, unchecked against the run's settings%s", exc, mend)
        return
    actual = _network_of(model)
    if expected is not None and actual != expected:
        def named(network: str) -> str:
            return "the ConvNet" if network == "ConvNet" else f"a dense network of hidden sizes {network}"

        raise FmnistError(f"{run_dir / artifacts.MODEL} is not this run's model: it is {named(actual)}, where "
                          f"{artifacts.CONFIG} describes {named(expected)} (copied in from another run?); restore the "
                          f"run's own {artifacts.MODEL} with its {artifacts.MODEL_SHA256}, or use the run it came from")
