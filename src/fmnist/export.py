"""`fmnist export`: write a run's model as ONNX, a TensorFlow SavedModel or LiteRT with Keras' own `model.export`,
then reload the file with its own runtime and check it against the Keras model on test images."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fmnist import artifacts, defaults, model_files, run_list, run_locks, run_lookup, runs
from fmnist.backend import resolve
from fmnist.data import CHECKSUMS, load_dataset, to_features
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES

log = logging.getLogger(__name__)

# Backends that can write each format, preferred first. Keras writes LiteRT only from TensorFlow (or PyTorch), and
# ONNX from JAX only through jax2onnx, which pulls in Flax and Orbax; tf2onnx on TensorFlow needs nothing of the kind.
FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("tensorflow",),
    "saved_model": ("tensorflow", "jax"),
    "litert": ("tensorflow",),
}
KERAS_FORMAT = {"onnx": "onnx", "saved_model": "tf_saved_model", "litert": "litert"}
RUNTIME = {"onnx": "onnxruntime", "saved_model": "TensorFlow", "litert": "the LiteRT interpreter"}


def install_hint() -> str:
    """The pip command that installs the export extra's packages with their bounds, as fmnist's metadata gives them:
    installed from a wheel, there is no checkout whose setup could."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        needed = [r.split(";")[0].strip() for r in requires("fmnist") or () if 'extra == "export"' in r]
    except PackageNotFoundError:  # run from a source tree never installed
        needed = []
    pip = f"{shlex.quote(sys.executable)} -m pip install"  # into the Python that runs fmnist, as bench says
    command = f"{pip} {' '.join(map(shlex.quote, needed))}" if needed else f"{pip} -e '.[export]'"
    return f"install the export extra: {command} (in fmnist's checkout: bash scripts/setup.sh true)"


def choose_backend(fmt: str, requested: str | None) -> str:
    """The flag, else KERAS_BACKEND, else the first backend that writes ``fmt``; refuse one that cannot write it."""
    name = resolve(requested, fallback=FORMATS[fmt][0])
    if name not in FORMATS[fmt]:
        able = " or ".join(FORMATS[fmt])
        source = "" if requested else " (from the environment variable KERAS_BACKEND)"
        raise FmnistError(
            f"Keras cannot write {fmt} from the {name} backend{source}; the {able} backend can: "
            f"rerun with --backend {FORMATS[fmt][0]}"
        )
    return name


def sha256_tree(path: Path) -> str:
    """A file's SHA-256; for a folder, the SHA-256 of its sorted ``sha256sum``-style listing."""
    if path.is_file():
        return artifacts.sha256_file(path)
    listing = "".join(
        f"{artifacts.sha256_file(f)}  {f.relative_to(path).as_posix()}\n"
        for f in sorted(path.rglob("*")) if f.is_file()
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def parity(reference: np.ndarray, exported: np.ndarray, tolerance: float = defaults.EXPORT_TOLERANCE) -> dict[str, Any]:
    """Largest absolute probability difference and top-class agreement; ``passed`` when within ``tolerance``."""
    if exported.shape != reference.shape:
        raise FmnistError(f"the exported model returned shape {exported.shape}, the Keras model {reference.shape}")
    max_abs_diff = float(np.abs(reference.astype(np.float64) - exported).max())
    return {
        "images": int(len(reference)),
        "max_abs_diff": max_abs_diff,
        "top_class_agreement": float(np.mean(reference.argmax(axis=1) == exported.argmax(axis=1))),
        "tolerance": tolerance,
        "passed": max_abs_diff <= tolerance,
    }


# Each runs the file as a user would from its export.json: the input fed by the name recorded there; each returns
# its output's name, for export.json, and the probabilities.
def _run_onnx(path: Path, images: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_outputs()[0].name, np.asarray(session.run(None, {name: images})[0])


def _run_saved_model(path: Path, images: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    import tensorflow as tf

    # Loading warns that a gradient "will likely fail" through a JAX-written model's functions: the check only runs
    # the model forward, so the warning would alarm for nothing.
    absl = logging.getLogger("absl")
    absl.addFilter(_not_about_gradients)
    try:
        loaded = tf.saved_model.load(str(path))  # held: its variables die with it, mid-call if it were a temporary
    finally:
        absl.removeFilter(_not_about_gradients)
    ((output, outputs),) = loaded.signatures["serving_default"](**{name: tf.constant(images)}).items()
    return output, outputs.numpy()


def _not_about_gradients(record: logging.LogRecord) -> bool:
    return "with ops with unsaved custom gradients" not in record.getMessage()


def _run_litert(path: Path, images: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    # The signature runner resizes the input, written for a batch of one, to the batch given.
    ((output, outputs),) = Interpreter(model_path=str(path)).get_signature_runner()(**{name: images}).items()
    return output, np.asarray(outputs)


RUNNERS: dict[str, Callable[[Path, np.ndarray, str], tuple[str, np.ndarray]]] = {
    "onnx": _run_onnx, "saved_model": _run_saved_model, "litert": _run_litert,
}
# How a user's code calls each, as the check above does, for export.json and the summary.
USAGE = {
    "onnx": "onnxruntime.InferenceSession(FILE, providers=['CPUExecutionProvider']).run(['{output}'], "
            "{{'{input}': batch}})[0]",
    "saved_model": "tf.saved_model.load(FOLDER).signatures['serving_default']({input}=tf.constant(batch))['{output}']",
    "litert": "Interpreter(model_path=FILE).get_signature_runner()({input}=batch)['{output}'] (Interpreter from "
              "ai_edge_litert.interpreter, as fmnist's export extra installs it; the file's input is "
              "stored for a batch of 1, which the signature runner resizes; with set_tensor, call "
              "resize_tensor_input and allocate_tensors first)",
}


def parity_images(run_dir: Path, data_dir: Path | None) -> np.ndarray:
    """The first test images of the data set the run recorded (its checksums), scaled as the model expects; data
    not found, or a damaged config.json, is one error (without Keras: said before a backend loads)."""
    from fmnist.report import read_config

    config = read_config(Path(run_dir))
    data = config.get("data")
    recorded = data.get("sha256") if isinstance(data, dict) else None
    checksums = recorded if isinstance(recorded, dict) and set(recorded) == set(CHECKSUMS) else CHECKSUMS
    try:
        test_images = load_dataset(data_dir, checksums=checksums, test_only=True).x_test
        return to_features(test_images[:defaults.EXPORT_PARITY_IMAGES])
    except FmnistError as exc:
        if all(checksums[name] == CHECKSUMS[name] for name in CHECKSUMS):
            raise
        raise FmnistError(f"{exc} (the checksums {artifacts.CONFIG} recorded for the run's data, which are not "
                          "Fashion-MNIST's: restore it from a copy if it was edited)") from None


def interface(model: Any) -> dict[str, Any]:
    """What the exported file takes and answers, for export.json: the file cannot say how its input is scaled."""
    return {
        "input": {
            "name": model.inputs[0].name, "shape": list(model.input_shape), "dtype": "float32",
            "values": "a 28x28 grayscale image flattened row by row, each pixel / 255 in [0, 1], the garment light on "
                      "a black backdrop (as Fashion-MNIST's; `fmnist predict` prepares photos so)",
        },
        "output": {
            "shape": list(model.output_shape),
            "values": "the probability of each class, in the order of `classes` (temperature-scaled: calibrated)",
            "classes": list(CLASS_NAMES),
        },
    }


def _write_export(model: Any, target: Path, fmt: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy-2 patch of tf2onnx touches np.object
            model.export(str(target), format=KERAS_FORMAT[fmt], verbose=False)
    except ImportError as exc:
        raise FmnistError(f"{fmt} export needs a package that is missing ({exc}); {install_hint()}") from None


def _replace_dir(staging: Path, final: Path) -> None:
    """Move ``staging`` to ``final``, replacing an earlier export only once the new one is complete and on disk."""
    artifacts.fsync_tree(staging)  # else a power cut could leave export.json vouching for a file never written
    old = _set_aside(final)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    artifacts.fsync_folder(final.parent)


def _set_aside(final: Path) -> Path:
    """Where an earlier export waits while its replacement is moved in (hidden, so never taken for an export)."""
    return final.with_name(f".{final.name}.old")


def refuse_destination(run_dir: Path, fmt: str) -> None:
    """Refuse to export where the ``fmt`` export cannot go whole: a file or a link in its place, or a file fmnist did
    not write in its folder (notes, a copy kept by hand), which the new export, replacing the folder, would delete."""
    exports = Path(run_dir) / artifacts.EXPORTS_DIR
    folder = exports / fmt
    for place, what in ((exports, "the run's exports go"), (folder, f"the {fmt} export goes")):
        if place.exists() and not place.is_dir():  # exports/FMT would be set aside, hidden, and left there
            raise FmnistError(f"{place} is a file, where {what}: move it away, then export again")
    for link in (exports, folder):
        if link.is_symlink():  # written through, another run's export would be replaced, or the link left hidden
            raise FmnistError(f"{link} is a link to {link.readlink()}; a run's exports are kept in its own folder: "
                              "remove the link, then export again")
    exported = folder / artifacts.EXPORT_FILES[fmt]
    if os.path.lexists(exported) and not (folder / artifacts.EXPORT_INFO).exists():
        # An export is moved in whole, its record in it: a file of the export's name alone may be the user's own.
        raise FmnistError(f"{folder} holds {exported.name} without the {artifacts.EXPORT_INFO} an export of fmnist's "
                          "has beside it; an export replaces the folder whole: move it out (or put its "
                          f"{artifacts.EXPORT_INFO} back), then export again")
    ours = {artifacts.EXPORT_INFO, artifacts.EXPORT_FILES[fmt]}
    others = sorted(entry.name for entry in folder.iterdir() if entry.name not in ours) if folder.is_dir() else []
    if others:
        raise FmnistError(f"{folder} holds {', '.join(others)}, which fmnist did not write; an export replaces the "
                          f"folder whole: move {'it' if len(others) == 1 else 'them'} out, then export again")


def _earlier_export(folder: Path) -> str | None:
    """What an export replaces in ``folder``, said in a few words; None where there is none."""
    if not folder.is_dir():
        return None
    try:
        record = artifacts.read_json(folder / artifacts.EXPORT_INFO)
    except FmnistError:
        return f"no readable {artifacts.EXPORT_INFO}"
    return f"sha256 {record.get('sha256')}, made {record.get('created')} on {record.get('backend')}"


def _clear_leftovers(exports: Path, fmt: str) -> None:
    """Undo what a killed export of ``fmt`` left: an earlier export set aside and not yet replaced is put back, and
    half-written folders go (the caller holds the format's lock, so none of them is another process's)."""
    final = exports / fmt
    old = _set_aside(final)
    if old.is_dir() and not final.exists():
        old.rename(final)
    for leftover in exports.glob(f".{fmt}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def export_command(run: Path, fmt: str, runs_dir: Path = Path(defaults.RUNS_DIR), data_dir: Path | None = None,
                   backend: str | None = None) -> tuple[Path, dict[str, Any]]:
    """`fmnist export`: export ``run`` (a folder, or a name in ``runs_dir``) to ``fmt`` and check it; return the run's
    folder and the export's record. A changed model or missing test data is refused before the backend's seconds."""
    from fmnist.backend import activate

    with run_lookup.idle_run(run, runs_dir, "export it") as run_dir:
        model_files.verified_model_path(run_dir)
        refuse_destination(run_dir, fmt)  # said before the backend's seconds, and again under the export's lock
        images = parity_images(run_dir, data_dir)
        return run_dir, export_run(run_dir, fmt, activate(choose_backend(fmt, backend)), images)


def export_run(run_dir: Path, fmt: str, backend: str, images: np.ndarray) -> dict[str, Any]:
    """Export the run's model to ``exports/<fmt>/``, check its parity on ``images`` (:func:`parity_images`), record it
    in ``export.json``; return that record."""
    from fmnist.report import build_report

    run_dir = runs.require_run_dir(run_dir)
    exports = run_dir / artifacts.EXPORTS_DIR
    refuse_destination(run_dir, fmt)
    try:
        exports.mkdir(exist_ok=True)
    except OSError as exc:
        raise FmnistError(f"cannot write in {exports}: {exc.strerror}") from None
    busy = f"another process is exporting {run_dir} to {fmt}; wait for it, then export again if need be"
    with run_locks.held_lock(exports / f".{fmt}.lock", busy):
        _clear_leftovers(exports, fmt)
        refuse_destination(run_dir, fmt)  # an earlier export put back may hold a file of another's
        earlier = _earlier_export(exports / fmt)
        model, model_sha256 = model_files.load_model(run_dir)
        record = _export_into(exports, fmt, model, model_sha256, images, backend)
    if earlier is not None:
        log.warning("replaced the earlier %s export in %s (%s)", fmt, exports / fmt, earlier)
    if (run_dir / artifacts.METRICS).is_file():  # the report lists the exports; without metrics there is none yet
        try:
            build_report(run_dir)
        except (FmnistError, OSError, KeyboardInterrupt) as exc:  # after the export was kept: say so, or it reads
            # as lost (a full disk, say)
            reason = f"run 'fmnist report {run_dir}'" if isinstance(exc, KeyboardInterrupt) else str(exc)
            log.warning("the %s export is complete in %s; its report was not refreshed: %s", fmt, exports / fmt,
                        reason)
            if isinstance(exc, KeyboardInterrupt):
                raise
    else:
        try:
            run_list.require_scored(run_dir, "its report")
        except FmnistError as unscored:  # its report, listing the exports, is drawn once the run is scored
            log.warning("the %s export is complete; %s", fmt, unscored)
    return record


def _export_into(exports: Path, fmt: str, model: Any, model_sha256: str, images: np.ndarray,
                 backend: str) -> dict[str, Any]:
    """Write, check and record the export in a staging folder, then move it to ``exports/<fmt>``."""
    reference = np.asarray(model.predict(images, batch_size=len(images), verbose=0))
    try:
        staging = Path(tempfile.mkdtemp(dir=exports, prefix=f".{fmt}."))
    except OSError as exc:
        raise FmnistError(f"cannot write in {exports}: {exc.strerror}") from None
    staging.chmod(0o755)  # mkdtemp makes it private; an export is meant to be read by others
    try:
        target = staging / artifacts.EXPORT_FILES[fmt]
        log.info("exporting %s with Keras on %s", fmt, backend)
        _write_export(model, target, fmt)
        contract = interface(model)
        try:
            contract["output"]["name"], outputs = RUNNERS[fmt](target, images, contract["input"]["name"])
        except ImportError as exc:
            raise FmnistError(f"checking a {fmt} export needs {RUNTIME[fmt]} ({exc}); {install_hint()}") from None
        check = parity(reference, outputs)
        if not check["passed"]:
            raise FmnistError(
                f"the {fmt} export differs from the Keras model by up to {check['max_abs_diff']:.2e} in probability "
                f"(allowed {defaults.EXPORT_TOLERANCE:.0e}) on {check['images']} test images; nothing was kept"
            )
        record = {
            "format": fmt,
            "file": f"{artifacts.EXPORTS_DIR}/{fmt}/{artifacts.EXPORT_FILES[fmt]}",
            "sha256": sha256_tree(target),
            "backend": backend,
            "keras": metadata.version("keras"),
            "runtime": RUNTIME[fmt],
            "model_sha256": model_sha256,
            "created": runs.utc_now(),
            "parity": check,
            **contract,
            "usage": USAGE[fmt].format(input=contract["input"]["name"], output=contract["output"]["name"]),
        }
        artifacts.write_json(staging / artifacts.EXPORT_INFO, record)
        _replace_dir(staging, exports / fmt)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def summary_text(run_dir: Path, record: dict[str, Any]) -> str:
    """What `fmnist export` prints: the file, its checksum, the parity check and what the file takes."""
    check, source, answer = record["parity"], record["input"], record["output"]
    return (
        f"{record['format']}: {runs.absolute(Path(run_dir) / record['file'])}\n"
        f"sha256 {record['sha256']}\n"
        f"parity on {check['images']} test images ({record['runtime']} against Keras on {record['backend']}): "
        f"max |difference in probability| {check['max_abs_diff']:.2e} (allowed {check['tolerance']:.0e}), "
        f"top class agrees on {check['top_class_agreement']:.2%}"
        f"\ninput '{source['name']}': {source['dtype']}, n x {source['shape'][-1]} pixels / 255 (light on black); "
        f"output '{answer['name']}': n x {answer['shape'][-1]} calibrated probabilities, the classes in "
        f"{artifacts.EXPORT_INFO}"
        f"\ncall: {record['usage']}"
    )


RECORD_TEXTS = ("format", "file", "sha256", "backend", "created")
PARITY_NUMBERS = ("max_abs_diff", "top_class_agreement")


def _is_record(record: Any) -> bool:
    """Whether ``record`` holds what the report shows of an export, each of the kind it is shown as."""
    return (isinstance(record, dict) and all(isinstance(record.get(key), str) for key in RECORD_TEXTS)
            and isinstance(record.get("parity"), dict)
            and all(artifacts.json_number(record["parity"].get(key)) is not None for key in PARITY_NUMBERS))


def list_exports(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's exports, by format; an unreadable or incomplete record is left out, with a warning."""
    records = []
    for path in sorted(Path(run_dir).glob(f"{artifacts.EXPORTS_DIR}/*/{artifacts.EXPORT_INFO}")):
        if path.parent.name.startswith("."):  # an export in progress, or one a crash left unfinished
            continue
        try:
            record = artifacts.read_json(path)
        except FmnistError as exc:
            log.warning("%s", exc)
            continue
        if _is_record(record):
            records.append(record)
        else:
            log.warning("%s is not an export record; left out of the report", path)
    return records
