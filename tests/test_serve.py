import asyncio
import errno
import json
import logging
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from conftest import LeavingRequest, assert_serving, run_cli, start_server
from fmnist import artifacts
from fmnist.errors import FmnistError
from fmnist.facts import CLASS_NAMES
from fmnist.images import load_input
from fmnist.predict import Classifier
from fmnist.serve import Batcher, create_app, serve
from fmnist.serve_http import root_path
from samples import encode, garment, npy


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


def test_unknown_routes_and_methods_answer_json(client):
    for response, status in ((client.get("/v2/predict"), 404), (client.post("/v1/predict/"), 404),
                             (client.get("/v1/predict"), 405), (client.delete("/v1/model"), 405)):
        assert response.status_code == status and response.json()["error"]
    assert client.put("/v1/predict").headers["allow"] == "POST"  # what a 405 must say (RFC 9110)
    said = client.get("/nope").json()["error"]
    assert said.startswith("nothing at /nope: this server answers GET /v1/health, GET /metrics, GET /v1/model, POST "
                           "/v1/predict, with its web page at / and the API's documentation at /docs"), said
    for route in client.app.routes:  # each route it names is one there is
        if isinstance(route, APIRoute) and route.include_in_schema:
            assert f"{next(iter(route.methods))} {route.path}" in said
    assert set(client.delete("/v1/model").headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert client.get("/v1/predict").json() == {"error": "GET is not answered on /v1/predict: use POST"}
    # Inside the static files' mount too, the routes named are the server's, not under /static.
    said = client.get("/static/nope.js").json()["error"]
    assert said.startswith("nothing at /static/nope.js: this server answers GET /v1/health, GET /metrics"), said
    # Behind a proxy that strips --root-path /fmnist, uvicorn puts it in front of each path it gets; a request sent
    # to the server itself with the prefix has it twice.
    proxied = TestClient(client.app, root_path="/fmnist")
    said = proxied.get("/fmnist/fmnist/v1/health").json()["error"]
    assert said.startswith("nothing at /fmnist/fmnist/v1/health (the path begins with --root-path /fmnist twice: the "
                           "server takes requests whose prefix the proxy has removed; sent to the server itself, leave "
                           "/fmnist out): this server answers GET /fmnist/v1/health, GET /fmnist/metrics"), said
    said = proxied.get("/fmnist/static/nope.js").json()["error"]
    assert said.startswith("nothing at /fmnist/static/nope.js: this server answers GET /fmnist/v1/health,"), said
    static = client.post("/static/app.js")
    assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD", static.headers
    assert static.json() == {"error": "POST is not answered on /static/app.js: use GET, HEAD"}


def test_each_refusal_gives_its_reason_in_the_log_where_the_access_line_gives_only_its_status(tiny_run_dir, client,
                                                                                              caplog):
    with caplog.at_level(logging.INFO, logger="fmnist"):
        client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"})
        client.get("/no%0Awhere")
        client.request("PROPFIND", "/v1/model")
        client.get("/" + "x" * 5000)
        with TestClient(create_app(tiny_run_dir, allowed_origins=["http://localhost:3000"]),
                        base_url="http://localhost") as allowing:
            allowing.options("/v1/predict", headers={"Origin": "http://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert said[0].startswith("refused POST /v1/predict with 415: ") and "text/plain" in said[0], said
    assert said[1].startswith("refused GET /no\\nwhere with 404: nothing at "), said  # on one line
    assert said[2].startswith("refused PROPFIND /v1/model with 405: 'PROPFIND' is not a method"), said
    assert said[3].startswith(f"refused GET /{'x' * 198}… with 404: ") and len(said[3]) < 1300, said[3]  # in part
    assert said[4] == ("refused OPTIONS (a web page's preflight) with 400: Disallowed CORS origin for a call from a "
                       "web page: this server allows the origins http://localhost:3000 (--allow-origin)"), said
    assert len(said) == 5


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
    for bad_port in (-1, 70000):  # 0 takes a free one: start_server serves so
        with pytest.raises(FmnistError, match=r"between 0 \(a free one\) and 65535"):
            serve(tiny_run_dir, port=bad_port)
    with pytest.raises(FmnistError, match="the host is empty: give an address, such as 127.0.0.1"):
        serve(tiny_run_dir, host="", port=port)
    with pytest.raises(FmnistError, match=r"cannot listen on 192\.0\.2\.1 port 0: .*: it is not an address of this "
                                          r"machine; give one of its own to --host, or 127\.0\.0\.1 \(this machine "
                                          r"alone\) or 0\.0\.0\.0 \(all its addresses\)$"):
        serve(tiny_run_dir, host="192.0.2.1", port=0)  # TEST-NET-1: never a machine's own
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:  # an IPv6 address as a URL writes it
        port = taken.getsockname()[1]
        with pytest.raises(FmnistError, match=f"cannot listen on ::1 port {port}: Address already in use"):
            serve(tiny_run_dir, host="[::1]", port=port)
    for with_port in ("localhost:8080", "[::1]:8080"):  # as in a URL
        with pytest.raises(FmnistError, match=f"^--host {re.escape(with_port)} holds a port: give the address alone, "
                                              "and the port with --port$"):
            serve(tiny_run_dir, host=with_port, port=port)
    for unpaired, said in (("[::1", "[::1"), ("::1]", "::1]"), ("[::1]]", "::1]")):  # not taken for one with a port
        with pytest.raises(FmnistError, match=f"^--host {re.escape(said)} has a bracket without its pair: give an "
                                              "IPv6 address with both, or none"):
            serve(tiny_run_dir, host=unpaired, port=port)
    with pytest.raises(FmnistError, match="is a folder of runs, not a run"):
        serve(tiny_run_dir.parent, port=port)  # free again now


def test_the_port_is_held_while_the_model_loads_and_freed_after(tiny_run_dir, monkeypatch):
    import fmnist.serve

    # A free port, taken as serve takes it (port 0): one picked here and closed could be another test's by then.
    create_server, taken = socket.create_server, []

    def taking(*args, **kwargs):
        listener = create_server(*args, **kwargs)
        taken.append(listener.getsockname()[1])
        return listener

    monkeypatch.setattr(socket, "create_server", taking)
    tried = []

    def loading(run_dir):  # where the model would load: another server's bind now fails, then the load does
        try:
            create_server(("127.0.0.1", taken[0])).close()
        except OSError as exc:
            tried.append(exc.errno)
        raise FmnistError("no model here")

    monkeypatch.setattr(fmnist.serve, "Classifier", loading)
    with pytest.raises(FmnistError, match="no model here"):
        serve(tiny_run_dir, port=0, access_log=False)
    assert len(taken) == 1 and tried == [errno.EADDRINUSE]
    create_server(("127.0.0.1", taken[0])).close()  # given back when the server ended


def test_a_model_that_fails_to_load_at_start_up_is_one_line_not_uvicorns_traceback(tiny_run_dir, tmp_path):
    import keras

    run = shutil.copytree(tiny_run_dir, tmp_path / "run")
    other = keras.Sequential([keras.Input((100,)), keras.layers.Dense(3, activation="softmax")])
    other.save(run / artifacts.MODEL)  # with a checksum to match: a model of another task
    (run / artifacts.MODEL_SHA256).write_text(artifacts.sha256_file(run / artifacts.MODEL) + "\n")
    result = run_cli("serve", str(run), "--port", "0", timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "startup failed" not in result.stderr, result.stderr
    assert "serving" not in result.stderr  # said only once the model answers
    assert result.stderr.strip().splitlines()[-1] == (
        f"fmnist: error: {run} maps 100 features to 3 classes, not 784 pixels to 10 classes")


def test_a_run_given_by_its_name_is_looked_up_once(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "runs" / "20261207T120000Z-quick")
    config = artifacts.read_json(run / artifacts.CONFIG)
    artifacts.write_json(run / artifacts.CONFIG, {**config, "settings": {**config["settings"], "name": "quick"}})
    result = run_cli("serve", "quick", "--runs-dir", str(tmp_path / "runs"), "--host", "localhost:8080", timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "fmnist: error: --host localhost:8080 holds a port: give the address alone, and the port with --port (see "
        "'fmnist serve --help')")
    assert result.stderr.count("the only one of that --name") == 1, result.stderr


def test_a_server_on_this_machine_alone_answers_only_requests_that_name_it(tiny_run_dir):
    # A page elsewhere pointing its own name at 127.0.0.1 (DNS rebinding) would send that name as the Host.
    with TestClient(create_app(tiny_run_dir, loopback_only=True), base_url="http://localhost:8000") as client:
        for host in ("localhost:8000", "LOCALHOST", "localhost.", "localhost.:8000", "127.0.0.1:8000", "127.0.0.2",
                     "[::1]:8000", "[::1]"):
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
    for url in ("http://x/y", "https://proxy.example.org/fmnist"):  # /docs would not be found
        with pytest.raises(FmnistError, match=f"^--root-path '{url}' is a URL: give its path alone, such as /fmnist$"):
            root_path(url)  # as serve checks it first (not served, where the check is missing)


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
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "fmnist: error: --allow-origin 'localhost:3000' is not an origin as a browser sends it: give scheme, host and "
        "port alone, such as http://localhost:3000 (no path, no '/' at the end), or * for every page (see 'fmnist "
        "serve --help')")


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
    for outside in (-0.1, 1.5, float("nan")):  # from Python, where no parser checked it
        with pytest.raises(FmnistError, match="^the unsure threshold must lie in \\[0, 1\\], not "):
            create_app(tiny_run_dir, unsure_below=outside)


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
    # `fmnist serve FOLDER`, as predict takes it; under -q, its free port still named (start_server reads it there).
    process, base = start_server(bare, tmp_path / "serve.log", options=("-q",))
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
    with caplog.at_level(logging.WARNING, logger="fmnist"), TestClient(create_app(run)) as client:
        info = client.get("/v1/model").json()
        assert (info["run"], info["settings"]) == (run.name, None) and info["metrics"]
        assert_serving(client)
    assert caplog.text.count("config.json is not valid JSON") == 1  # said once, as the model loads
    assert "unchecked against the run's settings" in caplog.text
    caplog.clear()
    run = shutil.copytree(run, tmp_path / "again" / run.name)  # not warned of yet in this process
    with caplog.at_level(logging.WARNING, logger="fmnist"), TestClient(create_app(run / artifacts.MODEL)) as client:
        assert client.get("/v1/model").json()["settings"] is None  # its model.keras as a file: the same run's
    assert caplog.text.count("config.json is not valid JSON") == 1
    assert "unchecked against the run's settings" in caplog.text
