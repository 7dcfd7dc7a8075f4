"""Find, verify and load the four Fashion-MNIST IDX files; cache the verified arrays."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmnist import artifacts, runs
from fmnist.defaults import MIB
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES, IMAGE_SIDE

log = logging.getLogger(__name__)


# SHA-256 of each decompressed file, as published with the dataset.
CHECKSUMS = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
GZIP_MAGIC = b"\x1f\x8b"
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_PREFIX = ".fmnist-download-"  # a download's own folder beside keras' cache
STALE_AFTER_S = 3600  # a download folder or a cache's temporary file this old is a killed process's
HOW_TO_GET = (
    "get the data with 'sudo apt-get install dataset-fashion-mnist', or put the IDX files in a folder "
    "and pass --data-dir (or FMNIST_DATA_DIR)"
)
_IMAGE_MAGIC, _LABEL_MAGIC = 0x0803, 0x0801
# The largest of the four, the training images, is 47,040,016 bytes: a file (or what it decompresses to) much larger
# is not one of them, and read whole it could fill the memory.
MAX_IDX_BYTES = 64 * MIB
TEST_PREFIX = "t10k-"  # the test set's two files: all that scoring a trained model reads


@dataclass(frozen=True)
class Dataset:
    """The verified arrays (uint8 images n x 28 x 28, uint8 labels) and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    checksums: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # the file each array was read from, by its name


def data_record(dataset: Dataset) -> dict[str, Any]:
    """What a run keeps of its data: where they came from, and their files' SHA-256 (a resume checks them)."""
    return {"source": dataset.source, "sha256": dataset.checksums}


def to_features(images: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels to float32 in [0, 1] and flatten each image to 784 values."""
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(len(images), -1)


def keras_cache_dir() -> Path:
    # Absolute, as a run's config.json and --json name it for readers elsewhere.
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").absolute() / "datasets" / "fashion-mnist"


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        try:
            if candidate.is_file():
                return candidate
        except OSError as exc:  # a folder we may not enter (another user's home, say): not a place to find it
            log.debug("%s cannot be looked at (%s)", candidate, exc.strerror)
    return None


def _complete(folder: Path, checksums: dict[str, str]) -> dict[str, Path] | None:
    found = {name: _file_in(folder, name) for name in checksums}
    return found if all(found.values()) else None  # type: ignore[return-value]


def _download(checksums: dict[str, str]) -> dict[str, Path]:
    """Fetch the files with keras' own downloader into keras' cache."""
    import keras

    base = os.environ.get("FMNIST_DATA_URL") or KERAS_URL
    target = keras_cache_dir()
    log.info("downloading Fashion-MNIST from %s", base)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib has no timeout of its own: never hang
    try:
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{DOWNLOAD_PREFIX}*"):  # a download killed outright (SIGKILL) left it
            with contextlib.suppress(FileNotFoundError):  # another process's, gone meanwhile
                if time.time() - stale.stat().st_mtime > STALE_AFTER_S:
                    shutil.rmtree(stale, ignore_errors=True)
        # Into a folder of this process's own, then renamed into keras' cache: keras writes in place, where another
        # process looking there could take a file half downloaded for a damaged one.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=DOWNLOAD_PREFIX) as staging:
            files = {}
            for name in checksums:
                # keras prints its "Downloading data from" and progress bar on stdout, where --json's result goes.
                with contextlib.redirect_stdout(sys.stderr):
                    fetched = keras.utils.get_file(f"{name}.gz", origin=base.rstrip("/") + f"/{name}.gz",
                                                   cache_dir=staging, cache_subdir=".")
                files[name] = target / f"{name}.gz"
                os.replace(fetched, files[name])
            return files
    except Exception as exc:  # keras wraps network failures in several exception types
        raise FmnistError(f"could not download Fashion-MNIST from {base} ({exc}); {HOW_TO_GET}") from exc
    finally:
        socket.setdefaulttimeout(previous)


def _given_folder_advice(data_dir: Path | None, checksums: dict[str, str]) -> str:
    """What to do about a data folder given (--data-dir, or FMNIST_DATA_DIR) that cannot be used: where the package's
    files are there, they are what the folder given kept from use."""
    given = [what for what, there in (("leave out --data-dir", data_dir),
                                      ("unset FMNIST_DATA_DIR", os.environ.get("FMNIST_DATA_DIR"))) if there]
    return (f"the Debian package dataset-fashion-mnist is installed: {' and '.join(given)} to use its files"
            if _complete(DEBIAN_DIR, checksums) else HOW_TO_GET)


def locate(data_dir: Path | None = None, checksums: dict[str, str] = CHECKSUMS) -> tuple[str, dict[str, Path]]:
    """Return (source description, file per name), searching the documented places in order."""
    explicit = data_dir or os.environ.get("FMNIST_DATA_DIR")
    if explicit:
        folder = Path(explicit)
        named = folder if data_dir else f"{folder} (FMNIST_DATA_DIR)"  # a user who gave no --data-dir is told why
        advice = _given_folder_advice(data_dir, checksums)
        try:
            is_folder = folder.is_dir()
        except OSError as exc:
            raise FmnistError(f"{named} cannot be looked at ({exc.strerror}): give a folder you may read; "
                              f"{advice}") from None
        if not is_folder:
            test_only = all(name.startswith(TEST_PREFIX) for name in checksums)
            files = "test set's two IDX files" if test_only else "four IDX files"
            raise FmnistError(f"{named} {'is not a folder' if folder.exists() else 'does not exist'}: give the "
                              f"folder that holds the {files}; {advice}")
        found = _complete(folder, checksums)
        if found is None:
            missing = [n for n in checksums if _file_in(folder, n) is None]
            odd = [p.name for n in missing for p in (folder / f"{n}.gz", folder / n) if p.exists() or p.is_symlink()]
            but = f" ({', '.join(odd)} there, but not a readable file)" if odd else ""
            raise FmnistError(f"{named} lacks {', '.join(missing)} (.gz or raw){but}; {advice}")
        return f"data dir {runs.absolute(folder)}", found  # absolute: --json is read from elsewhere too
    for label, folder in (("keras cache", keras_cache_dir()), ("Debian package dataset-fashion-mnist", DEBIAN_DIR)):
        found = _complete(folder, checksums)
        if found:
            return f"{label} {folder}", found
    return f"download into {keras_cache_dir()}", _download(checksums)


def _magic(kind: str) -> int:
    """The IDX magic number of the four files' ``kind``: "images" or "labels"."""
    return _IMAGE_MAGIC if kind == "images" else _LABEL_MAGIC


def parse_idx(raw: bytes, name: str, expected_kind: str) -> np.ndarray:
    """Parse IDX bytes (images n x 28 x 28 or labels n), checking magic number, dimensions and length."""
    magic = _magic(expected_kind)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise FmnistError(f"{name} is truncated: {len(raw)} bytes, shorter than its IDX header; {HOW_TO_GET}")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise FmnistError(
            f"{name} is not an IDX {expected_kind} file (magic {found_magic:#010x}, expected {magic:#010x}); "
            f"{HOW_TO_GET}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if expected_kind == "images" and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise FmnistError(f"{name} holds {dims[1]}x{dims[2]} images, expected 28x28; {HOW_TO_GET}")
    expected_len = header_len + int(np.prod(dims))
    if len(raw) != expected_len:
        raise FmnistError(
            f"{name} is {len(raw)} bytes but its header promises {expected_len} (truncated or padded); {HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_verified(path: Path, name: str, expected_sha256: str, kind: str) -> np.ndarray:
    too_large = f"{path} is over {MAX_IDX_BYTES // MIB} MiB%s, far more than any Fashion-MNIST file; {HOW_TO_GET}"
    try:
        if path.stat().st_size > MAX_IDX_BYTES:
            raise FmnistError(too_large % "")
        data = path.read_bytes()
    except FileNotFoundError:  # removed meanwhile, by another process finding it damaged, say
        raise _LookAgain(f"{path} was removed while it was being read") from None
    except OSError as exc:  # not the file's fault: it is left where it is
        raise _Unreadable(f"cannot read {path} ({exc.strerror}); {HOW_TO_GET}") from exc
    try:
        # By its first bytes, not its name: a browser may save a .gz already decompressed.
        if data[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                raw = stream.read(MAX_IDX_BYTES + 1)  # no further: a small .gz can hold gigabytes of zeros
        elif path.suffix.lower() == ".gz" and data[:4] != _magic(kind).to_bytes(4, "big"):
            raise FmnistError(f"{path} is neither gzip data, as its name says, nor an IDX {kind} file saved "
                              f"decompressed (it begins {data[:8]!r}); {HOW_TO_GET}")
        else:
            raw = data
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise FmnistError(f"{path} cannot be decompressed ({exc}); {HOW_TO_GET}") from exc
    if len(raw) > MAX_IDX_BYTES:
        raise FmnistError(too_large % " decompressed")
    array = parse_idx(raw, str(path), kind)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_sha256:
        raise _WrongChecksum(
            f"{path} has SHA-256 {actual}, expected {expected_sha256} for {name}: the file is corrupt or not "
            f"Fashion-MNIST; {HOW_TO_GET}"
        )
    return array


def _read_checked(path: Path, name: str, expected_sha256: str, kind: str, cached: bool,
                  advice: str = HOW_TO_GET) -> np.ndarray:
    """:func:`_read_verified`; a file found in keras' download cache (``cached``) that fails is removed, as a cache's
    entry; one of a folder given is refused with ``advice``."""
    try:
        return _read_verified(path, name, expected_sha256, kind)
    except _LookAgain:  # gone already
        raise
    except FmnistError as exc:
        reason = str(exc).removesuffix(f"; {HOW_TO_GET}")
        if path.resolve().parent == DEBIAN_DIR.resolve() and not isinstance(exc, _Unreadable):  # damaged since
            raise FmnistError(f"{reason}; reinstall it: sudo apt-get install --reinstall dataset-fashion-mnist") \
                from None
        if not cached or isinstance(exc, _Unreadable):  # the user's own file (--data-dir), or one we may not read
            if advice == HOW_TO_GET or str(exc) == reason:  # its advice is already the one to give, or it has none
                raise
            raise FmnistError(f"{reason}; {advice}") from None
        if isinstance(exc, _WrongChecksum) and expected_sha256 != CHECKSUMS.get(name):
            raise  # a checksum not Fashion-MNIST's (a run's config.json edited by hand): the file may well be sound
        try:
            path.unlink(missing_ok=True)
        except OSError as unlink_error:
            raise FmnistError(f"{reason}; it could not be removed from keras' cache ({unlink_error.strerror}): "
                              f"remove it by hand; {HOW_TO_GET}") from None
        raise _LookAgain(f"{reason}: removed from keras' cache, to be downloaded anew") from None


def cache_dir() -> Path:
    return Path(os.environ.get("FMNIST_CACHE_DIR") or Path.home() / ".cache" / "fmnist")


def _stat_key(files: dict[str, Path], checksums: dict[str, str]) -> dict[str, list]:
    return {
        name: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, checksums[name]]
        for name, p in files.items()
    }


_ARRAYS = {
    "x_train": ("train-images-idx3-ubyte", "images"),
    "y_train": ("train-labels-idx1-ubyte", "labels"),
    "x_test": ("t10k-images-idx3-ubyte", "images"),
    "y_test": ("t10k-labels-idx1-ubyte", "labels"),
}


def _array_record(array: np.ndarray) -> list:
    """What the cache's manifest vouches for in an array: its shape, type and the SHA-256 of its bytes."""
    return [list(array.shape), array.dtype.str, hashlib.sha256(np.ascontiguousarray(array)).hexdigest()]


def _load_cached(folder: Path, key: dict, attrs: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Return the cached arrays when the manifest matches the source files' stat and checksums, and each array
    still matches its record (about 0.1 s: a cache file changed or cut since is read from the source again)."""
    try:
        manifest = json.loads((folder / artifacts.DATA_MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("sources") != key:
            return None
        if not isinstance(manifest.get("arrays"), dict):  # written by an older fmnist, or damaged
            return None
        arrays = {attr: np.load(folder / f"{attr}.npy", allow_pickle=False) for attr in attrs}
    except (OSError, ValueError, EOFError):  # EOFError: a file emptied (numpy's word for no bytes at all)
        return None
    if any(_array_record(array) != manifest["arrays"].get(attr) for attr, array in arrays.items()):
        log.warning("the cached arrays in %s do not match their record; verifying the data files again", folder)
        return None
    for array in arrays.values():  # read-only, as the files' own are: a caller writing into one is found either way
        array.setflags(write=False)
    return arrays


def _save_cache(folder: Path, key: dict, arrays: dict[str, np.ndarray]) -> None:
    for entry in folder.parent.glob("*/"):
        # What writers killed mid-write left in any entry (a training set's array is 47 MB), once an hour old.
        artifacts.remove_temporaries(entry, older_than_s=STALE_AFTER_S)
        if entry != folder and _outdated(entry):
            shutil.rmtree(entry, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for attr, array in arrays.items():
            artifacts.write_atomic(folder / f"{attr}.npy", lambda tmp, a=array: np.save(tmp, a))
        # Written last: it vouches for the arrays.
        artifacts.write_json(folder / artifacts.DATA_MANIFEST, {
            "sources": key, "arrays": {attr: _array_record(array) for attr, array in arrays.items()},
        })
    except (OSError, FmnistError) as exc:  # FmnistError: write_atomic's word for a write the system refused
        log.warning("could not cache the verified arrays in %s (%s); loading will stay slower", folder, exc)


def _outdated(entry: Path) -> bool:
    """A cache entry no load can be served from again: one of its source files is gone, or changed since (a new
    download). One without its manifest is left alone: a writer may be at work in it."""
    try:
        sources = json.loads((entry / artifacts.DATA_MANIFEST).read_text())["sources"]
        # The key a load of those files would look for now, as _load_dataset makes it.
        now = _stat_key({name: Path(path) for name, (path, *_) in sources.items()},
                        {name: checksum for name, (*_, checksum) in sources.items()})
    except FileNotFoundError as exc:
        return exc.filename != str(entry / artifacts.DATA_MANIFEST)  # a source gone
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, or another version's: kept
        return False
    return now != sources


class _LookAgain(FmnistError):
    """A data file removed, by us from keras' download cache (it failed its check) or by another process meanwhile:
    looking again finds the data, or downloads them anew."""


class _Unreadable(FmnistError):
    """A data file the system would not let us read: not damage, so never removed."""


class _WrongChecksum(FmnistError):
    """A data file whose SHA-256 is not the one asked for."""


def load_dataset(data_dir: Path | None = None, checksums: dict[str, str] = CHECKSUMS,
                 test_only: bool = False, recheck: bool = False) -> Dataset:
    """Locate, verify (header and SHA-256) and load the dataset, using the verified cache when valid (unless told to
    ``recheck`` the files); ``test_only`` reads the two test files alone."""
    # With ``test_only`` the training files are not needed, and the training arrays are left empty.
    try:
        return _load_dataset(data_dir, checksums, test_only, recheck)
    except _LookAgain as exc:  # a download cut short (a proxy's page saved in its place), or a file gone meanwhile
        log.warning("%s; looking for the data again", exc)
    try:
        return _load_dataset(data_dir, checksums, test_only, recheck)
    except _LookAgain as exc:  # twice: no passing accident
        raise FmnistError(f"{exc}, at the second look too: another process may be changing the data files, or the "
                          f"download is not the dataset; {HOW_TO_GET}") from None


def _load_dataset(data_dir: Path | None, checksums: dict[str, str], test_only: bool, recheck: bool) -> Dataset:
    if test_only:
        checksums = {name: digest for name, digest in checksums.items() if name.startswith(TEST_PREFIX)}
    wanted = {attr: (name, kind) for attr, (name, kind) in _ARRAYS.items() if name in checksums}
    source, files = locate(data_dir, checksums)
    try:
        key = _stat_key(files, checksums)
    except FileNotFoundError as exc:  # removed meanwhile, by another process finding it damaged, say
        raise _LookAgain(f"{exc.filename} was removed while it was looked at") from None
    folder = cache_dir() / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    arrays = None if recheck else _load_cached(folder, key, list(wanted))
    if arrays is None:
        log.info("verifying %s", source)
        given = source.startswith("data dir")
        advice = _given_folder_advice(data_dir, checksums) if given else HOW_TO_GET
        # Files in keras' cache, found there or downloaded into it; not Debian's, nor the user's own (--data-dir).
        # Never through a link: keras' folder (or its datasets folder) made a link to the user's own data, or to
        # Debian's, would lose their files.
        cached = not given and not any(
            folder.is_symlink() for folder in (keras_cache_dir(), keras_cache_dir().parent)) and all(
            path.parent == keras_cache_dir() for path in files.values())
        arrays = {
            attr: _read_checked(files[name], name, checksums[name], kind, cached, advice)
            for attr, (name, kind) in wanted.items()
        }
        for split in ("test",) if test_only else ("train", "test"):
            images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
            if len(images) != len(labels):
                raise FmnistError(f"{split} set has {len(images)} images but {len(labels)} labels; {HOW_TO_GET}")
            if labels.size and labels.max() >= len(CLASS_NAMES):
                raise FmnistError(f"{split} labels go up to {labels.max()}, expected 0-9; {HOW_TO_GET}")
        _save_cache(folder, key, arrays)
    if test_only:
        arrays.update(x_train=np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.uint8), y_train=np.zeros(0, np.uint8))
    return Dataset(**arrays, source=source, checksums=dict(checksums), files=files)


def describe(
    data_dir: Path | None = None, show: Path | None = None, checksums: dict[str, str] = CHECKSUMS,
) -> dict[str, Any]:
    """`fmnist data`: the verified dataset's source, checksums and sizes; with ``show``, a picture of samples too."""
    if show is not None:
        given, show = show, runs.prepare_output(show, "--show", ".png")
    # The files themselves, read and hashed again (a second or two): the cache vouches only that their size and time
    # are what they were when they were checked.
    dataset = load_dataset(data_dir, checksums, recheck=True)
    summary: dict[str, Any] = {
        "source": dataset.source,
        "verified_sha256": dataset.checksums,
        "files": dataset.files,
        "train_images": len(dataset.x_train),
        "test_images": len(dataset.x_test),
        "train_per_class": dict(zip(CLASS_NAMES, np.bincount(dataset.y_train, minlength=len(CLASS_NAMES)).tolist())),
        "test_per_class": dict(zip(CLASS_NAMES, np.bincount(dataset.y_test, minlength=len(CLASS_NAMES)).tolist())),
    }
    if show is not None:
        from fmnist.plots import samples_png

        samples_png(dataset.x_train, dataset.y_train, show)
        summary["samples_png"] = Path(given)
    return summary


def describe_text(summary: dict[str, Any]) -> str:
    lines = [f"source: {summary['source']}",
             f"train: {summary['train_images']} images, test: {summary['test_images']} images",
             "classes (label, name: training and test images):"]
    lines += [f"  {label} {name:<12} {summary['train_per_class'][name]:>6} {summary['test_per_class'][name]:>6}"
              for label, name in enumerate(CLASS_NAMES)]
    lines.append("checked, the IDX header and the SHA-256 of the (decompressed) bytes of:")
    lines += [f"  {summary['files'][name].name:<29} sha256 {digest}  ok"
              for name, digest in summary["verified_sha256"].items()]
    if "samples_png" in summary:
        lines.append(f"samples: {runs.absolute(summary['samples_png'])}")  # as every command's results name paths
    return "\n".join(lines)
