"""`fmnist serve`: a run's model over HTTP (FastAPI), with a web page to try it on photos and drawings."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import errno
import json
import logging
import os
import re
import socket
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Sequence

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from fmnist import artifacts, model_files, runs, stopping
from fmnist.data import CLASS_NAMES, IMAGE_SIDE
from fmnist.defaults import MAX_BATCH, MAX_INPUTS, MAX_UPLOAD_MIB, RUNS_DIR, UNSURE_BELOW
from fmnist.errors import FmnistError, first_line
from fmnist.explain import PATCH, occlusion_batches
from fmnist.images import BadInput, check_array, load_input, quiet_pillow_warnings
from fmnist.predict import Classifier, describe
from fmnist.serve_http import (SHUTDOWN_GRACE_S, AnswerCancelledRequests, HttpMethodsOnly, LoopbackHostsOnly,
                               WebPagesFrom, WholeAnswers, browser_origins, error, host_names, is_address, is_loopback,
                               json_http_protocol, root_path)
from fmnist.serve_metrics import METRICS_URL, ServeMetrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_URL = "/static"  # where the page's files are served from
# The page's files are checked with the server at every load (a 304 when unchanged): a browser's cached app.js would
# otherwise outlive an upgrade of fmnist, beside the new index.html.
REVALIDATE = {"Cache-Control": "no-cache"}
MIB = 1024 * 1024
MAX_BODY_BYTES = MAX_UPLOAD_MIB * MIB
PREDICT_PARAMETERS = frozenset({"top_k", "include_pixels", "explain"})  # /v1/predict's query; others are refused
MAX_INTEGER_DIGITS = 20  # a JSON integer longer than any 64-bit one is no pixel
# A body may take BODY_TIMEOUT_S, and a second more for each MIN_BODY_RATE bytes that arrive, with no pause over
# BODY_TIMEOUT_S, else it is answered 408 (as the request line and headers are: fmnist.serve_http): a photo over a
# slow link is read, while a client that stalls (even after sending much) or trickles bytes holds no connection long.
BODY_TIMEOUT_S = 30
MIN_BODY_RATE = 16 * 1024  # bytes a second
# Uploads decoded (and JSON bodies parsed) at once. A PNG just under Pillow's pixel limit took 0.97 GB while it was
# decoded: one decode per core keeps the server's memory bounded however many requests arrive, and more would not
# finish sooner.
# The cores this process may use (not the host's, in a container) where the system says; macOS and Windows do not.
DECODE_SLOTS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            },
            "encoding": {"files": {"contentType": "image/png, image/jpeg, image/webp, image/bmp, image/gif"}},
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,  # options go in the query; a key beside inputs is refused
                "properties": {"inputs": {
                    "type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": {"type": "array"},
                    "description": "Each input is 28x28 (nested) or 784 values, light on dark: floats in [0, 1], "
                                   "or integers 0-255 read as pixels (a list of integers only counts as pixels; "
                                   "one no higher than 1, not all 0, is refused: a black image as pixels).",
                }},
            },
        },
    },
}


class ClassProbability(BaseModel):
    class_: str = Field(alias="class")
    index: int
    probability: float


class Prediction(BaseModel):
    input: str
    top: list[ClassProbability]
    unsure: bool
    pixels: list[list[float]] | None = None
    evidence: list[list[float]] | None = None


class PredictResponse(BaseModel):
    model_sha256: str
    elapsed_ms: float
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    error: str


class Batcher:
    """Runs the inputs of concurrent requests through the model in shared forward passes; no request waits for
    company: a pass takes whatever queued while the previous one ran."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], max_rows: int = MAX_BATCH,
                 on_pass: Callable[[int, float], None] = lambda rows, seconds: None) -> None:
        """``on_pass``: told the rows and seconds of each forward pass."""
        self.forward, self.max_rows, self.on_pass = forward, max_rows, on_pass
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.passes = self.rows = 0

    async def predict(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def run(self) -> None:
        held = None  # a request that did not fit the last pass opens the next one
        while True:
            batch = [held or await self.queue.get()]
            held, rows = None, len(batch[0][0])
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if rows + len(item[0]) > self.max_rows:
                    held = item
                    break
                batch.append(item)
                rows += len(item[0])
            started = time.perf_counter()
            try:
                probabilities = await asyncio.to_thread(self.forward, np.concatenate([x for x, _ in batch]))
            except Exception as exc:  # hand the failure to each waiting request rather than stop serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.passes, self.rows = self.passes + 1, self.rows + rows
            self.on_pass(rows, time.perf_counter() - started)
            start = 0
            for x, future in batch:
                if not future.done():  # a client that went away leaves a cancelled future
                    future.set_result(probabilities[start: start + len(x)])
                start += len(x)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadInput(f"the request body is {int(declared)} bytes; the limit is {limit}", 413)
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
            raise BadInput(f"the request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadInput("the request body is empty: send images as multipart files or JSON {\"inputs\": [...]}", 400)
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
            raise BadInput(f"more than {MAX_INPUTS} parts in one request; the limit is {MAX_INPUTS} inputs", 413) \
                from None
        reason = exc.__cause__ or exc.message  # python-multipart's own words, when it is the parser that refused
        hint = " (a file name thousands of characters long?)" if "header size" in str(reason) else ""
        raise BadInput(f"the multipart body cannot be read: {str(reason).rstrip('.')}{hint}", 400) from None
    except UnicodeError as exc:  # a codec Starlette does not expect to fail so (undefined, punycode, idna)
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


class RevalidatedFiles(StaticFiles):
    """The page's files, each answer marked to be checked with the server before a browser reuses it."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


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
        raise BadInput(f"the JSON body holds an integer of {digits:,} digits; pixels are 0-255")
    return int(text)


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (Python keeps the last of two, losing the first's value)."""
    twice = sorted(key for key, count in collections.Counter(key for key, _ in pairs).items() if count > 1)
    if twice:
        raise BadInput(f"the JSON body gives {', '.join(map(json.dumps, twice))} twice: give each key once")
    return dict(pairs)


def _holds_a_boolean(item: list) -> bool:
    """Whether a rectangular nest of JSON lists holds true or false anywhere."""
    return any(isinstance(value, bool) for value in np.asarray(item, dtype=object).flat)


def json_inputs(body: bytes) -> np.ndarray:
    """The 28x28 inputs of a JSON body ``{"inputs": [...]}``, each checked like a .npy array."""
    try:
        document = json.loads(body, parse_int=json_integer, object_pairs_hook=_object_once)
    except RecursionError:
        raise BadInput("the JSON body is nested too deeply: each input is 28x28 (nested once) or 784 values", 400) \
            from None
    except ValueError as exc:
        raise BadInput(f"the body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})", 400) from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("the JSON body must be an object whose \"inputs\" is a non-empty list of arrays")
    others = sorted(set(document) - {"inputs"})
    if others:  # an option sent here would be answered as if read, with its default
        raise BadInput(f"the JSON body holds {', '.join(map(json.dumps, others))} beside \"inputs\": it takes "
                       "\"inputs\" alone; options go in the query (?top_k=3)")
    unwrapped = _one_image_unwrapped(inputs)
    if unwrapped:
        raise BadInput(f"\"inputs\" must be a list of images, each 28x28 or 784 numbers; it holds {unwrapped}: for "
                       "one image, put it in a list of its own ({\"inputs\": [[...]]})")
    if len(inputs) > MAX_INPUTS:
        raise BadInput(f"{len(inputs)} inputs in one request; the limit is {MAX_INPUTS}", 413)
    images = []
    for i, item in enumerate(inputs):
        try:
            values = np.asarray(item)
        except (ValueError, TypeError, OverflowError):  # ragged nesting, or numbers numpy cannot hold
            raise BadInput(f"inputs[{i}] is not a rectangular array of numbers") from None
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


async def explain_inputs(request: Request, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Occlusion maps through the batcher, for one request at a time and a batch of images at a time, so that a plain
    request waits for one batch at most; a client that went away stops it."""
    batches = occlusion_batches(images, classes)
    maps = []
    async with request.app.state.explaining:
        while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
            if await request.is_disconnected():
                raise ClientDisconnect()
            rows, finish = batch
            maps.append(finish(await request.app.state.batcher.predict(rows)))
    return np.concatenate(maps)


PLACES = {"query": "query parameter", "header": "header", "path": "path parameter", "body": "body field"}


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error, ours or the framework's, as a status with a JSON body {"error": "..."}."""

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code != 405:
            answer = error(exc.status_code, str(exc.detail))
            answer.headers.update(exc.headers or {})
            return answer
        # Starlette's Allow names one route's methods: GET and HEAD are two routes here; the static files' mount
        # has no methods of its own to name.
        # Under --root-path uvicorn puts the prefix in front of the path; the routes' paths are without it.
        path = request.url.path.removeprefix(request.scope.get("app_root_path", request.scope.get("root_path", "")))
        allowed = ", ".join(sorted(
            {method for route in request.app.routes if getattr(route, "path", None) == path
             for method in getattr(route, "methods", None) or ()}
            or ({"GET", "HEAD"} if path.startswith(f"{STATIC_URL}/") else set())))
        answer = error(405, f"{request.method} is not answered on {path}: use {allowed}")
        answer.headers["allow"] = allowed
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # ("query", "top_k") said as the other refusals say it: "query parameter top_k".
        problems = "; ".join(f"{' '.join([PLACES.get(e['loc'][0], e['loc'][0]), *map(str, e['loc'][1:])])}: "
                             f"{e['msg']}" for e in exc.errors())
        return error(422, problems)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("a client went away before %s was answered", request.url.path)  # nobody is left to read an answer
        return error(400, "the client went away before its request was answered")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__})")


async def read_inputs(request: Request, max_body_bytes: int) -> tuple[list[str], np.ndarray]:
    """The request's images (multipart files) or arrays (JSON), each with the name its answer is given under."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BadInput(f"a body compressed with Content-Encoding: {encoding} is not accepted; send it uncompressed "
                       "(images are compressed already)", 415)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/json"):  # said before a body is waited for
        raise BadInput(f"unsupported content type {content_type or 'none'}: "
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


def _run_details(source: Path) -> tuple[str | None, dict | None, Path | None]:
    """The name, settings and metrics file of the run whose model ``source`` is (its folder or its model.keras), all
    None for a model without its run; a missing or changed model refused now, not as a failed start-up."""
    if runs.is_model_alone(source):
        runs.require_utf8_name(runs.absolute(source))  # said in the log and in errors, as a run's is
        model_files.verified_model_path(source)
        return None, None, None
    run_dir = runs.require_run_dir(source.parent if source.suffix == ".keras" and source.is_file() else source)
    model_files.verified_model_path(source)
    try:
        settings = artifacts.read_json(run_dir / artifacts.CONFIG).get("settings")
    except FmnistError as exc:  # the model carries its own architecture: served, as predict takes it
        log.warning("%s; /v1/model gives no settings", exc)
        settings = None
    return run_dir.name, settings, run_dir / artifacts.METRICS


def _test_metrics(path: Path | None) -> dict[str, Any] | None:
    """The run's test metrics as they are now (`fmnist evaluate` may score it again while it is served); None where
    there are none, or they cannot be read."""
    try:
        return artifacts.read_json(path) if path is not None and path.is_file() else None
    except FmnistError:  # damaged, or replaced meanwhile by hand: the rest of the answer stands
        return None


def create_app(source: Path, max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH,
               decode_slots: int = DECODE_SLOTS, loopback_only: bool = False, allowed_hosts: Sequence[str] = (),
               allowed_origins: Sequence[str] = (), unsure_below: float = UNSURE_BELOW,
               on_ready: Callable[[], None] = lambda: None) -> FastAPI:
    """Build the app for a run's model (``source``: the run, or a model without its run as predict takes it); its
    lifespan loads the model once, starts the batcher, then calls ``on_ready``.
    ``loopback_only``: answer only requests that name this machine (localhost, 127.0.0.1, [::1]) as their host, or
    one of ``allowed_hosts`` (the public names a reverse proxy on this machine passes on);
    ``allowed_origins``: the web pages elsewhere (``*``: any) whose scripts may read the answers (CORS);
    ``unsure_below``: an answer whose top probability is under it is called unsure."""
    allowed_origins, allowed_hosts = browser_origins(allowed_origins), host_names(allowed_hosts)
    source = Path(source)
    run_name, settings, metrics_path = _run_details(source)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            classifier = Classifier(source)
            classifier.warm_up()
        except Exception as exc:
            app.state.startup_error = exc  # for serve(), which says it in one line instead of uvicorn's traceback
            raise
        import keras

        app.state.classifier = classifier
        app.state.metrics.model.info({"run": run_name or "", "model_sha256": classifier.sha256,
                                      "backend": keras.backend.backend()})
        # The compiled pass itself: every row was checked on its way in (Classifier.probabilities would check again).
        app.state.batcher = Batcher(classifier.forward, max_batch, app.state.metrics.forward_pass)
        app.state.answered = 0  # inputs answered: the batcher's rows add each explained one's blanked copies
        app.state.decoders = anyio.CapacityLimiter(decode_slots)  # made here: a limiter belongs to its event loop
        app.state.explaining = asyncio.Semaphore(1)
        worker = asyncio.create_task(app.state.batcher.run())
        on_ready()
        try:
            yield
        finally:
            worker.cancel()

    app = FastAPI(
        title="fmnist", lifespan=lifespan, redirect_slashes=False,  # /v1/predict/ is a JSON 404, not an empty 307
        description="Fashion-MNIST classifier: photos (PNG, JPEG, WebP, BMP, GIF) or 28x28 arrays in, "
                    "top-k classes out. The web page is at /.",
    )
    app.mount(STATIC_URL, RevalidatedFiles(directory=STATIC), name="static")
    app.add_middleware(AnswerCancelledRequests)
    app.add_middleware(WholeAnswers)
    if allowed_origins:
        app.add_middleware(WebPagesFrom, origins=allowed_origins)
    if loopback_only:  # a page that rebinds its name to this machine gets no preflight answered either
        app.add_middleware(LoopbackHostsOnly, also=allowed_hosts)
    app.state.metrics = ServeMetrics(app)  # around the rest: every request the app answers is counted
    app.add_middleware(HttpMethodsOnly, on_refused=app.state.metrics.refused)  # outermost: its refusals apart

    _answer_errors_as_json(app)

    def get_and_head(path: str, **options: Any) -> Callable:
        """A GET route that HEAD answers too (uptime monitors use it), the HEAD one kept out of the API's docs: one
        operation for both would give them the same id."""
        def register(endpoint: Callable) -> Callable:
            app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
            return app.get(path, **options)(endpoint)
        return register

    @get_and_head("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    @get_and_head("/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, the model's id, how many inputs were answered, and how many forward passes ran how many rows."""
        batcher = request.app.state.batcher
        return {"status": "ok", "model_sha256": request.app.state.classifier.sha256,
                "inputs": request.app.state.answered, "forward_passes": batcher.passes, "rows": batcher.rows}

    @get_and_head(METRICS_URL, response_class=PlainTextResponse)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics: requests by route, method and status with their seconds; inputs answered by top class
        and unsure; rows and seconds per forward pass; the model served."""
        return request.app.state.metrics.exposition(request.headers.get("accept"))

    @get_and_head("/v1/model")
    async def model_info(request: Request) -> dict[str, Any]:
        """The classes, and the run's settings and test metrics."""
        return {"model_sha256": request.app.state.classifier.sha256, "run": run_name,
                "classes": list(CLASS_NAMES), "input_shape": [IMAGE_SIDE, IMAGE_SIDE], "unsure_below": unsure_below,
                "max_inputs": MAX_INPUTS, "max_body_bytes": max_body_bytes,
                "settings": settings, "metrics": _test_metrics(metrics_path)}

    @app.post(
        "/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
        openapi_extra={"requestBody": PREDICT_BODY},
        responses={code: {"model": ErrorResponse} for code in (400, 408, 413, 415, 422)},
    )
    async def predict(
        request: Request,
        top_k: int = Query(3, ge=1, le=len(CLASS_NAMES), description="how many classes to list per input"),
        include_pixels: bool = Query(False, description="also return the 28x28 input the model saw"),
        explain: bool = Query(False, description="also return the occlusion map of the top class, 28x28: how much "
                                                 f"blanking the {PATCH}x{PATCH} patches over each pixel lowers its "
                                                 "probability, on average"),
    ) -> dict[str, Any]:
        """Classify images (multipart files) or arrays (JSON); answer top-k classes per input."""
        started = time.perf_counter()
        check_predict_query(request)
        names, images = await read_inputs(request, max_body_bytes)
        probabilities = await request.app.state.batcher.predict(images.reshape(len(images), -1))
        maps = await explain_inputs(request, images, probabilities.argmax(axis=1)) if explain else [None] * len(images)
        predictions = []
        for name, image, row, evidence in zip(names, images, probabilities, maps):
            answer = {"input": name, **describe(row, top_k, unsure_below)}
            request.app.state.metrics.answered(answer)
            if include_pixels:
                answer["pixels"] = np.round(image.astype(np.float64), 4).tolist()  # float32's 0.7843000292778015
            if evidence is not None:
                answer["evidence"] = np.round(evidence.astype(np.float64), 6).tolist()
            predictions.append(answer)
        request.app.state.answered += len(predictions)
        return {"model_sha256": request.app.state.classifier.sha256,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
                "predictions": predictions}

    return app


def serve_command(run: Path, runs_dir: Path = Path(RUNS_DIR), backend: str | None = None, **options: Any) -> None:
    """`fmnist serve`: serve ``run`` (a folder, a name in ``runs_dir``, or a model without its run) on ``backend``
    with :func:`serve`'s ``options`` until interrupted (its model's checksum is checked by :func:`create_app`)."""
    from fmnist.backend import activate

    source = runs.resolve_model(run, runs_dir)
    activate(backend)
    serve(source, **options)


class StoppableServer(uvicorn.Server):
    """uvicorn's server, stopped by the signals that stop every command; the stop is raised once the event loop has
    ended (uvicorn raises the signal again inside it, where the loop's teardown could print a traceback)."""

    stop_signal: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with stopping.delivered_to(self.handle_exit):
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_signal = sig
        super().handle_exit(sig, frame)


def serve(source: Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mib: int = MAX_UPLOAD_MIB,
          max_batch: int = MAX_BATCH, access_log: bool = True, allowed_hosts: Sequence[str] = (),
          allowed_origins: Sequence[str] = (), unsure_below: float = UNSURE_BELOW, proxy_prefix: str = "") -> None:
    """Serve ``source`` until interrupted; it and the ``allowed_*`` and ``unsure_below`` as :func:`create_app` takes
    them; ``proxy_prefix``: the path under which a reverse proxy that strips it serves the app (for /docs)."""
    if not 0 < port < 65536:
        raise FmnistError(f"port {port} is not between 1 and 65535")
    if not host.strip():
        raise FmnistError("the host is empty: give an address, such as 127.0.0.1 (this machine only) or 0.0.0.0 "
                          "(every interface)")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as a URL writes it
        host = host[1:-1]
    if re.search(r":\d+$", host) and not is_address(host):  # localhost:8080, [::1]:80, as in a URL
        raise FmnistError(f"--host {host} holds a port: give the address alone, and the port with --port")
    loopback = is_loopback(host)
    if allowed_hosts and not loopback:
        raise FmnistError(f"--allow-host is for a server on this machine alone: served on {host}, it answers every "
                          "name already")
    prefix = root_path(proxy_prefix)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    app = create_app(source, max_upload_mib * MIB, max_batch, loopback_only=loopback, allowed_hosts=allowed_hosts,
                     allowed_origins=allowed_origins, unsure_below=unsure_below,
                     on_ready=lambda: log.info("serving %s on %s (API docs at /docs)", source, url))
    # A malformed form is answered 400 with its reason; python-multipart would also log its parser's complaint.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    quiet_pillow_warnings()
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # a log, like every command's progress
    server = StoppableServer(uvicorn.Config(
        app, host=host, port=port, access_log=access_log, http=json_http_protocol(on_refused=app.state.metrics.refused),
        log_level="info" if access_log else "warning", log_config=log_config, use_colors=sys.stderr.isatty(),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S, root_path=prefix))

    def in_one_line(record: logging.LogRecord) -> bool:
        """uvicorn's log without its tracebacks for a failed start-up (said below) and for requests it cancelled."""
        if hasattr(app.state, "startup_error"):
            return False
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):  # still running after the grace
            record.msg, record.args = "a request still running %d s after the stop was cancelled", (SHUTDOWN_GRACE_S,)
            record.exc_info = record.exc_text = None
        elif server.force_exit and "CancelledError" in str(record.msg):  # the app's shutdown, cut short: its traceback
            record.msg, record.args = "stopped at once by a second stop signal, without waiting for requests", ()
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True

    # Taken before the model loads (in the app's lifespan) and held until the server ends: a taken port is one line
    # at once, and no other server can take it meanwhile (uvicorn would bind only after the load, and exit with its
    # own message).
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
        hint = "; pick another with --port" if exc.errno == errno.EADDRINUSE else ""
        raise FmnistError(f"cannot listen on {host} port {port}: {reason}{hint}") from None
    if not loopback:
        log.warning("listening on %s: other machines can reach this server", host)
    log.info("loading the model of %s", source)  # said served once it answers: a model may yet fail to load
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(in_one_line)
    try:
        server.run(sockets=[listener])
    except SystemExit:  # uvicorn's exit when the start-up failed
        if not hasattr(app.state, "startup_error"):
            raise
    finally:
        uvicorn_log.removeFilter(in_one_line)
        listener.close()
    if server.stop_signal is not None:
        stopping.stop(server.stop_signal)
    failure = getattr(app.state, "startup_error", None)
    if failure is not None:
        if isinstance(failure, FmnistError):
            raise failure
        raise FmnistError(f"the model of {source} could not start: {type(failure).__name__}: {first_line(failure)}"
                          ) from failure
