"""`fmnist serve`: a run's model over HTTP (FastAPI), with a web page to try it on photos and drawings."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
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
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fmnist import artifacts, model_files, run_lookup, runs, stopping
from fmnist.defaults import MAX_BATCH, MAX_INPUTS, MAX_UPLOAD_MIB, MIB, PLAIN_LOG, RUNS_DIR, TOP_K, UNSURE_BELOW
from fmnist.errors import FmnistError, UsageError, first_line
from fmnist.explain import PATCH, occlusion_batches
from fmnist.facts import CLASS_NAMES, IMAGE_SIDE
from fmnist.images import BadInput, quiet_pillow_warnings
from fmnist.predict import Classifier, check_unsure_below, describe
from fmnist.serve_http import (PARSER_REFUSED, SHUTDOWN_GRACE_S, AnswerCancelledRequests, HttpMethodsOnly,
                               LoopbackHostsOnly, WebPagesFrom, WholeAnswers, browser_origins, error, host_names,
                               is_address, is_loopback, json_http_protocol, root_path)
from fmnist.serve_inputs import check_predict_query, read_inputs
from fmnist.serve_metrics import METRICS_URL, ServeMetrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_URL = "/static"  # where the page's files are served from
# The page's files are checked with the server at every load (a 304 when unchanged): a browser's cached app.js would
# otherwise outlive an upgrade of fmnist, beside the new index.html.
REVALIDATE = {"Cache-Control": "no-cache"}
MAX_BODY_BYTES = MAX_UPLOAD_MIB * MIB
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


class RevalidatedFiles(StaticFiles):
    """The page's files, each answer marked to be checked with the server before a browser reuses it."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


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
TOP_K_RANGE = f"a whole number from 1 to {len(CLASS_NAMES)}"


def _in_words(error: dict[str, Any]) -> str:
    """A query parameter refused, said as the command line says it ("must be a whole number from 1 to 10, not 'abc'"),
    not in pydantic's words; anything else as pydantic says it."""
    given = error.get("input")
    if error["loc"][-1] == "top_k" and error["type"] in ("int_parsing", "greater_than_equal", "less_than_equal"):
        return f"must be {TOP_K_RANGE}, not {given!r}"
    if error["type"] == "bool_parsing":
        return f"must be true or false, not {given!r}"
    return error["msg"]


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error, ours or the framework's, as a status with a JSON body {"error": "..."}."""

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return error(exc.status, str(exc), request.scope)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Under --root-path uvicorn puts the prefix in front of the path; the routes' paths are without it. Inside the
        # static files' mount, root_path has the mount's path added: app_root_path is the server's own.
        prefix = request.scope.get("app_root_path", request.scope.get("root_path", ""))
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route: say which there are
            answered = [f"{method} {prefix}{route.path}" for route in request.app.routes
                        if isinstance(route, APIRoute) and route.include_in_schema for method in sorted(route.methods)]
            # A request sent past the proxy, straight to the server, with the prefix the proxy would have removed.
            doubled = (f" (the path begins with --root-path {prefix} twice: the server takes requests whose prefix "
                       f"the proxy has removed; sent to the server itself, leave {prefix} out)"
                       if prefix and request.url.path.startswith(f"{prefix}{prefix}/") else "")
            return error(404, f"nothing at {request.url.path}{doubled}: this server answers {', '.join(answered)}, "
                              f"with its web page at {prefix}/ and the API's documentation at {prefix}/docs",
                         request.scope)
        if exc.status_code != 405:
            answer = error(exc.status_code, str(exc.detail), request.scope)
            answer.headers.update(exc.headers or {})
            return answer
        # Starlette's Allow names one route's methods: GET and HEAD are two routes here; the static files' mount
        # has no methods of its own to name.
        path = request.url.path.removeprefix(prefix)
        allowed = ", ".join(sorted(
            {method for route in request.app.routes if getattr(route, "path", None) == path
             for method in getattr(route, "methods", None) or ()}
            or ({"GET", "HEAD"} if path.startswith(f"{STATIC_URL}/") else set())))
        answer = error(405, f"{request.method} is not answered on {path}: use {allowed}", request.scope)
        answer.headers["allow"] = allowed
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # ("query", "top_k") said as the other refusals say it: "query parameter top_k".
        problems = "; ".join(f"{' '.join([PLACES.get(e['loc'][0], e['loc'][0]), *map(str, e['loc'][1:])])}: "
                             f"{_in_words(e)}" for e in exc.errors())
        return error(422, problems, request.scope)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        if PARSER_REFUSED not in request.scope.get("state", {}):  # answered 400 by the protocol, and logged there
            log.info("a client went away before %s was answered", request.url.path)  # nobody is left to read it
        return error(400, "the client went away before its request was answered")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__})")


def _run_details(source: Path) -> tuple[str | None, dict | None, Path | None]:
    """The name, settings and metrics file of the run whose model ``source`` is (its folder or its model.keras), all
    None for a model without its run; a missing or changed model refused now, not as a failed start-up."""
    if run_lookup.is_model_alone(source):
        runs.require_utf8_name(runs.absolute(source))  # said in the log and in errors, as a run's is
        model_files.verified_model_path(source)
        return None, None, None
    run_dir = runs.require_run_dir(source.parent if source.suffix == ".keras" and source.is_file() else source)
    model_files.verified_model_path(source)
    try:
        settings = artifacts.read_json(run_dir / artifacts.CONFIG).get("settings")
    except FmnistError:  # the model carries its own architecture: served, as predict takes it (loading it warns)
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
    lifespan loads the model once, starts the batcher, then calls ``on_ready``."""
    # ``loopback_only``: answer only requests that name this machine (localhost, 127.0.0.1, [::1]) as their host, or one
    # of ``allowed_hosts`` (the public names a reverse proxy on this machine passes on); ``allowed_origins``: the web
    # pages elsewhere (``*``: any) whose scripts may read the answers (CORS); ``unsure_below``: an answer whose top
    # probability is under it is called unsure.
    check_unsure_below(unsure_below)
    allowed_origins, allowed_hosts = browser_origins(allowed_origins), host_names(allowed_hosts)
    source = Path(source)
    run_name, settings, metrics_path = _run_details(source)
    app = FastAPI(
        title="fmnist", lifespan=_lifespan(source, run_name, max_batch, decode_slots, on_ready),
        redirect_slashes=False,  # /v1/predict/ is a JSON 404, not an empty 307
        description="Fashion-MNIST classifier: photos (PNG, JPEG, WebP, BMP, GIF) or 28x28 arrays in, "
                    "top-k classes out. The web page is at /.",
    )
    app.mount(STATIC_URL, RevalidatedFiles(directory=STATIC), name="static")
    _add_middleware(app, loopback_only, allowed_hosts, allowed_origins)
    _answer_errors_as_json(app)
    model_facts = {"run": run_name, "classes": list(CLASS_NAMES), "input_shape": [IMAGE_SIDE, IMAGE_SIDE],
                   "unsure_below": unsure_below, "max_inputs": MAX_INPUTS, "max_body_bytes": max_body_bytes,
                   "settings": settings}
    _add_info_routes(app, model_facts, metrics_path)
    _add_predict_route(app, max_body_bytes, unsure_below)
    return app


def _lifespan(source: Path, run_name: str | None, max_batch: int, decode_slots: int,
              on_ready: Callable[[], None]) -> Callable[[FastAPI], Any]:
    """The app's lifespan: the model loaded and warmed up, the batcher started, ``on_ready`` called; a model that
    fails to load is kept in ``app.state.startup_error`` for :func:`serve` to say in one line."""
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

    return lifespan


def _add_middleware(app: FastAPI, loopback_only: bool, allowed_hosts: Sequence[str],
                    allowed_origins: Sequence[str]) -> None:
    """The app's middleware, innermost first (each one added wraps those before it), and its metrics."""
    app.add_middleware(AnswerCancelledRequests)
    app.add_middleware(WholeAnswers)
    if allowed_origins:
        app.add_middleware(WebPagesFrom, origins=allowed_origins)
    if loopback_only:  # a page that rebinds its name to this machine gets no preflight answered either
        app.add_middleware(LoopbackHostsOnly, also=allowed_hosts)
    app.state.metrics = ServeMetrics(app)  # around the rest: every request the app answers is counted
    app.add_middleware(HttpMethodsOnly, on_refused=app.state.metrics.refused)  # outermost: its refusals apart


def _get_and_head(app: FastAPI, path: str, **options: Any) -> Callable:
    """A GET route that HEAD answers too (uptime monitors use it), the HEAD one kept out of the API's docs: one
    operation for both would give them the same id."""
    def register(endpoint: Callable) -> Callable:
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return app.get(path, **options)(endpoint)
    return register


def _add_info_routes(app: FastAPI, model_facts: dict[str, Any], metrics_path: Path | None) -> None:
    """The web page, health, Prometheus metrics and the model's description (``model_facts`` and its test
    metrics as they are when asked)."""
    @_get_and_head(app, "/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    @_get_and_head(app, "/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, the model's id, how many inputs were answered, and how many forward passes ran how many rows."""
        batcher = request.app.state.batcher
        return {"status": "ok", "model_sha256": request.app.state.classifier.sha256,
                "inputs": request.app.state.answered, "forward_passes": batcher.passes, "rows": batcher.rows}

    @_get_and_head(app, METRICS_URL, response_class=PlainTextResponse)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics: requests by route, method and status with their seconds; inputs answered by top class
        and unsure; rows and seconds per forward pass; the model served."""
        return request.app.state.metrics.exposition(request.headers.get("accept"))

    @_get_and_head(app, "/v1/model")
    async def model_info(request: Request) -> dict[str, Any]:
        """The classes, and the run's settings and test metrics."""
        return {"model_sha256": request.app.state.classifier.sha256, **model_facts,
                "metrics": _test_metrics(metrics_path)}


def _add_predict_route(app: FastAPI, max_body_bytes: int, unsure_below: float) -> None:
    """POST /v1/predict: images or arrays in, the top classes of each out."""
    @app.post(
        "/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
        openapi_extra={"requestBody": PREDICT_BODY},
        responses={code: {"model": ErrorResponse} for code in (400, 408, 413, 415, 422)},
    )
    async def predict(
        request: Request,
        top_k: int = Query(TOP_K, ge=1, le=len(CLASS_NAMES), description="how many classes to list per input"),
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


def serve_command(run: Path, runs_dir: Path = Path(RUNS_DIR), backend: str | None = None, **options: Any) -> None:
    """`fmnist serve`: serve ``run`` (a folder, a name in ``runs_dir``, or a model without its run) on ``backend``
    with :func:`serve`'s ``options`` until interrupted (its model's checksum is checked by :func:`create_app`)."""
    from fmnist.backend import activate

    source = run_lookup.resolve_model(run, runs_dir)
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
    if not 0 <= port < 65536:
        raise UsageError(f"port {port} is not between 0 (a free one) and 65535")
    if not host.strip():
        raise UsageError("the host is empty: give an address, such as 127.0.0.1 (this machine only) or 0.0.0.0 "
                          "(every interface)")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as a URL writes it
        host = host[1:-1]
    if re.fullmatch(r"\[[^][]*\]:\d+", host) or re.fullmatch(r"[^][]*:\d+", host) and not is_address(host):
        # localhost:8080, [::1]:80, as in a URL
        raise UsageError(f"--host {host} holds a port: give the address alone, and the port with --port")
    if "[" in host or "]" in host:
        raise UsageError(f"--host {host} has a bracket without its pair: give an IPv6 address with both, or none, "
                          "such as [::1] or ::1")
    loopback = is_loopback(host)
    if allowed_hosts and not loopback:
        raise UsageError(f"--allow-host is for a server on this machine alone: served on {host}, it answers every "
                          "name already")
    prefix = root_path(proxy_prefix)
    address: list[str] = []  # the URL, once the port is taken (a free one, for port 0)
    app = create_app(source, max_upload_mib * MIB, max_batch, loopback_only=loopback, allowed_hosts=allowed_hosts,
                     allowed_origins=allowed_origins, unsure_below=unsure_below,
                     # A free port's number is said under -q too: no one could reach the server without it.
                     on_ready=lambda: log.log(logging.WARNING if port == 0 else logging.INFO,
                                              "serving %s on %s (API docs at /docs)", runs.absolute(source), address[0],
                                              extra={PLAIN_LOG: True}))
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
            record.msg, record.args = ("a request still running at the second stop signal was cancelled", ()
                                       ) if server.force_exit else (
                "a request still running %d s after the stop was cancelled", (SHUTDOWN_GRACE_S,))
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
        hint = {errno.EADDRINUSE: "; pick another with --port",
                errno.EADDRNOTAVAIL: ": it is not an address of this machine; give one of its own to --host, or "
                                     "127.0.0.1 (this machine alone) or 0.0.0.0 (all its addresses)"}.get(exc.errno, "")
        raise FmnistError(f"cannot listen on {host} port {port}: {reason}{hint}") from None
    address.append(f"http://{f'[{host}]' if ':' in host else host}:{listener.getsockname()[1]}/")
    if not loopback:
        log.warning("listening on %s: other machines can reach this server", host)
    # Said to be served once it answers: a model may yet fail to load.
    log.info("loading the model of %s", runs.absolute(source))
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
