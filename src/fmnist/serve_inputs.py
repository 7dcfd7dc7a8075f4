"""What /v1/predict reads: the body, within its size and time limits, then a multipart form's files or a JSON body's
arrays, each checked; each file decoded in a slot of its own (the app's ``state.decoders``)."""

from __future__ import annotations

import collections
import json
import time
from typing import Any, Iterable

import anyio
import numpy as np
from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from fmnist.defaults import MAX_INPUTS, MIB
from fmnist.errors import first_line
from fmnist.facts import IMAGE_SIDE
from fmnist.images import BadInput, check_array, load_input
from fmnist.serve_http import declares_body

PREDICT_PARAMETERS = frozenset({"top_k", "include_pixels", "explain"})  # /v1/predict's query; others are refused
MAX_INTEGER_DIGITS = 20  # a JSON integer longer than any 64-bit one is no pixel
# A body may take BODY_TIMEOUT_S, and a second more for each MIN_BODY_RATE bytes that arrive, with no pause over
# BODY_TIMEOUT_S, else it is answered 408 (as the request line and headers are: fmnist.serve_http): a photo over a
# slow link is read, while a client that stalls (even after sending much) or trickles bytes holds no connection long.
BODY_TIMEOUT_S = 30
MIN_BODY_RATE = 16 * 1024  # bytes a second
EMPTY_BODY = "the request body is empty: send images as multipart files or JSON {\"inputs\": [...]}"


def _too_large(size: int | None, limit: int) -> BadInput:
    """A body over the upload limit (``size`` None: not known, as it came in chunks), in MiB as the option sets it."""
    def mib(n: int) -> str:
        return f"{n / MIB:,.1f} MiB"

    said = f"over the limit of {mib(limit)}" if size is None else (
        f"{mib(size)}; the limit is {mib(limit)}" if mib(size) != mib(limit) else
        f"{size:,} bytes; the limit is {limit:,}")  # just over: in MiB, the two would read alike
    return BadInput(f"the request body is {said} (fmnist serve --max-upload-mb): send fewer images a request, or "
                    "smaller ones", 413)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    stream, started = request.stream().__aiter__(), time.monotonic()
    while True:
        allowed = started + BODY_TIMEOUT_S + size / MIN_BODY_RATE - time.monotonic()
        try:
            with anyio.fail_after(min(max(allowed, 0), BODY_TIMEOUT_S)):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BadInput(f"the request body did not arrive in time: {BODY_TIMEOUT_S} s, and a second more for each "
                           f"{MIN_BODY_RATE // 1024} KiB received, with no pause over {BODY_TIMEOUT_S} s",
                           408) from None
        size += len(chunk)
        if size > limit:
            raise _too_large(None, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadInput(EMPTY_BODY, 400)
    return body


async def form_files(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    """The (name, bytes) of each file in a multipart body already read."""
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    _, options = parse_options_header(request.headers["content-type"])
    if not options.get(b"boundary"):  # none, or empty: the parser would split the body on "--" and drop parts
        raise BadInput("the multipart Content-Type names no boundary (boundary=...): send the form with the header "
                       "your HTTP client makes for it", 400)
    require_closed_form(body, options[b"boundary"])
    # Outside the app's scope, Starlette raises its parser's error instead of a 400 that hides the reason.
    outside_app = {key: value for key, value in request.scope.items() if key != "app"}
    try:
        form = await Request(outside_app, replay).form(
            max_files=MAX_INPUTS, max_fields=MAX_INPUTS, max_part_size=len(body)
        )
    except MultiPartException as exc:
        if exc.message.startswith(("Too many files", "Too many fields")):  # 413 here, as too many inputs in JSON
            raise BadInput(f"more than {MAX_INPUTS} parts in one request; the limit is {MAX_INPUTS} inputs: send them "
                           "in several requests", 413) \
                from None
        reason = exc.__cause__ or exc.message  # python-multipart's own words, when it is the parser that refused
        hint = " (a file name thousands of characters long?)" if "header size" in str(reason) else ""
        raise BadInput(f"the multipart body cannot be read: {str(reason).rstrip('.')}{hint}", 400) from None
    except UnicodeError as exc:  # a codec failing past Starlette (undefined; punycode and idna before Python 3.13)
        raise BadInput(f"the multipart body cannot be read: its part names cannot be decoded with the charset its "
                       f"Content-Type names ({first_line(exc)}): leave charset out, or send utf-8", 400) from None
    try:
        fields = list(dict.fromkeys(key for key, value in form.multi_items() if not isinstance(value, UploadFile)))
        if fields:  # curl's -F files=<a.png sends a file's bytes as a field: never answered in part, without them
            several = len(fields) > 1
            raise BadInput(f"the form's field{'s' if several else ''} {', '.join(map(repr, fields))} "
                           f"hold{'' if several else 's'} no file (no filename): send each image as a file part, "
                           "e.g. curl -F files=@shirt.jpg; options go in the query (?top_k=3)", 400)
        # A lone surrogate (a part's name decoded with the charset= the request gave) written as its escape: JSON
        # in UTF-8 cannot carry it, and the answer would fail.
        files = [((value.filename or key).encode("utf-8", "backslashreplace").decode("utf-8"), await value.read())
                 for key, value in form.multi_items()]
    finally:
        await form.close()
    if not files:
        raise BadInput("the form holds no files: send each image as a file part", 400)
    return files


def require_closed_form(body: bytes, boundary: bytes) -> None:
    """Refuse a multipart body whose closing boundary is missing, or not on a line of its own, or followed by more:
    python-multipart would drop its last part, or what follows, without a word."""
    delimiter, shown = b"--" + boundary, f"--{boundary.decode('latin-1')}"
    if body.startswith(delimiter + b"--"):  # a form of no parts
        rest = body[len(delimiter) + 2:]
    else:
        end = body.find(b"\r\n" + delimiter + b"--")  # the parser's form ends at the first one
        if end < 0:
            if delimiter not in body:
                raise BadInput(f"the multipart body holds no {shown} boundary: send it with the boundary its "
                               "Content-Type names", 400)
            raise BadInput(f"the multipart body does not end with its closing boundary {shown}-- on a line of its "
                           "own: its last part would be lost; send the whole form", 400)
        rest = body[end + len(delimiter) + 4:]
    if rest.strip():
        raise BadInput(f"the multipart body goes on after its closing boundary {shown}--: what follows would be "
                       "lost; send one form per request", 400)


def json_integer(text: str) -> int:
    """A JSON integer; one too long for a pixel is refused before Python's own limit (4,300 digits) calls the body
    invalid JSON, which it is not."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise BadInput(f"the JSON body holds an integer of {digits:,} digits; give integers 0-255 (pixels) or "
                       "floats in [0, 1]")
    return int(text)


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (Python keeps the last of two, losing the first's value)."""
    twice = [key for key, count in collections.Counter(key for key, _ in pairs).items() if count > 1]
    if twice:
        raise BadInput(f"the JSON body gives {keys_text(twice)} twice: give each key once")
    return dict(pairs)


def keys_text(keys: Iterable[str], shown: int = 5, longest: int = 40) -> str:
    """JSON keys as an answer names them: the first ``shown`` in order, each cut to ``longest`` characters, and how
    many more (a body of a megabyte of keys is not said back whole)."""
    keys = sorted(keys)
    cut = [key if len(key) <= longest else key[:longest - 1] + "…" for key in keys[:shown]]
    said = [json.dumps(key, ensure_ascii=False) for key in cut]
    return ", ".join(said) + (f" and {len(keys) - shown:,} more" if len(keys) > shown else "")


def _holds_a_boolean(item: list) -> bool:
    """Whether a rectangular nest of JSON lists holds true or false anywhere."""
    return any(isinstance(value, bool) for value in np.asarray(item, dtype=object).flat)


def json_inputs(body: bytes) -> np.ndarray:
    """The 28x28 inputs of a JSON body ``{"inputs": [...]}``, each checked like a .npy array."""
    try:
        document = json.loads(body, parse_int=json_integer, object_pairs_hook=_object_once)
    except RecursionError:
        raise BadInput("the JSON body is nested too deeply: give each input as 28 rows of 28 numbers, or 784 numbers",
                       400) \
            from None
    except ValueError as exc:
        raise BadInput(f"the body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}): send UTF-8 JSON such as "
                       "{\"inputs\": [[784 numbers]]}", 400) from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if isinstance(document, dict) and document and "inputs" not in document:  # a key misspelt, or another API's
        raise BadInput(f"the JSON body holds {keys_text(document)} but no \"inputs\": send "
                       "{\"inputs\": [[784 numbers]]}")
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("the JSON body must be an object whose \"inputs\" is a non-empty list of arrays: send "
                       "{\"inputs\": [[784 numbers]]}")
    others = set(document) - {"inputs"}
    if others:  # an option sent here would be answered as if read, with its default
        raise BadInput(f"the JSON body holds {keys_text(others)} beside \"inputs\": it takes "
                       "\"inputs\" alone: put options in the query (?top_k=3)")
    unwrapped = _one_image_unwrapped(inputs)
    if unwrapped:
        raise BadInput(f"\"inputs\" must be a list of images, each 28x28 or 784 numbers; it holds {unwrapped}: for "
                       "one image, put it in a list of its own ({\"inputs\": [[...]]})")
    if len(inputs) > MAX_INPUTS:
        raise BadInput(f"{len(inputs)} inputs in one request; the limit is {MAX_INPUTS}: send them in several requests",
                       413)
    images = []
    for i, item in enumerate(inputs):
        try:
            values = np.asarray(item)
        except (ValueError, TypeError, OverflowError):  # ragged nesting, or numbers numpy cannot hold
            raise BadInput(f"inputs[{i}] is not a rectangular array of numbers; give 28 rows of 28 numbers, or 784 "
                           "numbers") from None
        # numpy reads null or an integer beyond 64 bits among numbers as objects, and true or false as 1 or 0.
        if values.dtype == object or (values.dtype != bool and _holds_a_boolean(item)):
            raise BadInput(f"inputs[{i}] holds values that are not numbers (null, true, false, an object?) or "
                           "integers beyond 64 bits; give floats in [0, 1] or integers 0-255")
        images.append(check_array(values, f"inputs[{i}]"))
    return np.stack(images)


def _one_image_unwrapped(inputs: list[Any]) -> str | None:
    """What ``inputs`` holds, in words, if it looks like one image's values sent without a list around them."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not any(isinstance(value, (list, dict)) for value in inputs) and any(map(number, inputs)):
        return f"{len(inputs)} values, not images"
    if len(inputs) == IMAGE_SIDE and all(isinstance(row, list) and len(row) == IMAGE_SIDE and all(map(number, row))
                                         for row in inputs):
        return f"{IMAGE_SIDE} rows of {IMAGE_SIDE} numbers, one 28x28 image"
    return None


async def decode_files(request: Request, files: list[tuple[str, bytes]]) -> np.ndarray:
    """Each file in a decoding slot of its own, so that a request of many large images holds a slot one image at a
    time and others' uploads get theirs in between; a client that went away stops it."""
    images = []
    for i, (name, data) in enumerate(files):
        if await request.is_disconnected():
            raise ClientDisconnect()
        try:
            images.append(await anyio.to_thread.run_sync(load_input, data, name, limiter=request.app.state.decoders))
        except BadInput as exc:  # names often repeat (photo.jpg from two folders): the part's place says which
            if len(files) == 1:
                raise
            raise BadInput(f"file {i + 1} of the {len(files)} sent: {exc}; none was classified: send the others "
                           "without it", exc.status) from None
    return np.stack(images)


async def read_inputs(request: Request, max_body_bytes: int) -> tuple[list[str], np.ndarray]:
    """The request's images (multipart files) or arrays (JSON), each with the name its answer is given under."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BadInput(f"a body compressed with Content-Encoding: {encoding} is not accepted; send it uncompressed "
                       "(images are compressed already)", 415)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type and not declares_body(request.headers.raw):  # nothing sent (curl -X POST URL): say so
        raise BadInput(EMPTY_BODY, 400)
    if content_type not in ("multipart/form-data", "application/json"):  # said before a body is waited for
        given = request.headers.get("content-type")
        said = content_type or ("none" if given is None else f"{given!r}, which names no media type")
        raise BadInput(f"unsupported content type {said}: "
                       "send multipart/form-data files or application/json", 415)
    body = await read_body(request, max_body_bytes)
    if content_type == "multipart/form-data":
        files = await form_files(request, body)
        del body  # the files hold its bytes now: not twice the upload each while requests queue for a decoding slot
        return [name for name, _ in files], await decode_files(request, files)
    # In a decoding slot too: parsing 10 MiB of JSON took 5 s of CPU and up to 100 MB.
    images = await anyio.to_thread.run_sync(json_inputs, body, limiter=request.app.state.decoders)
    return [f"inputs[{i}]" for i in range(len(images))], images


def check_predict_query(request: Request) -> None:
    """Refuse a query parameter /v1/predict does not take, or one given twice: FastAPI would ignore the first
    (?topk=1 answered with the default top 3, as if read) and answer one of the second as if it were the only one."""
    unknown = sorted(set(request.query_params) - PREDICT_PARAMETERS)
    if unknown:
        raise BadInput(f"unknown query parameter{'s' * (len(unknown) > 1)} {', '.join(unknown)}: /v1/predict takes "
                       f"{', '.join(sorted(PREDICT_PARAMETERS))}")
    repeated = sorted(key for key in PREDICT_PARAMETERS if len(request.query_params.getlist(key)) > 1)
    if repeated:
        raise BadInput(f"query parameter {repeated[0]} given {len(request.query_params.getlist(repeated[0]))} "
                       "times: give it once")
