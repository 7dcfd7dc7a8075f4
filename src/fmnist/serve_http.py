"""The HTTP side of `fmnist serve`, apart from the model: every answer uvicorn gives before or after the app is JSON,
and a request's line and headers are bounded in time and size."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from http import HTTPStatus
from typing import Callable, Sequence
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from fmnist.errors import UsageError, one_line

log = logging.getLogger(__name__)

# A request line and headers (which should come in one packet) that have not arrived by then are answered 408, so a
# stalled client holds no connection for ever. They have a size bound too: httptools sets none of its own, and a
# header line sent without end froze the server (h11 refuses headers over 16 KiB by itself).
HEADER_TIMEOUT_S = 10
MAX_HEADER_BYTES = 32 * 1024
# A stopped server waits this long for requests still in flight, then cancels the rest.
SHUTDOWN_GRACE_S = 5
# In a request's state, why the parser refused its body (answered then): the app's read of it ends as if the client
# had gone. (Its state, shared by every copy of the scope a middleware makes.)
PARSER_REFUSED = "fmnist_parser_refused"


class AnswerCancelledRequests:
    """ASGI middleware: a request still unanswered when a stopping server cancels it (after SHUTDOWN_GRACE_S) gets a
    JSON 503, where uvicorn would answer a plain-text 500."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        answered = False

        async def send_noting_answer(message: dict) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_answer)
        except asyncio.CancelledError:
            if scope["type"] == "http" and not answered:
                answer = error(503, "the server is stopping; send the request again once it is back")
                answer.headers["connection"] = "close"
                await answer(scope, receive, send)
            raise


class WholeAnswers:
    """ASGI middleware: every answer whole, whatever Range a request asks, and none offered (Accept-Ranges)."""
    # Starlette answers a Range it cannot serve (a unit other than bytes, an end before its start) in plain text, not
    # JSON; the page's files are a few kB.

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_offering_no_ranges(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(name, value) for name, value in message.get("headers", [])
                                                  if name.lower() != b"accept-ranges"]}
            await send(message)

        scope = {**scope, "headers": [(name, value) for name, value in scope["headers"] if name != b"range"]}
        await self.app(scope, receive, send_offering_no_ranges)


def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address (::1 ends in what looks like a port), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, bracketed or not, or a name) is this machine's own: localhost, 127.x.x.x, ::1."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower().removesuffix(".") == "localhost"  # "localhost." too, as a name given with --allow-host is


def host_names(names: Sequence[str]) -> list[str]:
    """``names`` as a Host header gives them, lower case and without a final dot; one with a scheme, a port, a path or
    a character no host name holds is refused."""
    kept = []
    for name in names:
        plain = name.strip().lower().removesuffix(".")
        if not (re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", plain)
                or is_address(plain.strip("[]"))):
            raise UsageError(f"--allow-host {name!r} is not a host name: give it as a Host header names it, without "
                              "scheme, port or path, such as fmnist.example.org")
        bare = plain.strip("[]")
        kept.append(f"[{bare}]" if ":" in bare else bare)  # an address as a Host header has it: IPv6 in brackets
    return kept


def root_path(path: str) -> str:
    """A reverse proxy's path prefix as ASGI's root_path takes it: "/fmnist", one slash first and none last ("" for
    none)."""
    path = path.strip()
    # uvicorn sends the prefix in ASCII: another character would fail every request.
    if any(c in path for c in "?#") or any(c.isspace() for c in path) or not path.isascii():
        raise UsageError(f"--root-path {path!r} is not a path: give the prefix alone, such as /fmnist")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):  # the whole URL: /docs would look for its path after it
        raise UsageError(f"--root-path {path!r} is a URL: give its path alone, such as /fmnist")
    return "/" + path.strip("/") if path.strip("/") else ""


class LoopbackHostsOnly:
    """ASGI middleware for a server listening on this machine alone: a request that names another host than this machine
    or one of ``also`` (a reverse proxy's public name) is refused."""
    # A web page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) could otherwise read the answers; the
    # browser still sends that name.

    def __init__(self, app: Callable, also: Sequence[str] = ()) -> None:
        self.app, self.also = app, frozenset(also)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        host = dict(scope.get("headers", [])).get(b"host") if scope["type"] == "http" else None
        name = None if host is None else re.sub(r":\d*$", "", host.decode("latin-1"))
        if name is not None and not is_loopback(name) and name.lower().removesuffix(".") not in self.also:
            answer = error(400, f"the Host header names {name!r}: this server listens on this machine alone and "
                                "answers only localhost, 127.0.0.1 or [::1] (so that no other web page can read it); "
                                "behind a reverse proxy that passes this name, serve with --allow-host NAME; serve "
                                "with --host 0.0.0.0 to be reached by other names", scope)
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class HttpMethodsOnly:
    """ASGI middleware: a method other than HTTP's own (RFC 9110's and PATCH), such as WebDAV's, is refused (405)
    before the app and told to ``on_refused``: each would add series to the requests' metrics, labelled by method."""

    def __init__(self, app: Callable, on_refused: Callable[[int], None] = lambda status: None) -> None:
        self.app, self.on_refused = app, on_refused

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] not in HTTP_METHODS:
            self.on_refused(405)
            answer = error(405, f"{scope['method'][:40]!r} is not a method this server knows: it answers GET, HEAD "
                                "and POST", scope)
            answer.headers["allow"] = "GET, HEAD, POST"
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def error(status: int, message: str, scope: dict | None = None) -> JSONResponse:
    """The answer {"error": message}; with the request's ``scope``, its reason goes to the log too, beside uvicorn's
    access line, which names only the status."""
    if scope is not None:  # a path of 32 KiB, which a 404's message repeats, logged in part
        # A slow client's, as the HTTP layer's 408 and 431, said under -q too: the server's trouble, not one request's.
        log.log(logging.WARNING if status == 408 else logging.INFO, "refused %s %s with %d: %s", scope.get("method"),
                _cut(one_line(str(scope.get("path"))), 200), status, _cut(one_line(message), 1000))
    return JSONResponse({"error": message}, status_code=status)


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else f"{text[:most - 1]}…"


DEFAULT_PORTS = {"http": 80, "https": 443}
CORS_METHODS = ("GET", "HEAD", "POST")


def browser_origins(origins: Sequence[str]) -> list[str]:
    """The origins as a browser sends them (lower case, no default port), which CORS compares as text; one no browser
    sends (a path, even "/", a wildcard in a host) refused."""
    said = []
    for origin in origins:
        parts = urlsplit(origin.strip())
        try:
            port = parts.port
        except ValueError:  # not a number, or over 65535
            port = -1
        if origin == "*":
            said.append(origin)
        elif (parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or "*" in parts.netloc or port == -1
              or parts.path or parts.query or parts.fragment or parts.username or parts.password):
            raise UsageError(f"--allow-origin {origin!r} is not an origin as a browser sends it: give scheme, host "
                              "and port alone, such as http://localhost:3000 (no path, no '/' at the end), or * for "
                              "every page")
        else:
            scheme, host = parts.scheme.lower(), parts.hostname  # urlsplit gives the host in lower case
            host = f"[{host}]" if ":" in host else host
            said.append(f"{scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS[scheme]) else f":{port}"))
    return said


class WebPagesFrom(CORSMiddleware):
    """Starlette's CORS for the pages of ``origins`` elsewhere (another port is another origin) that call the API: its
    refusal of a preflight in JSON too, where Starlette's is plain text."""

    def __init__(self, app: Callable, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=origins, allow_methods=CORS_METHODS, allow_headers=("*",))

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refusal = bytes(response.body).decode()  # "Disallowed CORS origin, method": what failed
        allowed = [f"the origins {', '.join(self.allow_origins)} (--allow-origin)"] if "origin" in refusal else []
        allowed += [f"the methods {', '.join(CORS_METHODS)}"] if "method" in refusal else []
        refused = error(response.status_code, f"{refusal} for a call from a web page: this server allows "
                                              f"{' and '.join(allowed)}",
                        {"method": "OPTIONS", "path": "(a web page's preflight)"})  # Starlette gives no path here
        refused.headers["vary"] = "Origin"
        return refused


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers (lower-case names, as uvicorn keeps them) say a body follows: chunked
    (Transfer-Encoding wins over a Content-Length), or a Content-Length above 0; neither is HTTP/1.1's empty body."""
    fields = dict(headers)
    if b"transfer-encoding" in fields:
        return True
    length = fields.get(b"content-length", b"").strip()
    return length.isdigit() and int(length) > 0


def upgrade_with_a_body(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The protocol a request with a body asks to switch to, other than WebSocket (h2c: curl --http2 on http://,
    Java's HttpClient), if it does; ``headers`` with lower-case names, as uvicorn keeps them."""
    fields = dict(headers)
    connection = {token.strip().lower() for name, value in headers if name == b"connection"  # each such header
                  for token in value.split(b",")}
    protocol = fields.get(b"upgrade", b"").strip().lower()
    if b"upgrade" in connection and protocol not in (b"", b"websocket") and declares_body(headers):
        return protocol.decode("latin-1")
    return None


def json_http_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES,
                       base: type | None = None, on_refused: Callable[[int], None] = lambda status: None) -> type:
    """uvicorn's HTTP protocol ``base`` (httptools' where installed, else h11's) with a request's line and headers
    bounded in time and bytes, and what it answers itself as JSON, each refusal's status told to ``on_refused``."""
    # What it answers itself: a request it cannot parse, or one past those bounds.
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base = base or AutoHTTPProtocol
    # httptools calls back when a request begins and when its headers end, so they are measured wherever they arrive,
    # pipelined behind a running request too. h11 does not, but refuses over 16 KiB itself; with it, the bytes are
    # counted while no request is running or still sending its body.
    parser_calls_back = hasattr(base, "on_headers_complete")
    too_large = f"the request line and headers are over {max_header_bytes} bytes"

    class JsonHttpProtocol(base):  # type: ignore[misc, valid-type]
        header_timer: asyncio.TimerHandle | None = None
        header_bytes = 0
        in_headers = False  # httptools: from a request's first byte to the end of its headers
        began_in_this_read = False  # httptools: the read being parsed holds the request's first byte,
        body_bytes_in_this_read = body_bytes_before_it = 0  # after so many bytes of the body before it
        refusal: tuple[int, str] | None = None  # why the parser was stopped, for send_400_response to say

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_header_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:  # httptools
            super().on_message_begin()
            self.in_headers, self.began_in_this_read = True, True
            self.body_bytes_before_it = self.body_bytes_in_this_read

        def on_body(self, body: bytes) -> None:  # httptools
            self.body_bytes_in_this_read += len(body)
            super().on_body(body)

        def on_headers_complete(self) -> None:  # httptools
            self.in_headers, self.header_bytes = False, 0
            self.stop_header_timer()
            # Each line's colon and line end counted too (3 bytes): thousands of headers "a:b" are mostly those.
            if len(self.url) + sum(len(name) + len(value) + 3 for name, value in self.headers) > max_header_bytes:
                self.refusal = (431, too_large)
                raise ValueError(self.refusal[1])  # stops the parser, and uvicorn calls send_400_response
            switch_to = upgrade_with_a_body(self.headers)
            if switch_to:  # httptools would stop at the headers, and the app would read an empty body
                self.refusal = (400, f"a request with a body that asks to switch to another protocol (Upgrade: "
                                     f"{switch_to}) is not served: send it as plain HTTP/1.1 (curl: leave out --http2)")
                raise ValueError(self.refusal[1])
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            between_requests = self.between_requests()
            self.began_in_this_read, self.body_bytes_in_this_read = False, 0
            super().data_received(data)
            if self.transport.is_closing():
                return
            if parser_calls_back:
                if self.in_headers and self.began_in_this_read:  # the read may hold the end of the body before it
                    self.header_bytes = len(data) - self.body_bytes_before_it
                elif self.in_headers:
                    self.header_bytes += len(data)
            elif between_requests and self.between_requests():
                self.header_bytes += len(data)
            elif between_requests:  # this data completed them
                self.stop_header_timer()
            if self.header_bytes > max_header_bytes:
                self.refuse(431, too_large)

        def answering(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def between_requests(self) -> bool:
            """No request is being answered or still sending its body (one answered early, say with a 413)."""
            return self.cycle is None or (self.cycle.response_complete and not self.cycle.more_body)

        def await_headers(self) -> None:
            self.stop_header_timer()
            if not parser_calls_back:  # httptools counts from each request's first byte
                self.header_bytes = 0
            self.header_timer = self.loop.call_later(header_timeout_s, self.headers_too_slow)

        def stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_too_slow(self) -> None:
            if self.transport.is_closing():
                return
            if self.answering():  # headers pipelined behind it are timed once it is answered
                self.await_headers()
            elif self.header_bytes:
                self.refuse(408, f"the request line and headers did not arrive within {header_timeout_s:g} s")
            else:  # idle, or the rest of a body answered early: nothing is waiting for an answer
                self.transport.close()

        def body_unanswered(self) -> bool:
            """A request's body is still arriving, no request before it awaits its answer (httptools queues one
            pipelined behind another), and its own answer has not begun: what the parser refuses now is that body."""
            return (self.cycle is not None and self.cycle.more_body and not self.cycle.response_started
                    and not getattr(self, "pipeline", None))

        def send_400_response(self, msg: str) -> None:
            if self.refusal is not None:
                self.refuse(*self.refusal)
            elif self.body_unanswered():
                self.refuse(400, f"{msg.rstrip('.')}: its body is not framed as its headers say (its chunks, for "
                                 "Transfer-Encoding: chunked)")
            else:
                self.refuse(400, f"{msg.rstrip('.')}: check the request line and headers, such as Content-Length")

        def refuse(self, status: int, message: str) -> None:
            """Answer ``{"error": message}`` and close; only close where another answer is under way or given for the
            bytes refused (the rest of a body the app answered early), which the client would take this one for."""
            self.stop_header_timer()
            reached_app = self.body_unanswered()
            if reached_app:  # the app, waiting for the rest, finds the connection closed: not the client's doing
                self.cycle.scope.setdefault("state", {})[PARSER_REFUSED] = message
            answered_early = self.cycle is not None and self.cycle.response_complete and self.cycle.more_body
            if not (reached_app or answered_early):  # those are the app's to count, by the status it answers
                on_refused(status)
            if status != 400:  # uvicorn logs the 400s itself
                log.warning("answered %d to %s: %s", status, ":".join(map(str, self.client or ("a client",))), message)
            if reached_app or self.between_requests():
                body = json.dumps({"error": message}, separators=(",", ":")).encode()  # compact, as the app's answers
                head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                        b"connection: close\r\n\r\n" % (status, HTTPStatus(status).phrase.encode(), len(body)))
                self.transport.write(head + body)  # then closed, so the protocol's own state no longer matters
            self.transport.close()

    return JsonHttpProtocol
