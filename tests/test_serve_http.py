import asyncio
import contextlib
import json
import logging
import re
import socket
import time

import pytest

from conftest import start_server, uvicorn_in_thread
from fmnist.serve import create_app
from fmnist.serve_http import declares_body, json_http_protocol
from fmnist.serve_inputs import EMPTY_BODY

BODY_LIMIT = 1024 * 1024
PARSERS = ("httptools", "h11")


@contextlib.contextmanager
def serving_in_process(app, parser: str, header_timeout_s: float = 30, max_header_bytes: int = 8 * 1024):
    """uvicorn serving ``app`` on a free port in a thread, on ``parser``'s protocol as fmnist extends it (its refusals
    counted in the app's metrics, as `fmnist serve` does): the port."""
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    base = {"httptools": HttpToolsProtocol, "h11": H11Protocol}[parser]
    with uvicorn_in_thread(app, http=json_http_protocol(header_timeout_s, max_header_bytes, base, **(
            {"on_refused": app.state.metrics.refused} if hasattr(app, "state") else {}))) as port:
        yield port


def raw_exchange(port: int, *parts: bytes, pause_s: float = 0.0) -> bytes:
    """Send ``parts`` on one connection, ``pause_s`` apart, then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        for part in parts:
            connection.sendall(part)
            time.sleep(pause_s)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def json_answer(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()  # written as the app's answers are
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("parser", PARSERS)
def test_what_the_http_parser_answers_itself_is_json_too(tiny_run_dir, parser):
    """A request the parser refuses, an endless header and headers that stall never reach the app: uvicorn answered
    the first in plain text, and with httptools the second froze the server and the third held a connection for ever."""
    import httpx

    with serving_in_process(create_app(tiny_run_dir), parser, header_timeout_s=1.0, max_header_bytes=8 * 1024) as port:
        refused = {400: 0, 405: 0, 408: 0, 431: 0}
        for request in (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
                        b"NOT HTTP AT ALL\r\n\r\n"):
            status, body = json_answer(raw_exchange(port, request))
            assert status == 400 and "check the request line and headers" in body["error"]
            refused[status] += 1
        status, body = json_answer(raw_exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: ",
                                                *[b"a" * 4096] * 2))  # over the bound with the last part
        assert (status, body) == (431, {"error": "the request line and headers are over 8192 bytes"})
        refused[status] += 1
        if parser == "httptools":  # whole headers in one read are measured too (h11 bounds only a partial request)
            for headers in (b"X-Big: %s\r\n" % (b"a" * 9000), b"a:b\r\n" * 2100):  # many short ones: 10.5 kB
                request = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % headers
                status, body = json_answer(raw_exchange(port, request))
                assert (status, body) == (431, {"error": "the request line and headers are over 8192 bytes"})
                refused[status] += 1
        started = time.monotonic()
        status, body = json_answer(raw_exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"))
        assert (status, body) == (408, {"error": "the request line and headers did not arrive within 1 s"})
        assert time.monotonic() - started < 10
        refused[status] += 1
        assert raw_exchange(port) == b""  # an idle connection is closed without an answer it did not ask for
        # The bound is on the headers alone: a body may come slowly, and a kept-alive connection serves on.
        request = (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n")
        body = json.dumps({"inputs": [[0] * 784]}).encode()
        answer = raw_exchange(port, request % len(body) + body[:10], body[10:] + b"GET /v1/health HTTP/1.1\r\n"
                              b"Host: localhost\r\nConnection: close\r\n\r\n", pause_s=2.0)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 200 ") == 2, answer
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=10).status_code == 200  # and it serves on
        # Never in the app's counts of requests answered: counted apart, for a scraper to see.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        counted = {int(status): float(value) for status, value in
                   re.findall(r'^fmnist_http_refused_total\{status="(\d+)"\} (\S+)$', metrics, re.MULTILINE)}
        assert counted == refused, metrics


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_whose_chunks_are_malformed_is_answered_400_in_json_not_taken_for_a_client_gone(tiny_run_dir, parser,
                                                                                                caplog):
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with caplog.at_level(logging.INFO, logger="fmnist"):
        with serving_in_process(create_app(tiny_run_dir), parser) as port:
            # The chunk's size in hexadecimal, "ZZ" none; sent after the headers, as the app begins to read the body.
            status, body = json_answer(raw_exchange(port, head, b"ZZ\r\nabc\r\n0\r\n\r\n", pause_s=0.5))
            assert status == 400 and "its body is not framed as its headers say" in body["error"], body
            good = json.dumps({"inputs": [[0] * 784]}).encode()
            answer = raw_exchange(port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good))
            assert answer.startswith(b"HTTP/1.1 200 "), answer  # chunks well formed are read
            metrics = raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert "went away" not in caplog.text
    # Counted by the app, as the 400 it answered, not also among those refused before they reached it.
    assert re.search(rb'^fmnist_http_refused_total\{status="400"\} 0\.0$', metrics, re.MULTILINE), metrics


async def early_app(scope, receive, send):
    """An ASGI app that answers 404 at once, without reading the request's body."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})


@pytest.mark.parametrize("parser", PARSERS)
def test_the_malformed_rest_of_a_body_answered_early_gets_no_second_answer(parser):
    head = b"POST /gone HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    with serving_in_process(early_app, parser) as port:
        answer = raw_exchange(port, head, b"ZZ\r\nabc\r\n0\r\n\r\n", pause_s=0.5)
    assert answer.startswith(b"HTTP/1.1 404 ") and answer.count(b"HTTP/1.1") == 1, answer  # a 400 after it: the next's


async def slow_app(scope, receive, send):
    """An ASGI app that answers 'ok' after a second (long enough for a client to send more behind its request)."""
    if scope["type"] == "http":
        await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("parser", PARSERS)
def test_a_malformed_body_pipelined_behind_a_running_request_is_never_answered_in_its_place(parser):
    behind = (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"ZZ\r\nabc\r\n0\r\n\r\n")
    with serving_in_process(slow_app, parser) as port:
        answer = raw_exchange(port, b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n" + behind)
    # The first answer is the first request's, or the connection closes without one (httptools): a 400 there would be
    # read as the GET's.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 200 "), answer


def test_headers_pipelined_behind_a_running_request_are_bounded_too():
    """httptools parses what comes behind a running request: an endless header there was never counted."""
    with serving_in_process(slow_app, "httptools", max_header_bytes=8 * 1024) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
            for _ in range(3):
                connection.sendall(b"a" * 4096)
            answer = b""
            # Closed, the running request's answer cut short or not begun; a reset when the close found unread bytes
            with contextlib.suppress(ConnectionResetError):
                while chunk := connection.recv(65536):
                    answer += chunk
    assert b"HTTP/1.1 200" not in answer and answer.count(b"HTTP/1.1 ") <= 1, answer


@pytest.mark.parametrize("parser", PARSERS)
def test_a_large_body_and_a_request_pipelined_behind_it_are_both_answered(tiny_run_dir, parser):
    """The read that begins the second request also holds the end of the first one's body: not its headers."""
    body = json.dumps({"inputs": [[0] * 784]}).encode() + b" " * 20_000  # JSON allows the spaces
    with serving_in_process(create_app(tiny_run_dir), parser, max_header_bytes=8 * 1024) as port:
        answer = raw_exchange(
            port, b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%sGET /v1/health HTTP/1.1\r\n" % (len(body), body),
            b"Host: localhost\r\nConnection: close\r\n\r\n", pause_s=0.3)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]


@pytest.mark.parametrize("parser", PARSERS)
def test_the_rest_of_a_body_answered_early_is_not_taken_for_headers(tiny_run_dir, parser):
    """A 413 from the declared length comes before the body: what the client sends after it is still its body."""
    with serving_in_process(create_app(tiny_run_dir, max_body_bytes=BODY_LIMIT), parser) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n" % (2 * BODY_LIMIT))
            answer = b""
            while b"}" not in answer:
                answer += connection.recv(65536)
            assert json_answer(answer)[0] == 413
            for _ in range(8):  # over the 8 KiB bound on headers
                connection.sendall(b"\0" * 4096)
            connection.settimeout(1.0)
            with pytest.raises((TimeoutError, socket.timeout)):  # nothing more: no second, unasked answer
                connection.recv(65536)


def test_headers_that_came_in_two_reads_leave_no_count_behind(tiny_run_dir, caplog):
    """Counted while they arrived, they must not look like a next request's when a body answered early trickles on."""
    # 2 s for headers sent 0.3 s apart: room for a worker of the parallel tests beside it on the 2 cores.
    with serving_in_process(create_app(tiny_run_dir, max_body_bytes=BODY_LIMIT), "httptools",
                            header_timeout_s=2.0) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n")
            time.sleep(0.3)
            connection.sendall(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (2 * BODY_LIMIT))
            answer = b""
            while b"}" not in answer:
                answer += connection.recv(65536)
            assert json_answer(answer)[0] == 413
            try:
                for _ in range(6):  # the rest of the body, past the header timeout
                    time.sleep(0.5)
                    connection.sendall(b"\0" * 1024)
            except (BrokenPipeError, ConnectionResetError):  # closed by the server, as it may be
                pass
    assert "answered 408" not in caplog.text  # no second answer, to a request never made


def test_a_second_ctrl_c_stops_at_once_in_one_line(tiny_run_dir, tmp_path):
    import signal

    from urllib.parse import urlsplit

    log = tmp_path / "serve.log"
    server, base = start_server(tiny_run_dir, log)
    try:  # half a request: the stop waits for it
        with socket.create_connection(("127.0.0.1", urlsplit(base).port)) as stalled:
            stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{")
            server.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 60
            while ("Waiting for connections to close" not in log.read_text() and server.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            assert "Waiting for connections to close" in log.read_text()  # the first stop under way, waiting
            server.send_signal(signal.SIGINT)  # impatient: the app's shutdown is skipped, its waiting task cancelled
            assert server.wait(timeout=60) == -signal.SIGINT  # ended by it, as a shell's loop must see to stop
            stalled_port = stalled.getsockname()[1]
    finally:
        server.kill()
    text = log.read_text()
    assert "Traceback" not in text and text.endswith("\nfmnist: interrupted\n"), text
    for line in ("WARNING:  stopped at once by a second stop signal, without waiting for requests",
                 f'INFO:     127.0.0.1:{stalled_port} - "POST /v1/predict HTTP/1.1" 503 Service Unavailable',
                 "ERROR:    a request still running at the second stop signal was cancelled"):
        assert f"\n{line}\n" in text, text


def test_requests_still_running_at_a_stop_get_a_json_503_and_one_log_line_each(tiny_run_dir, tmp_path):
    import signal
    from urllib.parse import urlsplit

    log = tmp_path / "serve.log"
    server, base = start_server(tiny_run_dir, log)
    try:
        stalled = socket.create_connection(("127.0.0.1", urlsplit(base).port))  # half a body: in flight till the end
        stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"inputs\"")
        time.sleep(0.5)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == -signal.SIGINT  # as for any command stopped by Ctrl-C
        stalled.settimeout(10)
        answer = b""
        while chunk := stalled.recv(65536):
            answer += chunk
        stalled.close()
    finally:
        server.kill()
    assert json_answer(answer) == (503, {"error": "the server is stopping; send the request again once it is back"})
    text = log.read_text()
    assert "Traceback" not in text and "a request still running 5 s after the stop was cancelled" in text, text
    assert '"GET /v1/health HTTP/1.1" 200' in text  # the access log is a log: on stderr, as fmnist's progress
    assert f"serving {tiny_run_dir} on {base}/ (API docs at /docs)" in text
    assert log.with_suffix(".stdout").read_text() == ""


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_asking_to_upgrade_to_http2_is_answered_not_left_without_its_body(tiny_run_dir, parser):
    """curl --http2 on http:// (and Java's HttpClient) send Upgrade: h2c: httptools stopped at the headers, and the
    app read an empty body ("the request body is empty")."""
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    body = json.dumps({"inputs": [[0] * 784]}).encode()
    with serving_in_process(create_app(tiny_run_dir), parser) as port:
        status, answer = json_answer(raw_exchange(port, b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"
                                                  b"Content-Type: application/json\r\nContent-Length: %d\r\n%s"
                                                  b"Connection: close\r\n\r\n%s" % (len(body), upgrade, body)))
        if parser == "h11":  # h11 reads the body and answers as without the Upgrade
            assert status == 200 and len(answer["predictions"]) == 1
        else:
            assert (status, answer) == (400, {"error": "a request with a body that asks to switch to another "
                                                       "protocol (Upgrade: h2c) is not served: send it as plain "
                                                       "HTTP/1.1 (curl: leave out --http2)"})
        health = raw_exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n"
                              % upgrade)
        assert json_answer(health)[0] == 200  # no body to lose: answered


@pytest.mark.parametrize("length", [b"", b"Content-Length: 0\r\n"])
def test_a_post_with_nothing_in_it_is_told_its_body_is_empty_not_its_content_type(tiny_run_dir, length):
    """`curl -X POST URL` sends neither a body nor a content type: what to mend is the missing body."""
    with serving_in_process(create_app(tiny_run_dir), PARSERS[0]) as port:
        answer = raw_exchange(port, b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n"
                              % length)
    assert json_answer(answer) == (400, {"error": EMPTY_BODY})


@pytest.mark.parametrize("headers, has_body", [
    ([], False), ([(b"content-length", b"0")], False), ([(b"content-length", b"00")], False),
    ([(b"content-length", b" 12 ")], True), ([(b"transfer-encoding", b"chunked")], True),
    ([(b"content-length", b"0"), (b"transfer-encoding", b"chunked")], True),  # chunked wins, as h11 reads it
])
def test_a_body_is_declared_by_a_length_above_zero_or_by_chunks(headers, has_body):
    assert declares_body(headers) is has_body
