"""`fmnist serve`'s Prometheus metrics at /metrics: the HTTP requests by route, method and status with their latency
(prometheus-fastapi-instrumentator), and what the model answered."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.responses import Response

from fmnist.facts import CLASS_NAMES

METRICS_URL = "/metrics"
NAMESPACE = "fmnist"
# Seconds: a request is answered in a few milliseconds, one asking for occlusion maps in a second or more.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REFUSED_STATUSES = (400, 405, 408, 431)  # what the HTTP layer and serve_http.HttpMethodsOnly answer themselves
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # a forward pass takes up to --max-batch rows


class ServeMetrics:
    """One app's metrics, in a registry of its own: two apps in one process (tests) count apart, and a process's
    own default metrics are not mixed in."""

    def __init__(self, app: FastAPI) -> None:
        """Instrument ``app``'s requests (the scrapes of /metrics left out) with middleware around what it has so far:
        made last, it counts the requests other middleware refuse too."""
        self.registry = CollectorRegistry()
        Instrumentator(should_group_status_codes=False, excluded_handlers=[f"^{METRICS_URL}$"],
                       registry=self.registry).instrument(app, metric_namespace=NAMESPACE,
                                                          latency_highr_buckets=LATENCY_BUCKETS,
                                                          latency_lowr_buckets=LATENCY_BUCKETS)
        # Refused before the app (serve_http.json_http_protocol, HttpMethodsOnly), so never in the requests counted.
        self.refusals = Counter(f"{NAMESPACE}_http_refused", "requests refused before they reached the app: "
                                "unparsable (400), a method outside HTTP's own (405), headers too slow (408) or too "
                                "large (431)", ["status"], registry=self.registry)
        for status in REFUSED_STATUSES:
            self.refusals.labels(str(status))
        self.model = Info(f"{NAMESPACE}_model", "the model served: its run, SHA-256 and Keras backend",
                          registry=self.registry)
        self.predictions = Counter(f"{NAMESPACE}_predictions", "inputs answered, by top class", ["class"],
                                   registry=self.registry)
        for name in CLASS_NAMES:  # every class's series from the start, at 0
            self.predictions.labels(name)
        self.unsure = Counter(f"{NAMESPACE}_unsure_predictions",
                              "inputs answered whose top class is under the unsure threshold", registry=self.registry)
        self.pass_rows = Histogram(f"{NAMESPACE}_forward_pass_rows", "rows in one forward pass of the model (the "
                                   "batcher runs concurrent requests' inputs together)", buckets=ROW_BUCKETS,
                                   registry=self.registry)
        self.pass_seconds = Histogram(f"{NAMESPACE}_forward_pass_seconds", "seconds one forward pass of the model took",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)

    def refused(self, status: int) -> None:
        self.refusals.labels(str(status)).inc()

    def forward_pass(self, rows: int, seconds: float) -> None:
        self.pass_rows.observe(rows)
        self.pass_seconds.observe(seconds)

    def answered(self, answer: dict[str, Any]) -> None:
        """Count one input's answer, as :func:`fmnist.predict.describe` gives it."""
        self.predictions.labels(answer["top"][0]["class"]).inc()
        if answer["unsure"]:
            self.unsure.inc()

    def exposition(self, accept: str | None) -> Response:
        """The metrics in the format the scraper's Accept header asks for (Prometheus' text, or OpenMetrics)."""
        encode, content_type = choose_encoder(accept or "")
        return Response(encode(self.registry), media_type=content_type)
