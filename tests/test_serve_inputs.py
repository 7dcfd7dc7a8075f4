"""/v1/predict's inputs read and checked (fmnist.serve_inputs): JSON arrays, a corpus of bad files, JSON bodies and
requests, each a 4xx with a JSON error while a good request still works; stalled bodies; decoding slots."""

import asyncio
import gzip
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import SERVE_BODY_LIMIT, LeavingRequest, assert_serving
from fmnist.defaults import MAX_INPUTS
from fmnist.serve import create_app
from fmnist.serve_inputs import PREDICT_PARAMETERS
from samples import bad_files, bad_json_bodies, encode, garment


def test_json_arrays_nested_or_flat_pixels_or_floats(client):
    floats = np.random.default_rng(1).random((28, 28))
    inputs = [floats.tolist(), floats.ravel().tolist(), np.round(floats * 255).astype(int).ravel().tolist()]
    response = client.post("/v1/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["input"] for p in predictions] == ["inputs[0]", "inputs[1]", "inputs[2]"]
    assert predictions[0]["top"] == predictions[1]["top"] and "pixels" not in predictions[0]
    assert predictions[2]["top"][0]["index"] == predictions[0]["top"][0]["index"]
    # One image's values without a list of their own: the answer says so, not that 784 inputs are too many.
    wrap = 'for one image, put it in a list of its own ({"inputs": [[...]]})'
    for unwrapped, holds in ((floats.ravel().tolist(), "784 values, not images"),
                             ([*floats.ravel().tolist()[1:], None], "784 values, not images"),
                             (floats.tolist(), "28 rows of 28 numbers, one 28x28 image")):
        response = client.post("/v1/predict", json={"inputs": unwrapped})
        assert response.status_code == 422 and response.json()["error"] == (
            f'"inputs" must be a list of images, each 28x28 or 784 numbers; it holds {holds}: {wrap}')
    flag = client.post("/v1/predict", json={"inputs": [True]})  # one bool, no image's numbers: named as it is
    assert flag.status_code == 422 and flag.json()["error"].startswith("inputs[0] holds true/false values")
    for item in ({}, [None] * 784):
        not_numbers = client.post("/v1/predict", json={"inputs": [item]})
        assert not_numbers.status_code == 422 and not_numbers.json()["error"].startswith(
            "inputs[0] holds values that are not numbers (null, true, false, an object?)")


# A refusal says what to do, not only what is wrong: one of these verbs, as advice.
SAYS_WHAT_TO_DO = re.compile(r"\b(give|send|use|convert|scale|put|multiply|save|photograph|split)\b")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case, name, data, status, reason", bad_files(), ids=[c[0] for c in bad_files()])
def test_bad_files_get_a_4xx_json_error(client, case, name, data, status, reason):
    good = ("files", ("fine.png", encode(garment()), "image/png"))
    response = client.post("/v1/predict", files=[good, ("files", (name, data, "application/octet-stream"))])
    assert response.status_code == status and f"{name} {reason}" in response.json()["error"], response.text
    # Which of the files it was, as their names may repeat.
    assert response.json()["error"].startswith("file 2 of the 2 sent: "), response.text
    assert response.json()["error"].endswith("; none was classified: send the others without it")
    assert SAYS_WHAT_TO_DO.search(response.json()["error"].removesuffix("; none was classified: send the others "
                                                                        "without it")), response.text
    assert_serving(client)


@pytest.mark.parametrize("case, body, status", bad_json_bodies(), ids=[c[0] for c in bad_json_bodies()])
def test_bad_json_gets_a_4xx_json_error(client, case, body, status):
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"] and "RecursionError" not in response.json()["error"]  # no Python internals
    assert SAYS_WHAT_TO_DO.search(response.json()["error"]), response.text
    assert_serving(client)


def chunks(total: int):
    for _ in range(total // 65536):
        yield b"\0" * 65536


@pytest.mark.parametrize("case, request_args, status", [
    ("empty-body", {"headers": {"content-type": "multipart/form-data; boundary=b"}}, 400),
    ("no-body-no-content-type", {}, 400),
    ("chunked-no-content-type", {"content": chunks(65536)}, 415),  # a body follows: its content type is what to mend
    ("empty-text-plain", {"content": b"", "headers": {"content-type": "text/plain"}}, 415),
    ("empty-json", {"content": b"", "headers": {"content-type": "application/json"}}, 400),
    ("no-content-type", {"content": b"\x89PNG"}, 415),
    ("text-plain", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("text-plain-oversized", {"content": chunks(2 * SERVE_BODY_LIMIT), "headers": {"content-type": "text/plain"}}, 415),
    ("gzip-json", {"content": gzip.compress(b'{"inputs": [[0]]}'),
                   "headers": {"content-type": "application/json", "content-encoding": "gzip"}}, 415),
    ("form-urlencoded", {"data": {"files": "x"}}, 415),
    ("multipart-no-boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400),
    ("multipart-garbage", {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400),
    ("multipart-only-fields", {"files": {"note": (None, "just text")}}, 400),
    ("multipart-too-many-files",
     {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(MAX_INPUTS + 1)]}, 413),
    ("multipart-too-many-fields", {"files": [("note", (None, "x")) for _ in range(MAX_INPUTS + 1)]}, 413),
    ("oversized-declared", {"files": {"files": ("big.png", b"\0" * (SERVE_BODY_LIMIT + 1), "image/png")}}, 413),
    ("oversized-chunked", {"content": chunks(2 * SERVE_BODY_LIMIT), "headers": {"content-type": "application/json"}},
     413),
    ("top-k-zero", {"params": {"top_k": 0}, "json": {"inputs": [[0] * 784]}}, 422),
    ("top-k-eleven", {"params": {"top_k": 11}, "json": {"inputs": [[0] * 784]}}, 422),
    ("top-k-text", {"params": {"top_k": "three"}, "json": {"inputs": [[0] * 784]}}, 422),
])
def test_bad_requests_get_a_4xx_json_error(client, case, request_args, status):
    response = client.post("/v1/predict", **request_args)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert_serving(client)


def test_json_keys_are_named_five_at_most_and_cut_short_and_a_nameless_file_part_by_its_field(client):
    said = {
        "input": client.post("/v1/predict", json={"input": [[0] * 784]}),
        "many": client.post("/v1/predict", json={f"k{i:05d}": 0 for i in range(10_000)}),
        "beside": client.post("/v1/predict", json={"inputs": [[0] * 784], "x" * 100_000: 1, "top_k": 3}),
        "twice": client.post("/v1/predict", content=b'{"inputs": [], "inputs": []}',
                             headers={"content-type": "application/json"}),
        "nameless": client.post("/v1/predict", content=b'--b\r\nContent-Disposition: form-data; name="files"; '
                                b'filename=""\r\nContent-Type: image/png\r\n\r\n\r\n--b--\r\n',
                                headers={"content-type": "multipart/form-data; boundary=b"}),  # a browser's, no file
        "no type": client.post("/v1/predict", content=b"{}", headers={"content-type": ";;;"}),
    }
    assert {case: (answer.status_code, answer.json()["error"]) for case, answer in said.items()} == {
        "input": (422, 'the JSON body holds "input" but no "inputs": send {"inputs": [[784 numbers]]}'),
        "many": (422, 'the JSON body holds "k00000", "k00001", "k00002", "k00003", "k00004" and 9,995 more but no '
                      '"inputs": send {"inputs": [[784 numbers]]}'),  # not a megabyte of keys
        "beside": (422, f'the JSON body holds "top_k", "{"x" * 39}…" beside "inputs": it takes "inputs" alone: put '
                        'options in the query (?top_k=3)'),
        "twice": (422, 'the JSON body gives "inputs" twice: give each key once'),
        "nameless": (422, "files is empty (0 bytes): give the image file's contents"),  # answered as its field
        "no type": (415, "unsupported content type ';;;', which names no media type: send multipart/form-data files "
                         "or application/json"),
    }


def test_a_body_over_the_limit_is_said_in_mib_with_the_option_that_sets_the_limit(client):
    big = b"\0" * (SERVE_BODY_LIMIT * 3 // 2)
    declared = client.post("/v1/predict", files={"files": ("big.png", big, "image/png")})
    assert re.fullmatch(r"the request body is 1\.5 MiB; the limit is 1\.0 MiB \(fmnist serve --max-upload-mb\): "
                        r"send fewer images a request, or smaller ones", declared.json()["error"]), declared.text
    just_over = client.post("/v1/predict", content=b"x" * (SERVE_BODY_LIMIT + 1),
                            headers={"content-type": "application/json"})  # in MiB, it would read as the limit
    assert just_over.json()["error"].startswith("the request body is 1,048,577 bytes; the limit is 1,048,576 (fmnist "
                                                "serve --max-upload-mb)"), just_over.text
    streamed = client.post("/v1/predict", content=iter([b"x" * SERVE_BODY_LIMIT, b"x"]),
                           headers={"content-type": "application/json"})
    assert streamed.json()["error"].startswith("the request body is over the limit of 1.0 MiB (fmnist serve "), \
        streamed.text


def test_a_malformed_form_is_refused_with_its_reason_never_answered_in_part(client):
    def part(name: str) -> bytes:
        return (b'--b\r\nContent-Disposition: form-data; name="files"; filename="' + name.encode() + b'"\r\n'
                b"Content-Type: image/png\r\n\r\n" + encode(garment()) + b"\r\n")

    multipart = {"content-type": "multipart/form-data; boundary=b"}
    whole = client.post("/v1/predict", content=part("a.png") + part("b.png") + b"--b--\r\n", headers=multipart)
    assert [p["input"] for p in whole.json()["predictions"]] == ["a.png", "b.png"]
    unclosed = "the multipart body does not end with its closing boundary --b-- on a line of its own: its last " \
               "part would be lost; send the whole form"
    cut = client.post("/v1/predict", content=part("a.png") + part("b.png"), headers=multipart)  # b.png would be lost
    assert cut.status_code == 400 and cut.json() == {"error": unclosed}
    long_name = client.post("/v1/predict", content=part("a" * 5000 + ".png") + b"--b--\r\n", headers=multipart)
    assert long_name.status_code == 400 and long_name.json() == {
        "error": "the multipart body cannot be read: Maximum header size exceeded (a file name thousands of "
                 "characters long?)"}
    garbled = client.post("/v1/predict", content=b"garbage\r\n--b--", headers=multipart)
    assert garbled.status_code == 400 and garbled.json()["error"].startswith(
        "the multipart body cannot be read: Expected boundary character")
    # Each of these lost its last part, or what followed its form, answered 200 without a word.
    for body, refusal in ((part("a.png") + part("b.png")[:-2] + b"--b--\r\n", unclosed),  # not on a line of its own
                          (part("a.png") + part("b.png")[:-2] + b"\n--b--", unclosed),
                          (part("a.png") + b"--b--\r\n" + part("c.png") + b"--b--\r\n",
                           "the multipart body goes on after its closing boundary --b--: what follows would be lost; "
                           "send one form per request")):
        answer = client.post("/v1/predict", content=body, headers=multipart)
        assert answer.status_code == 400 and answer.json() == {"error": refusal}
    assert client.post("/v1/predict", content=part("a.png") + b"--b--\r\n\r\n", headers=multipart).status_code == 200
    # An empty boundary: the parser split the body on every "--" and answered the first part alone.
    for header in ("multipart/form-data; boundary=", 'multipart/form-data; boundary=""'):
        empty = client.post("/v1/predict", content=(part("a.png") + part("b.png")).replace(b"--b", b"--"),
                            headers={"content-type": header})
        assert empty.status_code == 400 and empty.json()["error"].startswith(
            "the multipart Content-Type names no boundary")
    # A name decoded with the charset the request named may hold a lone surrogate, which UTF-8 cannot carry.
    odd = client.post("/v1/predict", content=part("\\ud800.png") + b"--b--\r\n",
                      headers={"content-type": "multipart/form-data; boundary=b; charset=unicode_escape"})
    assert odd.status_code == 200 and odd.json()["predictions"][0]["input"] == "\\ud800.png"
    # A codec that fails with a bare UnicodeError, which Starlette does not expect: refused, not a 500. From Python 3.13
    # on, punycode and idna raise UnicodeDecodeError, for which Starlette reads the name as latin-1 itself.
    for charset, name in (("undefined", "a.png"), ("punycode", "x!.png"), ("idna", "xn--.png")):
        answer = client.post("/v1/predict", content=part(name) + b"--b--\r\n",
                             headers={"content-type": f"multipart/form-data; boundary=b; charset={charset}"})
        try:
            name.encode().decode(charset)
        except UnicodeDecodeError:
            assert answer.status_code == 200 and answer.json()["predictions"][0]["input"] == name, charset
            continue
        except UnicodeError:
            pass
        assert answer.status_code == 400 and answer.json()["error"].startswith(
            "the multipart body cannot be read: its part names cannot be decoded with the charset"), charset
    other = client.post("/v1/predict", content=part("a.png").replace(b"--b", b"--c") + b"--c--\r\n", headers=multipart)
    assert other.status_code == 400 and other.json() == {
        "error": "the multipart body holds no --b boundary: send it with the boundary its Content-Type names"}
    # A file's bytes sent as a field (curl -F 'files=<a.png', a filename*= alone) beside a file would go unanswered.
    for header in (b'name="files"', b'name="files"; filename*=UTF-8\'\'a.png'):
        field = part("x").replace(b'name="files"; filename="x"', header)
        answer = client.post("/v1/predict", content=field + part("b.png") + b"--b--\r\n", headers=multipart)
        assert answer.status_code == 400 and answer.json()["error"].startswith(
            "the form's field 'files' holds no file (no filename): send each image as a file part")
    assert_serving(client)


def test_an_unknown_query_parameter_is_refused_not_ignored(client):
    image = {"files": ("ok.png", encode(garment()), "image/png")}
    answer = client.post("/v1/predict?topk=1", files=image)
    assert answer.status_code == 422 and answer.json() == {
        "error": "unknown query parameter topk: /v1/predict takes explain, include_pixels, top_k"}
    documented = {p["name"] for p in client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["parameters"]}
    assert documented == PREDICT_PARAMETERS
    assert client.post("/v1/predict?top_k=1&explain=false&include_pixels=false", files=image).status_code == 200
    for given in ("0", "11", "abc", "2.5"):  # in words as the command line's --top-k, not pydantic's
        assert client.post(f"/v1/predict?top_k={given}", files=image).json() == {
            "error": f"query parameter top_k: must be a whole number from 1 to 10, not '{given}'"}
    assert client.post("/v1/predict?explain=maybe", files=image).json() == {
        "error": "query parameter explain: must be true or false, not 'maybe'"}
    twice = client.post("/v1/predict?top_k=1&top_k=5", files=image)
    assert twice.status_code == 422 and twice.json() == {"error": "query parameter top_k given 2 times: give it once"}


def _answer_to(app, *messages, pause_s: float = 0.0) -> tuple[int, dict]:
    """Call the app as a server would, the client's side of the body given as ASGI messages, ``pause_s`` apart (then
    a stall)."""
    sent = []

    async def receive():
        await asyncio.sleep(pause_s)
        return await queue.get()  # each message once, then nothing more arrives

    async def send(message):
        sent.append(message)

    queue: asyncio.Queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": "", "app": app}

    async def served() -> None:
        async with app.router.lifespan_context(app):  # the model loaded, as at the server's start
            await app(scope, receive, send)

    asyncio.run(served())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_a_client_that_goes_away_or_stalls_mid_body_gets_a_json_answer_not_a_traceback(tiny_run_dir, monkeypatch,
                                                                                      caplog):
    import fmnist.serve_inputs

    monkeypatch.setattr(fmnist.serve_inputs, "BODY_TIMEOUT_S", 1.0)
    monkeypatch.setattr(fmnist.serve_inputs, "MIN_BODY_RATE", 1024)
    app = create_app(tiny_run_dir)
    part = {"type": "http.request", "body": b'{"inputs": [', "more_body": True}
    assert _answer_to(app, part, {"type": "http.disconnect"}) == (400, {
        "error": "the client went away before its request was answered"})
    refusal = "the request body did not arrive in time: 1.0 s, and a second more for each 1 KiB received, with no " \
              "pause over 1.0 s"
    assert _answer_to(app, part) == (408, {"error": refusal})
    # Much sent at once, then a stall: the 195 s of credit its bytes earned do not let it hold the connection.
    started = time.monotonic()
    assert _answer_to(app, {"type": "http.request", "body": b"[" * 200_000, "more_body": True}) == (408, {
        "error": refusal})
    assert time.monotonic() - started < 60
    assert "Traceback" not in caplog.text
    # Logged as warnings, as the HTTP layer's 408 for slow headers is: under -q too.
    assert [r.levelname for r in caplog.records if "with 408: the request body" in r.getMessage()] == ["WARNING"] * 2
    # A body that keeps coming, slowly (a photo over a slow link), is read whole, though it takes longer than 1 s.
    body = json.dumps({"inputs": [[0.5] * 784]}).encode()
    pieces = [body[i:i + 600] for i in range(0, len(body), 600)]
    messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                for i, piece in enumerate(pieces)]
    status, answer = _answer_to(app, *messages, pause_s=0.3)
    # Read whole though it took longer than a stall may last (elapsed_ms counts from before the body is read).
    assert status == 200 and answer["elapsed_ms"] > fmnist.serve_inputs.BODY_TIMEOUT_S * 1000, answer


@pytest.mark.parametrize("slots", [1, 3])
def test_uploads_are_decoded_at_most_decode_slots_at_a_time(tiny_run_dir, monkeypatch, slots):
    import fmnist.serve_inputs

    active, most, lock = [0], [0], threading.Lock()
    real_load_input = fmnist.serve_inputs.load_input

    def tracked_load_input(data, name):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        deadline = time.monotonic() + 5  # wait for the other decodes the limiter lets in, however loaded the CPU
        while time.monotonic() < deadline and active[0] < slots:
            time.sleep(0.01)
        time.sleep(0.05)  # and a little longer, for one it should not have let in
        try:
            return real_load_input(data, name)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(fmnist.serve_inputs, "load_input", tracked_load_input)
    png = encode(garment())
    with TestClient(create_app(tiny_run_dir, decode_slots=slots)) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: client.post("/v1/predict", files={"files": (f"{i}.png", png)}), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert most[0] == slots


def test_a_request_of_many_uploads_takes_a_decoding_slot_one_file_at_a_time(tiny_run_dir, monkeypatch):
    """Another client's upload is decoded between the files of a large request, not after all of them."""
    import fmnist.serve_inputs

    decoded, real_load_input = [], fmnist.serve_inputs.load_input

    def slow_load_input(data, name):
        time.sleep(0.6)  # long beside the other client's start, even with the parallel tests on the 2 cores
        decoded.append(name)
        return real_load_input(data, name)

    monkeypatch.setattr(fmnist.serve_inputs, "load_input", slow_load_input)
    png = encode(garment())
    with TestClient(create_app(tiny_run_dir, decode_slots=1)) as client, ThreadPoolExecutor(2) as pool:
        many = pool.submit(client.post, "/v1/predict", files=[("files", (f"many-{i}.png", png)) for i in range(4)])
        deadline = time.monotonic() + 120
        while not decoded:  # the first decode begun: the other request then queues for its slot
            assert not many.done() and time.monotonic() < deadline, "the first request never began decoding"
            time.sleep(0.01)
        one = pool.submit(client.post, "/v1/predict", files={"files": ("one.png", png)})
        assert many.result().status_code == one.result().status_code == 200
    assert decoded.index("one.png") < decoded.index("many-3.png"), decoded


def test_uploads_stop_being_decoded_when_their_client_goes_away(tiny_run_dir):
    import anyio
    from starlette.requests import ClientDisconnect

    from fmnist.serve_inputs import decode_files

    async def decode_then_leave() -> int:
        request = LeavingRequest()  # once its first file has been decoded
        request.app.state.decoders = anyio.CapacityLimiter(1)
        with pytest.raises(ClientDisconnect):
            await decode_files(request, [(f"{i}.png", encode(garment())) for i in range(5)])
        return request.checks

    assert asyncio.run(decode_then_leave()) == 2  # one file decoded, then it stopped
