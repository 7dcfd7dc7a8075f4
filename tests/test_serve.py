import asyncio
import errno
import gzip
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import run_cli, start_server
from fmnist import artifacts
from fmnist.data import CLASS_NAMES
from fmnist.errors import FmnistError
from fmnist.images import load_input
from fmnist.predict import Classifier
from fmnist.serve import MAX_INPUTS, PREDICT_PARAMETERS, Batcher, create_app, serve
from samples import bad_files, bad_json_bodies, encode, garment, npy

BODY_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def client(tiny_run_dir):
    # raise_server_exceptions: a 5xx would fail the test with its traceback instead of passing as a status.
    with TestClient(create_app(tiny_run_dir, max_body_bytes=BODY_LIMIT), raise_server_exceptions=True) as test_client:
        yield test_client


def assert_serving(client):
    """A good request still gets a good answer."""
    answer = client.post("/v1/predict", files={"files": ("ok.png", encode(garment()), "image/png")})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1


def test_health_and_model(client, tiny_run_dir):
    sha = (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["model_sha256"] == sha
    info = client.get("/v1/model").json()
    assert info["classes"] == list(CLASS_NAMES) and info["model_sha256"] == sha
    assert info["settings"]["hidden_sizes"] == [16, 8] and info["metrics"]["model_sha256"] == sha
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_multipart_images_and_arrays_are_classified_like_the_cli_would(client, tiny_run_dir):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    files = [("files", ("shirt.png", encode(garment()), "image/png")),
             ("files", ("dark.jpg", encode(garment(False), "JPEG"), "image/jpeg")),
             ("files", ("pixels.npy", npy(pixels), "application/octet-stream"))]
    response = client.post("/v1/predict", params={"top_k": 5, "include_pixels": True}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["input"] for p in body["predictions"]] == ["shirt.png", "dark.jpg", "pixels.npy"]
    assert body["model_sha256"] == Classifier(tiny_run_dir).sha256 and body["elapsed_ms"] > 0
    expected = Classifier(tiny_run_dir).probabilities(np.array([p["pixels"] for p in body["predictions"]]))
    for prediction, row in zip(body["predictions"], expected):
        assert len(prediction["top"]) == 5 and np.array(prediction["pixels"]).shape == (28, 28)
        assert prediction["top"][0]["index"] == int(row.argmax())
        assert prediction["top"][0]["probability"] == pytest.approx(float(row.max()), abs=1e-4)
    for (_, (name, data, _)), prediction in zip(files, body["predictions"]):  # prepared as `fmnist predict` does
        np.testing.assert_allclose(prediction["pixels"], load_input(data, name), atol=1e-4)
    np.testing.assert_allclose(body["predictions"][2]["pixels"], pixels / 255, atol=1e-4)
    # Rounded to 4 decimals as written, not float32's 0.7843000292778015: a third of the bytes.
    assert all(len(repr(value)) <= 6 for p in body["predictions"] for row in p["pixels"] for value in row)


def test_explain_answers_the_occlusion_map_of_the_top_class(client, tiny_run_dir):
    from fmnist.explain import occlusion_maps

    pixels = np.zeros((2, 28, 28))
    pixels[0, 6:22, 9:19], pixels[1, 4:26, 4:24] = 0.9, 0.5
    before = client.get("/v1/health").json()
    body = client.post("/v1/predict", params={"explain": True}, json={"inputs": pixels.tolist()}).json()
    classifier = Classifier(tiny_run_dir)
    expected = occlusion_maps(classifier.probabilities, pixels, classifier.probabilities(pixels).argmax(axis=1))
    for prediction, evidence in zip(body["predictions"], expected):
        assert np.array(prediction["evidence"]).shape == (28, 28) and "pixels" not in prediction
        np.testing.assert_allclose(prediction["evidence"], evidence, atol=1e-5)
        assert all(value == round(value, 6) for row in prediction["evidence"] for value in row)
    # Two inputs answered; the model ran them, then each again with its 625 blanked copies.
    after = client.get("/v1/health").json()
    assert (after["inputs"], after["rows"]) == (before["inputs"] + 2, before["rows"] + 2 + 2 * (1 + 25 * 25))
    plain = client.post("/v1/predict", json={"inputs": pixels.tolist()}).json()
    assert "evidence" not in plain["predictions"][0]
    not_a_bool = client.post("/v1/predict", params={"explain": "maybe"}, json={"inputs": pixels.tolist()})
    assert not_a_bool.status_code == 422 and "explain" in not_a_bool.json()["error"]


def test_concurrent_explanations_each_get_their_own_map(client, tiny_run_dir):
    from fmnist.explain import occlusion_maps

    rng = np.random.default_rng(5)
    inputs = [rng.random((n, 28, 28)).round(3) for n in (1, 3, 17, 2)]  # 17: more than one batch of images
    with ThreadPoolExecutor(len(inputs)) as pool:
        answers = list(pool.map(lambda x: client.post("/v1/predict", params={"explain": True},
                                                      json={"inputs": x.tolist()}).json(), inputs))
    classifier = Classifier(tiny_run_dir)
    for pixels, answer in zip(inputs, answers):
        expected = occlusion_maps(classifier.probabilities, pixels, classifier.probabilities(pixels).argmax(axis=1))
        np.testing.assert_allclose([p["evidence"] for p in answer["predictions"]], expected, atol=1e-5)


class LeavingRequest:
    """A stand-in request whose client leaves after the first check; the test sets its ``app.state``."""

    def __init__(self) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace())
        self.checks = 0

    async def is_disconnected(self) -> bool:
        self.checks += 1
        return self.checks > 1


def test_an_explanation_stops_when_its_client_goes_away(tiny_run_dir):
    from starlette.requests import ClientDisconnect

    from fmnist.explain import IMAGES_PER_BATCH, POSITIONS
    from fmnist.serve import explain_inputs

    classifier = Classifier(tiny_run_dir)

    async def explain_then_leave() -> int:
        request = LeavingRequest()  # once the first batch of images has gone through
        request.app.state.batcher = batcher = Batcher(classifier.probabilities)
        request.app.state.explaining = asyncio.Semaphore(1)
        worker = asyncio.create_task(batcher.run())
        try:
            with pytest.raises(ClientDisconnect):
                await explain_inputs(request, np.ones((3 * IMAGES_PER_BATCH, 28, 28)) / 2, np.zeros(48, int))
        finally:
            worker.cancel()
        return batcher.rows

    assert asyncio.run(explain_then_leave()) == IMAGES_PER_BATCH * (1 + POSITIONS)  # the first batch, no more


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


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case, name, data, status, reason", bad_files(), ids=[c[0] for c in bad_files()])
def test_bad_files_get_a_4xx_json_error(client, case, name, data, status, reason):
    good = ("files", ("fine.png", encode(garment()), "image/png"))
    response = client.post("/v1/predict", files=[good, ("files", (name, data, "application/octet-stream"))])
    assert response.status_code == status and f"{name} {reason}" in response.json()["error"], response.text
    # Which of the files it was, as their names may repeat.
    assert response.json()["error"].startswith("file 2 of the 2 sent: "), response.text
    assert response.json()["error"].endswith("; none was classified: send the others without it")
    assert_serving(client)


@pytest.mark.parametrize("case, body, status", bad_json_bodies(), ids=[c[0] for c in bad_json_bodies()])
def test_bad_json_gets_a_4xx_json_error(client, case, body, status):
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"] and "RecursionError" not in response.json()["error"]  # no Python internals
    assert_serving(client)


def chunks(total: int):
    for _ in range(total // 65536):
        yield b"\0" * 65536


@pytest.mark.parametrize("case, request_args, status", [
    ("empty-body", {"headers": {"content-type": "multipart/form-data; boundary=b"}}, 400),
    ("no-body-no-content-type", {}, 415),
    ("empty-json", {"content": b"", "headers": {"content-type": "application/json"}}, 400),
    ("no-content-type", {"content": b"\x89PNG"}, 415),
    ("text-plain", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("text-plain-oversized", {"content": chunks(2 * BODY_LIMIT), "headers": {"content-type": "text/plain"}}, 415),
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
    ("oversized-declared", {"files": {"files": ("big.png", b"\0" * (BODY_LIMIT + 1), "image/png")}}, 413),
    ("oversized-chunked", {"content": chunks(2 * BODY_LIMIT), "headers": {"content-type": "application/json"}}, 413),
    ("top-k-zero", {"params": {"top_k": 0}, "json": {"inputs": [[0] * 784]}}, 422),
    ("top-k-eleven", {"params": {"top_k": 11}, "json": {"inputs": [[0] * 784]}}, 422),
    ("top-k-text", {"params": {"top_k": "three"}, "json": {"inputs": [[0] * 784]}}, 422),
])
def test_bad_requests_get_a_4xx_json_error(client, case, request_args, status):
    response = client.post("/v1/predict", **request_args)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert_serving(client)


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
    for charset, name in (("undefined", "a.png"), ("punycode", "x!.png"), ("idna", "xn--.png")):  # a UnicodeError
        refused = client.post("/v1/predict", content=part(name) + b"--b--\r\n",
                              headers={"content-type": f"multipart/form-data; boundary=b; charset={charset}"})
        assert refused.status_code == 400 and refused.json()["error"].startswith(
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


def test_unknown_routes_and_methods_answer_json(client):
    for response, status in ((client.get("/v2/predict"), 404), (client.post("/v1/predict/"), 404),
                             (client.get("/v1/predict"), 405), (client.delete("/v1/model"), 405)):
        assert response.status_code == status and response.json()["error"]
    assert client.put("/v1/predict").headers["allow"] == "POST"  # what a 405 must say (RFC 9110)
    assert set(client.delete("/v1/model").headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert client.get("/v1/predict").json() == {"error": "GET is not answered on /v1/predict: use POST"}
    static = client.post("/static/app.js")
    assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD", static.headers
    assert static.json() == {"error": "POST is not answered on /static/app.js: use GET, HEAD"}


def test_an_unknown_query_parameter_is_refused_not_ignored(client):
    image = {"files": ("ok.png", encode(garment()), "image/png")}
    answer = client.post("/v1/predict?topk=1", files=image)
    assert answer.status_code == 422 and answer.json() == {
        "error": "unknown query parameter topk: /v1/predict takes explain, include_pixels, top_k"}
    documented = {p["name"] for p in client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["parameters"]}
    assert documented == PREDICT_PARAMETERS
    assert client.post("/v1/predict?top_k=1&explain=false&include_pixels=false", files=image).status_code == 200
    assert client.post("/v1/predict?top_k=0", files=image).json() == {
        "error": "query parameter top_k: Input should be greater than or equal to 1"}
    twice = client.post("/v1/predict?top_k=1&top_k=5", files=image)
    assert twice.status_code == 422 and twice.json() == {"error": "query parameter top_k given 2 times: give it once"}


def test_serve_help_lists_every_route_the_app_answers(client):
    from fmnist.cli import SERVE_DETAILS

    listed = {(method, path) for method, path in
              (line.split()[:2] for line in SERVE_DETAILS.splitlines() if line.startswith("  ") and line.split())
              if method in ("GET", "POST")}
    answered = {(method, route.path) for route in client.app.routes if getattr(route, "include_in_schema", False)
                or route.path in ("/", "/docs") for method in getattr(route, "methods", ()) if method != "HEAD"}
    assert answered == listed


def test_head_answers_where_get_does_for_uptime_monitors(client):
    for path in ("/", "/v1/health", "/v1/model", "/metrics"):
        answer = client.head(path)
        assert answer.status_code == 200 and answer.content == b"", path
    operations = [op for route in client.get("/openapi.json").json()["paths"].values() for op in route.values()]
    ids = [op["operationId"] for op in operations]
    # GET /v1/health, /v1/model and /metrics, POST /v1/predict: HEAD kept out
    assert len(ids) == len(set(ids)) == 4


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["cache-control"] == "no-cache"
    for asset in ("/static/app.js", "/static/style.css"):
        assert f'"{asset[1:]}"' in page.text  # relative: under a reverse proxy's prefix too
        answer = client.get(asset)
        # Checked again at each load: an upgrade's app.js is never left behind by a browser's cache.
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache"
        again = client.get(asset, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
        # A Range, served or not, gets the file whole (Starlette answered one it cannot serve in plain text).
        for asked in ("bytes=0-9", "items=0-1", "bytes=5-1", "bytes=999999-"):
            whole = client.get(asset, headers={"Range": asked})
            assert (whole.status_code, whole.content) == (200, answer.content), (asset, asked)
        assert "accept-ranges" not in answer.headers  # nor are ranges offered
    assert client.get("/", headers={"Range": "items=0-1"}).text == page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere: it works offline


def test_concurrent_requests_get_their_own_answers(client):
    rng = np.random.default_rng(2)
    inputs = [rng.random(784).round(4).tolist() for _ in range(24)]
    alone = [client.post("/v1/predict", json={"inputs": [x]}).json()["predictions"][0]["top"] for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda x: client.post("/v1/predict", json={"inputs": [x]}), inputs))
    assert [r.json()["predictions"][0]["top"] for r in together] == alone


def test_the_batcher_shares_forward_passes_and_keeps_answers_apart():
    passes = []

    def forward(x):
        passes.append(len(x))
        return x * 2

    async def scenario(max_rows):
        batcher = Batcher(forward, max_rows)
        requests = [asyncio.create_task(batcher.predict(np.full((n, 3), i, np.float32))) for i, n in
                    enumerate([1, 2, 1, 3, 1, 1, 6])]
        worker = asyncio.create_task(batcher.run())  # starts after every request has queued
        answers = await asyncio.gather(*requests)
        worker.cancel()
        return answers

    answers = asyncio.run(scenario(max_rows=4))
    for i, (answer, n) in enumerate(zip(answers, [1, 2, 1, 3, 1, 1, 6])):
        np.testing.assert_array_equal(answer, np.full((n, 3), 2 * i))
    # Requests in arrival order, as many as fit in 4 rows; one larger than that still runs, alone.
    assert passes == [4, 4, 1, 6]
    passes.clear()
    asyncio.run(scenario(max_rows=1))
    assert passes == [1, 2, 1, 3, 1, 1, 6]


def test_health_counts_forward_passes(client):
    before = client.get("/v1/health").json()
    client.post("/v1/predict", json={"inputs": [[0.5] * 784, [0.2] * 784]})
    after = client.get("/v1/health").json()
    assert after["inputs"] == before["inputs"] + 2 and after["forward_passes"] == before["forward_passes"] + 1
    assert after["rows"] == before["rows"] + 2
    client.post("/v1/predict", json={"inputs": [[2.0] * 784]})  # refused: not answered, never run
    assert {key: client.get("/v1/health").json()[key] for key in after} == after


def test_errors_have_a_json_body_listed_in_the_docs(client):
    responses = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "400", "408", "413", "415", "422"} <= set(responses)
    for response in (client.post("/v1/predict"), client.get("/nowhere"), client.post("/v1/predict?top_k=0")):
        assert set(response.json()) == {"error"}


def test_the_model_is_loaded_by_the_apps_lifespan_and_a_changed_one_is_refused_before(tiny_run_dir, tmp_path):
    app = create_app(tiny_run_dir)
    assert not hasattr(app.state, "classifier")  # building the app loads nothing
    with TestClient(app) as client:
        assert client.get("/v1/health").json()["model_sha256"] == app.state.classifier.sha256
    changed = tmp_path / "changed"
    shutil.copytree(tiny_run_dir, changed)
    with open(changed / artifacts.MODEL, "ab") as model:
        model.write(b"\0")
    with pytest.raises(FmnistError, match="does not match its recorded SHA-256"):
        create_app(changed)


def test_a_taken_port_or_a_bad_address_is_one_clear_error(tiny_run_dir):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(FmnistError, match=f"cannot listen on 127.0.0.1 port {port}: Address already in use; "
                                                "pick another with --port$"):
            serve(tiny_run_dir, port=port)
    for bad_port in (0, 70000):
        with pytest.raises(FmnistError, match="between 1 and 65535"):
            serve(tiny_run_dir, port=bad_port)
    with pytest.raises(FmnistError, match="the host is empty: give an address, such as 127.0.0.1"):
        serve(tiny_run_dir, host="", port=port)
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:  # an IPv6 address as a URL writes it
        port = taken.getsockname()[1]
        with pytest.raises(FmnistError, match=f"cannot listen on ::1 port {port}: Address already in use"):
            serve(tiny_run_dir, host="[::1]", port=port)
    for with_port in ("localhost:8080", "[::1]:8080"):  # as in a URL
        with pytest.raises(FmnistError, match=f"^--host {re.escape(with_port)} holds a port: give the address alone, "
                                              "and the port with --port$"):
            serve(tiny_run_dir, host=with_port, port=port)
    with pytest.raises(FmnistError, match="is a folder of runs, not a run"):
        serve(tiny_run_dir.parent, port=port)  # free again now


def test_the_port_is_held_while_the_model_loads_and_freed_after(tiny_run_dir, monkeypatch):
    import fmnist.serve

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    tried = []

    def loading(run_dir):  # where the model would load: another server's bind now fails, then the load does
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError as exc:
            tried.append(exc.errno)
        raise FmnistError("no model here")

    monkeypatch.setattr(fmnist.serve, "Classifier", loading)
    with pytest.raises(FmnistError, match="no model here"):
        serve(tiny_run_dir, port=port, access_log=False)
    assert tried == [errno.EADDRINUSE]
    socket.create_server(("127.0.0.1", port)).close()  # given back when the server ended


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
    import fmnist.serve

    monkeypatch.setattr(fmnist.serve, "BODY_TIMEOUT_S", 1.0)
    monkeypatch.setattr(fmnist.serve, "MIN_BODY_RATE", 1024)
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
    # A body that keeps coming, slowly (a photo over a slow link), is read whole, though it takes longer than 1 s.
    body = json.dumps({"inputs": [[0.5] * 784]}).encode()
    pieces = [body[i:i + 600] for i in range(0, len(body), 600)]
    messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                for i, piece in enumerate(pieces)]
    status, answer = _answer_to(app, *messages, pause_s=0.3)
    assert status == 200 and len(pieces) * 0.3 > 1.0, answer


def test_a_model_that_fails_to_load_at_start_up_is_one_line_not_uvicorns_traceback(tiny_run_dir, tmp_path):
    import keras

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    other = keras.Sequential([keras.Input((100,)), keras.layers.Dense(3, activation="softmax")])
    other.save(run / artifacts.MODEL)  # with a checksum to match: a model of another task
    (run / artifacts.MODEL_SHA256).write_text(artifacts.sha256_file(run / artifacts.MODEL) + "\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("serve", str(run), "--port", str(port), timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "startup failed" not in result.stderr, result.stderr
    assert "serving" not in result.stderr  # said only once the model answers
    assert result.stderr.strip().splitlines()[-1] == (
        f"fmnist: error: {run} maps 100 features to 3 classes, not 784 pixels to 10 classes")


@pytest.mark.parametrize("slots", [1, 3])
def test_uploads_are_decoded_at_most_decode_slots_at_a_time(tiny_run_dir, monkeypatch, slots):
    import fmnist.serve

    active, most, lock = [0], [0], threading.Lock()
    real_load_input = fmnist.serve.load_input

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

    monkeypatch.setattr(fmnist.serve, "load_input", tracked_load_input)
    png = encode(garment())
    with TestClient(create_app(tiny_run_dir, decode_slots=slots)) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: client.post("/v1/predict", files={"files": (f"{i}.png", png)}), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert most[0] == slots


def test_a_request_of_many_uploads_takes_a_decoding_slot_one_file_at_a_time(tiny_run_dir, monkeypatch):
    """Another client's upload is decoded between the files of a large request, not after all of them."""
    import fmnist.serve

    decoded, real_load_input = [], fmnist.serve.load_input

    def slow_load_input(data, name):
        time.sleep(0.6)  # long beside the other client's start, even with the parallel tests on the 2 cores
        decoded.append(name)
        return real_load_input(data, name)

    monkeypatch.setattr(fmnist.serve, "load_input", slow_load_input)
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

    from fmnist.serve import decode_files

    async def decode_then_leave() -> int:
        request = LeavingRequest()  # once its first file has been decoded
        request.app.state.decoders = anyio.CapacityLimiter(1)
        with pytest.raises(ClientDisconnect):
            await decode_files(request, [(f"{i}.png", encode(garment())) for i in range(5)])
        return request.checks

    assert asyncio.run(decode_then_leave()) == 2  # one file decoded, then it stopped


def test_a_server_on_this_machine_alone_answers_only_requests_that_name_it(tiny_run_dir):
    # A page elsewhere pointing its own name at 127.0.0.1 (DNS rebinding) would send that name as the Host.
    with TestClient(create_app(tiny_run_dir, loopback_only=True), base_url="http://localhost:8000") as client:
        for host in ("localhost:8000", "LOCALHOST", "127.0.0.1:8000", "127.0.0.2", "[::1]:8000", "[::1]"):
            assert client.get("/v1/health", headers={"host": host}).status_code == 200, host
        for host in ("evil.example:8000", "testserver", "0.0.0.0:8000", "192.168.1.5"):
            refused = client.get("/v1/model", headers={"host": host})
            assert refused.status_code == 400 and refused.json()["error"].startswith(
                f"the Host header names {host.split(':')[0]!r}: this server listens on this machine alone"), host
        assert client.post("/v1/predict", json={"inputs": [[0.5] * 784]},
                           headers={"host": "evil.example"}).status_code == 400
    with TestClient(create_app(tiny_run_dir)) as client:  # one served to other machines answers any name
        assert client.get("/v1/health", headers={"host": "evil.example"}).status_code == 200


def test_a_server_on_this_machine_alone_answers_the_names_a_reverse_proxy_passes_when_allowed(tiny_run_dir):
    allowed = ["FMNIST.example.org.", "2001:db8::5", "[192.0.2.7]"]
    with TestClient(create_app(tiny_run_dir, loopback_only=True, allowed_hosts=allowed),
                    base_url="http://localhost") as client:  # as a Host header gives it: any case, a final dot or not
        for host in ("fmnist.example.org", "fmnist.example.org:443", "Fmnist.Example.Org.", "localhost",
                     "[2001:db8::5]:8000", "[2001:DB8::5]", "192.0.2.7:8000"):
            assert client.get("/v1/health", headers={"host": host}).status_code == 200, host
        refused = client.get("/v1/health", headers={"host": "other.example.org"})
        assert refused.status_code == 400 and "--allow-host NAME" in refused.json()["error"]
    for wrong in ("https://fmnist.example.org", "fmnist.example.org:443", "example.org/fmnist", "a b", ""):
        with pytest.raises(FmnistError, match="is not a host name: give it as a Host header names it"):
            create_app(tiny_run_dir, loopback_only=True, allowed_hosts=[wrong])
    with pytest.raises(FmnistError, match="^--allow-host is for a server on this machine alone: served on 0.0.0.0"):
        serve(tiny_run_dir, host="0.0.0.0", allowed_hosts=["fmnist.example.org"])


def test_behind_a_proxy_that_strips_a_prefix_the_docs_find_their_openapi_file(tiny_run_dir, tmp_path):
    process, base = start_server(tiny_run_dir, tmp_path / "serve.log", options=("--root-path", "fmnist/"))
    try:  # the proxy passes /fmnist/docs on as /docs
        assert "'/fmnist/openapi.json'" in httpx.get(f"{base}/docs", timeout=10).text
        assert httpx.get(f"{base}/openapi.json", timeout=10).json()["servers"] == [{"url": "/fmnist"}]
        assert httpx.get(f"{base}/v1/health", timeout=10).status_code == 200
        wrong = httpx.get(f"{base}/v1/predict", timeout=10)  # the routes found without the prefix: their methods named
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST", wrong.text
    finally:
        process.terminate()
        process.wait(timeout=60)
    for wrong in ("/fmnist?x=1", "/my app", "/mödé"):
        with pytest.raises(FmnistError, match="is not a path: give the prefix alone, such as /fmnist"):
            serve(tiny_run_dir, proxy_prefix=wrong)


def test_web_pages_of_the_origins_allowed_may_call_the_api_and_read_its_answers_others_not(tiny_run_dir, client):
    page, other = "http://localhost:3000", "http://evil.example"
    body = {"inputs": [[0.5] * 784]}
    with TestClient(create_app(tiny_run_dir, allowed_origins=[page]), base_url="http://localhost") as allowing:
        answer = allowing.post("/v1/predict", json=body, headers={"Origin": page})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == page
        refused = allowing.post("/v1/predict?top_k=0", json=body, headers={"Origin": page})  # its error readable too
        assert refused.status_code == 422 and refused.headers["access-control-allow-origin"] == page
        # A JSON body makes the browser ask first (a preflight).
        asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        preflight = allowing.options("/v1/predict", headers={"Origin": page, **asked})
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        preflight = allowing.options("/v1/predict", headers={"Origin": other, **asked})
        refusal = "for a call from a web page: this server allows"
        assert preflight.status_code == 400 and preflight.json() == {
            "error": f"Disallowed CORS origin {refusal} the origins {page} (--allow-origin)"}
        preflight = allowing.options("/v1/predict", headers={"Origin": page, "Access-Control-Request-Method": "PUT"})
        assert preflight.status_code == 400 and preflight.json() == {
            "error": f"Disallowed CORS method {refusal} the methods GET, HEAD, POST"}
        assert "access-control-allow-origin" not in allowing.post("/v1/predict", json=body,
                                                                  headers={"Origin": other}).headers
        assert allowing.options("/v1/predict").status_code == 405  # no preflight: as without CORS
    # By default, no page elsewhere reads an answer: the server's own page at / needs no CORS.
    assert "access-control-allow-origin" not in client.post("/v1/predict", json=body, headers={"Origin": page}).headers
    with TestClient(create_app(tiny_run_dir, allowed_origins=["*"])) as anyone:
        assert anyone.post("/v1/predict", json=body, headers={"Origin": other}).headers[
            "access-control-allow-origin"] == "*"
    # As the browser sends it: lower case, no default port; CORS compares them as text.
    with TestClient(create_app(tiny_run_dir, allowed_origins=["HTTP://LocalHost:3000", "https://app.example:443"])
                    ) as written_otherwise:
        for origin in (page, "https://app.example"):
            assert written_otherwise.post("/v1/predict", json=body, headers={"Origin": origin}).headers[
                "access-control-allow-origin"] == origin
    for wrong in ("http://localhost:3000/", "localhost:3000", "http://localhost:3000/app", "http://*.example",
                  "http://localhost:99999", "ftp://files.example"):
        with pytest.raises(FmnistError, match=f"^--allow-origin {re.escape(repr(wrong))} is not an origin as a "
                                              "browser sends it: give scheme, host and port alone"):
            create_app(tiny_run_dir, allowed_origins=[wrong])


def test_allow_origin_reaches_the_server_from_the_command_line(tiny_run_dir):
    from fmnist.cli import build_parser

    args = build_parser().parse_args(["serve", "r", "--allow-origin", "http://localhost:3000", "--allow-origin", "*"])
    assert args.allow_origin == ["http://localhost:3000", "*"]
    result = run_cli("serve", str(tiny_run_dir), "--allow-origin", "localhost:3000", timeout=120)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "fmnist: error: --allow-origin 'localhost:3000' is not an origin as a browser sends it: give scheme, host and "
        "port alone, such as http://localhost:3000 (no path, no '/' at the end), or * for every page")


def test_the_unsure_threshold_is_the_servers_own_and_said_in_the_models_details(tiny_run_dir, client):
    from fmnist.cli import build_parser

    body = {"inputs": [[0.5] * 784]}
    top = client.post("/v1/predict", json=body).json()["predictions"][0]["top"][0]["probability"]
    assert client.get("/v1/model").json()["unsure_below"] == 0.5
    with TestClient(create_app(tiny_run_dir, unsure_below=top + 0.01)) as strict, \
            TestClient(create_app(tiny_run_dir, unsure_below=top - 0.01)) as lenient:
        assert strict.post("/v1/predict", json=body).json()["predictions"][0]["unsure"] is True
        assert lenient.post("/v1/predict", json=body).json()["predictions"][0]["unsure"] is False
        assert strict.get("/v1/model").json()["unsure_below"] == top + 0.01
    assert build_parser().parse_args(["serve", "r", "--unsure-below", "0.8"]).unsure_below == 0.8


def test_a_model_without_its_run_is_served_as_predict_takes_it(tiny_run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):  # the model and its checksum: no config, no metrics
        shutil.copy(tiny_run_dir / name, bare / name)
    for source in (bare, bare / artifacts.MODEL):
        with TestClient(create_app(source)) as client:
            info = client.get("/v1/model").json()
            assert (info["run"], info["settings"], info["metrics"]) == (None, None, None)  # no run to name
            assert_serving(client)
    with TestClient(create_app(tiny_run_dir / artifacts.MODEL)) as client:  # a run's own: the run's details
        info = client.get("/v1/model").json()
        assert info["run"] == tiny_run_dir.name and info["settings"]["hidden_sizes"] == [16, 8] and info["metrics"]
    process, base = start_server(bare, tmp_path / "serve.log")  # `fmnist serve FOLDER`, as predict takes it
    try:
        assert httpx.get(f"{base}/v1/model", timeout=10).json()["model_sha256"] == info["model_sha256"]
    finally:
        process.terminate()
        process.wait(timeout=60)
    odd = tmp_path / os.fsdecode(b"odd\xffname")  # made on a system of another encoding
    shutil.copytree(bare, odd)
    with pytest.raises(FmnistError, match="has a name that is not UTF-8: rename it"):
        create_app(odd)


def test_the_model_details_give_the_test_metrics_as_they_are_now(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name)
    metrics = json.loads((run / artifacts.METRICS).read_text())
    with TestClient(create_app(run)) as client:
        assert client.get("/v1/model").json()["metrics"] == metrics
        # `fmnist evaluate` scores it again, on another backend, while it is served
        (run / artifacts.METRICS).write_text(json.dumps({**metrics, "evaluated_backend": "tensorflow"}))
        assert client.get("/v1/model").json()["metrics"]["evaluated_backend"] == "tensorflow"
        (run / artifacts.METRICS).write_text("{ damaged")
        answer = client.get("/v1/model")
        assert answer.status_code == 200 and answer.json()["metrics"] is None


def test_a_run_whose_config_is_damaged_is_served_as_predict_takes_it(tiny_run_dir, tmp_path, caplog):
    run = shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name)
    (run / artifacts.CONFIG).write_text("{ damaged")  # the model holds its own architecture
    with caplog.at_level(logging.WARNING, logger="fmnist.serve"), TestClient(create_app(run)) as client:
        info = client.get("/v1/model").json()
        assert (info["run"], info["settings"]) == (run.name, None) and info["metrics"]
        assert_serving(client)
    assert "config.json is not valid JSON" in caplog.text and "/v1/model gives no settings" in caplog.text
