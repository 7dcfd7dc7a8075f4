import shutil

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fmnist import artifacts
from fmnist.facts import CLASS_NAMES
from fmnist.serve import create_app
from samples import encode, garment


def scrape(client: TestClient, **headers: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by name and sorted labels, as a Prometheus server would parse them."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def requests(samples: dict, handler: str, method: str, status: int) -> float:
    return samples.get(("fmnist_http_requests_total",
                        (("handler", handler), ("method", method), ("status", str(status)))), 0.0)


def test_metrics_count_the_requests_the_answers_and_the_forward_passes(tiny_run_dir):
    sha = (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    with TestClient(create_app(tiny_run_dir, unsure_below=1.0)) as client:  # every answer unsure
        before = scrape(client)
        assert all(before[("fmnist_predictions_total", (("class", name),))] == 0 for name in CLASS_NAMES)
        images = [("files", (f"{i}.png", encode(garment(i % 2 == 0)), "image/png")) for i in range(3)]
        answered = client.post("/v1/predict", files=images).json()["predictions"]
        assert client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
        assert client.get("/no/such/path").status_code == 404
        health = client.get("/v1/health").json()
        after = scrape(client)

    assert requests(after, "/v1/predict", "POST", 200) == 1 and requests(after, "/v1/predict", "POST", 415) == 1
    assert requests(after, "none", "GET", 404) == 1  # unknown paths under one name, not one series each
    assert requests(after, "/v1/health", "GET", 200) == 1
    assert not any(dict(labels).get("handler") == "/metrics" for _, labels in after)  # scrapes are not counted
    top = [answer["top"][0]["class"] for answer in answered]
    assert {name: after[("fmnist_predictions_total", (("class", name),))] for name in CLASS_NAMES} == \
        {name: top.count(name) for name in CLASS_NAMES}
    assert after[("fmnist_unsure_predictions_total", ())] == 3
    assert after[("fmnist_forward_pass_rows_count", ())] == health["forward_passes"] == 1
    assert after[("fmnist_forward_pass_rows_sum", ())] == health["rows"] == 3
    assert after[("fmnist_forward_pass_seconds_count", ())] == 1
    info = [dict(labels) for name, labels in after if name == "fmnist_model_info"]
    assert info == [{"backend": "jax", "model_sha256": sha, "run": tiny_run_dir.name}]


def test_a_model_without_its_run_is_named_by_its_checksum_alone(tiny_run_dir, tmp_path):
    for name in (artifacts.MODEL, artifacts.MODEL_SHA256):
        shutil.copy(tiny_run_dir / name, tmp_path / name)
    with TestClient(create_app(tmp_path / artifacts.MODEL)) as client:
        info = [dict(labels) for name, labels in scrape(client) if name == "fmnist_model_info"]
    sha = (tiny_run_dir / artifacts.MODEL_SHA256).read_text().split()[0]
    assert info == [{"backend": "jax", "model_sha256": sha, "run": ""}]


def test_each_app_counts_its_own_requests(tiny_run_dir):
    with TestClient(create_app(tiny_run_dir)) as first, TestClient(create_app(tiny_run_dir)) as second:
        first.get("/v1/model")
        assert requests(scrape(first), "/v1/model", "GET", 200) == 1
        assert requests(scrape(second), "/v1/model", "GET", 200) == 0


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(tiny_run_dir):
    with TestClient(create_app(tiny_run_dir)) as client:
        response = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_a_rebinding_page_cannot_read_the_metrics(tiny_run_dir):
    with TestClient(create_app(tiny_run_dir, loopback_only=True), base_url="http://evil.example") as client:
        refused = client.get("/metrics")
    assert refused.status_code == 400 and "Host header" in refused.json()["error"]


def test_made_up_methods_are_refused_before_they_could_add_series(tiny_run_dir):
    with TestClient(create_app(tiny_run_dir)) as client:
        for method in ("SCAN0", "SCAN1", "X-Y"):
            for path in ("/v1/health", "/no/such/path"):
                refused = client.request(method, path)
                assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"
                assert refused.json()["error"] == f"'{method}' is not a method this server knows: it answers GET, " \
                                                  "HEAD and POST"
        assert client.request("DELETE", "/v1/health").status_code == 405  # one HTTP defines: the app's own answer
        samples = scrape(client)
    methods = {dict(labels)["method"] for name, labels in samples if name == "fmnist_http_requests_total"}
    assert methods == {"DELETE"}
    assert samples[("fmnist_http_refused_total", (("status", "405"),))] == 6
