"""`fmnist predict`: classify a user's photos and arrays with a run's checksum-verified model."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fmnist import artifacts, model_files, run_lookup, runs
from fmnist.defaults import MAX_FILE_MIB, MIB, RUNS_DIR, STDIN, TOP_K, UNSURE_BELOW
from fmnist.errors import ErrorsPerInput, FmnistError, one_line
from fmnist.facts import CLASS_NAMES, IMAGE_SIDE, NUM_FEATURES
from fmnist.images import ARRAY_SHAPES, load_input, quiet_pillow_warnings
from fmnist.plots import percent

log = logging.getLogger(__name__)

# The largest file read: a 24-megapixel camera JPEG is 5 to 15 MiB.
MAX_FILE_BYTES = MAX_FILE_MIB * MIB
MAX_SHOWN = 64  # rows of --show's picture: 64 make it about 17,000 pixels tall


class Classifier:
    """A run's model loaded once (SHA-256 checked), answering class probabilities for 28x28 inputs in [0, 1]."""

    def __init__(self, source: Path) -> None:
        from fmnist.inference import compiled_forward

        self.model, self.sha256 = model_files.load_model(source)
        self.forward = compiled_forward(self.model)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax rows for ``images`` (n x 28 x 28 or n x 784, float32 in [0, 1]), refused in any other shape or
        range: the model would answer for pixels of 0-255 all the same."""
        pixels = np.asarray(images, dtype=np.float32)
        if pixels.shape[1:] not in ARRAY_SHAPES:
            raise FmnistError(f"images of shape {pixels.shape}: give n x {IMAGE_SIDE} x {IMAGE_SIDE} or n x "
                              f"{NUM_FEATURES} pixels (one image: image[None])")
        if pixels.size and not (np.isfinite(pixels).all() and 0 <= pixels.min() and pixels.max() <= 1):
            raise FmnistError("pixels must lie in [0, 1], light on dark as in Fashion-MNIST: divide pixels of "
                              "0-255 by 255 (fmnist.data.to_features does)")
        return self.forward(pixels.reshape(len(pixels), -1))

    def warm_up(self) -> None:
        """Compile every batch shape the forward pass pads to now, so no request pays for it."""
        from fmnist.inference import BUCKETS

        for size in BUCKETS:
            self.forward(np.zeros((size, NUM_FEATURES), dtype=np.float32))


def describe(probabilities: np.ndarray, top_k: int = TOP_K, unsure_below: float = UNSURE_BELOW) -> dict[str, Any]:
    """The top-k classes of one probability row, and whether the model is unsure."""
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return {
        "top": [
            {"class": CLASS_NAMES[i], "index": int(i), "probability": _rounded(float(probabilities[i]))} for i in order
        ],
        "unsure": bool(probabilities[order[0]] < unsure_below),
    }


def _rounded(probability: float) -> float:
    """To 6 decimals, short of 1 where it is (an answer called unsure must not read certain)."""
    return round(probability, 6) if probability >= 1 else min(round(probability, 6), 0.999999)


def check_options(top_k: int, unsure_below: float) -> None:
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise FmnistError(f"top-k must be between 1 and {len(CLASS_NAMES)}, not {top_k}")
    check_unsure_below(unsure_below)


def check_unsure_below(unsure_below: float) -> None:
    if not 0.0 <= unsure_below <= 1.0:
        raise FmnistError(f"the unsure threshold must lie in [0, 1], not {unsure_below}")


def read_inputs(paths: list[Path | str]) -> tuple[list[tuple[Path | str, int | None]], np.ndarray,
                                                 list[dict[str, Any]]]:
    """The readable files as the model's 28x28 inputs, each with its file and its index in a ``.npy`` stack of
    images (None for a file of one), and each other file's reason."""
    if sum(map(_is_stdin, paths)) > 1:
        raise FmnistError(f"'{STDIN}' (standard input) is given twice: it holds one image")
    read, images, failures = [], [], []
    for path in paths:
        try:
            pixels = _read_input(path)
        except FmnistError as exc:
            failures.append({"input": _input_name(path), "error": str(exc)})
            continue
        stacked = pixels.ndim == 3
        read += [(path, i) for i in range(len(pixels))] if stacked else [(path, None)]
        images += list(pixels) if stacked else [pixels]
    if not images:  # nothing to answer: the reasons are the command's error, a line each
        raise ErrorsPerInput(failures)
    return read, np.stack(images), failures


def _read_input(path: Path | str) -> np.ndarray:
    if _is_stdin(path):
        return load_input(_read_stdin(), "standard input", stack=True)
    try:
        if Path(path).exists() and not Path(path).is_file():  # a FIFO would hang, /dev/zero fill the memory
            if Path(path).is_dir():
                raise FmnistError(f"{path} is a folder: give image or .npy files, such as those in it "
                                  f"({runs.shell_word(str(path).rstrip('/') or '/')}/*)")
            raise FmnistError(f"{path} is not a file: give image or .npy files")
        with open(path, "rb") as handle:
            oversized = os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES  # refused before anything is read
            data = b"" if oversized else handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FmnistError(f"cannot read {path}: {exc.strerror}") from None
    if oversized or len(data) > MAX_FILE_BYTES:  # the latter: a file that grew while it was read
        raise FmnistError(f"{path} is over {MAX_FILE_MIB} MiB: give a smaller image, or split a stack of them")
    return load_input(data, str(path), stack=True)


def _input_name(path: Path | str) -> Path | str:
    if _is_stdin(path):
        return STDIN
    return runs.absolute(path) if str(path) == STDIN else Path(path)  # a file named "-", told apart from the pipe


def shown_name(path: Path | str, index: int | None = None) -> str:
    """An input's title in --show's picture: its file's name, or "standard input" for the pipe; an image of a
    ``.npy`` stack with its index, ``pixels.npy[3]``."""
    return ("standard input" if _is_stdin(path) else Path(path).name) + ("" if index is None else f"[{index}]")


def _is_stdin(path: Path | str) -> bool:
    return isinstance(path, str) and path == STDIN  # a Path("./-") prints as "-" too: that is a file


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():  # nothing piped in: reading would wait for the keyboard
        raise FmnistError(f"'{STDIN}' reads an image piped in, as in: curl -s URL | fmnist predict RUN {STDIN}")
    try:
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FmnistError(f"cannot read standard input: {exc.strerror}") from None
    if data is None:  # a non-blocking pipe with nothing in it yet
        raise FmnistError("standard input had nothing to read yet (a non-blocking pipe): pipe the image in whole, "
                          "or save it and give the file")
    if len(data) > MAX_FILE_BYTES:
        raise FmnistError(f"standard input is over {MAX_FILE_MIB} MiB: give a smaller image, or split a stack of them")
    return data


def predict_command(model: str | Path, paths: list[Path | str], runs_dir: Path = Path(RUNS_DIR),
                    **options: Any) -> dict[str, Any]:
    """`fmnist predict`: :func:`predict_files` with the model of ``model`` (a run, its name in ``runs_dir``, or a model
    file), Pillow's noise about damaged metadata kept off the terminal."""
    quiet_pillow_warnings()
    try:
        source = run_lookup.resolve_model(model, runs_dir)
    except FmnistError as exc:
        from PIL import Image

        given = Path(model)  # an image given first, the run after it: `fmnist predict shirt.png RUN`
        if given.is_file() and given.suffix.lower() in {".npy", *Image.registered_extensions()}:
            raise FmnistError(f"{exc}; the run comes first, then the images: fmnist predict RUN IMAGE [IMAGE ...]"
                              ) from None
        raise
    return predict_files(source, paths, **options)


def predict_files(
    source: Path, paths: list[Path | str], top_k: int = TOP_K, unsure_below: float = UNSURE_BELOW,
    show: Path | None = None, backend: str | None = None, save_inputs: Path | None = None,
) -> dict[str, Any]:
    """Classify each readable file; return the model's id, one answer per such file and one error per other, optionally
    drawing ``show`` and saving the inputs as the model took them to ``save_inputs``."""
    from fmnist.backend import activate

    check_options(top_k, unsure_below)
    # The inputs, the model and the files' places checked before Keras starts, so refused at once.
    read, images, failures = read_inputs(paths)
    model_files.verified_model_path(source)
    given, show = show, _output_place(show, "--show", ".png", "the picture", paths)
    given_inputs, save_inputs = save_inputs, _output_place(save_inputs, "--save-inputs", ".npy", "the inputs", paths)
    activate(backend)
    classifier = Classifier(source)
    probabilities = classifier.probabilities(images)
    if save_inputs is not None:  # as an exported model takes them: n x 784 float32, in the answers' order
        flat = images.reshape(len(images), -1)
        try:  # the temporary name ends in .npy too: np.save adds none
            artifacts.write_atomic(save_inputs, lambda tmp: np.save(tmp, flat, allow_pickle=False))
        except (OSError, FmnistError) as exc:  # a full disk: the answers are given all the same, the failure beside
            failures.append({"input": given_inputs, "error": _unwritten("--save-inputs", given_inputs, exc)})
            save_inputs = None
    if show is not None:
        from fmnist.explain import occlusion_maps
        from fmnist.plots import predictions_png

        if len(images) > MAX_SHOWN:
            log.warning("--show draws the first %d of the %d inputs", MAX_SHOWN, len(images))
        shown = slice(MAX_SHOWN)
        maps = occlusion_maps(classifier.probabilities, images[shown], probabilities[shown].argmax(axis=1))
        log.info("drawing --show's picture: %d input%s, a row each", len(maps), "" if len(maps) == 1 else "s")
        try:
            predictions_png(images[shown], probabilities[shown], maps, [shown_name(*entry) for entry in read[shown]],
                            show)
        # A full disk, or the folder gone since it was checked: the answers are given all the same, the picture's
        # failure beside.
        except (OSError, FmnistError) as exc:
            failures.append({"input": given, "error": _unwritten("--show", given, exc)})
            show = None
    return {
        "model_sha256": classifier.sha256,
        "predictions": [
            {"input": _input_name(path), **({} if index is None else {"stack_index": index}),
             **describe(row, top_k, unsure_below)}
            for (path, index), row in zip(read, probabilities)
        ],
        "errors": failures,
        **({"shown": given} if show is not None else {}),
        **({"saved_inputs": given_inputs} if save_inputs is not None else {}),
    }


def _output_place(path: Path | None, flag: str, suffix: str, what: str, inputs: list[Path | str]) -> Path | None:
    """Where ``flag`` writes (checked as :func:`runs.prepare_output` checks it), never over one of the ``inputs``."""
    if path is None:
        return None
    if any(_same_file(path, given) for given in inputs):  # said so, before it is said to be a file of the user's
        raise FmnistError(f"{flag} {path} is one of the inputs: name another file for {what}")
    return runs.prepare_output(path, flag, suffix)


def _unwritten(flag: str, path: Path, exc: Exception) -> str:
    """Why ``flag``'s file was not written, as an error beside the answers."""
    return f"cannot write {flag} {path}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)


def _same_file(written: Path, path: Path | str) -> bool:
    """Whether a file predict writes would overwrite the input ``path``, by any name (a link, another case of letters
    on macOS); an input that cannot be read is not, and gets its own error line."""
    if _is_stdin(path):
        return False
    try:
        return os.path.samefile(written, path)
    except OSError:  # not there (yet), or a loop of links (ELOOP)
        return False


def as_text(result: dict[str, Any]) -> str:
    """One line per input: the best class, the runners-up, and a flag when the model is unsure."""
    lines = []
    for answer in result["predictions"]:
        best, *others = answer["top"]
        index = f"[{answer['stack_index']}]" if "stack_index" in answer else ""  # an image of a .npy stack
        line = f"{one_line(str(answer['input']))}{index}: {best['class']} {percent(best['probability'])}"
        if others:
            line += " (" + ", ".join(f"{o['class']} {percent(o['probability'])}" for o in others) + ")"
        lines.append(line + ("  [unsure]" if answer["unsure"] else ""))
    return "\n".join(lines)
