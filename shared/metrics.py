"""Prometheus metrics common to every stage, and the probes each service serves.

Each service process exposes `/metrics` (the API through its own route, stages on
`VOC_METRICS_PORT`), `/health` and `/ready`. Stage metrics carry a `stage` label so one
dashboard covers all; the stage runner feeds them through one observer per stage
(`shared.stage.observer.PrometheusObserver`).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

EVENTS_IN = Counter("vocstream_events_in_total", "Kafka records consumed", ["stage", "topic"])
EVENTS_OUT = Counter("vocstream_events_out_total", "Kafka records produced", ["stage", "topic"])
REVIEWS_IN = Counter("vocstream_reviews_in_total", "Reviews received by a stage", ["stage"])
REVIEWS_OUT = Counter("vocstream_reviews_out_total", "Reviews a stage passed on", ["stage"])
ROWS_UPSERTED = Counter(
    "vocstream_rows_upserted_total", "Rows upserted into Postgres", ["stage", "table"]
)
DEAD_LETTERS = Counter(
    "vocstream_dead_letters_total", "Records sent to a dead-letter topic", ["stage", "error_type"]
)
RETRIES = Counter("vocstream_retries_total", "Records sent to a retry tier", ["stage", "tier"])
BATCH_SIZE = Histogram(
    "vocstream_batch_records",
    "Records per processed batch",
    ["stage"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
BATCH_SECONDS = Histogram(
    "vocstream_batch_seconds",
    "Time to process a batch: core, upserts, produce and commit",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INFLIGHT_BATCHES = Gauge(
    "vocstream_inflight_batches", "Batches being processed concurrently", ["stage"]
)
COMMITS = Counter("vocstream_commits_total", "Offset commits", ["stage", "result"])
LAST_COMMIT = Gauge(
    "vocstream_last_commit_timestamp_seconds", "Unix time of the last offset commit", ["stage"]
)
INFRA_FAULTS = Counter(
    "vocstream_infra_faults_total",
    "Attempts of a stage that failed because Postgres, Kafka or Redis was unavailable",
    ["stage", "component"],
)
GAVE_UP = Counter(
    "vocstream_records_gave_up_total",
    "Records dead-lettered because the infrastructure kept refusing them while it worked",
    ["stage", "error_type"],
)


class Health:
    """Liveness and readiness of a service process, as its probes see them.

    The main loop calls `beat()` every iteration; `/health` fails once it has not for
    `stale_after_s` (a wedged event loop). `/ready` is true while `ready` is set (once the
    service's clients are connected, cleared while it shuts down) and no dependency is
    marked down: whoever last used or probed Postgres, Kafka or Redis says `up(name)` or
    `down(name, why)`, so a stage riding out an outage reports not-ready meanwhile.
    """

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self.last_beat = time.monotonic()
        self.ready = False
        self.failing: dict[str, str] = {}  # dependency -> why its last attempt failed

    def beat(self) -> None:
        """The main loop is alive."""
        self.last_beat = time.monotonic()

    def alive(self) -> bool:
        """Whether the main loop ran recently."""
        return time.monotonic() - self.last_beat < self.stale_after_s

    def up(self, dependency: str) -> None:
        """The last attempt to use `dependency` succeeded."""
        self.failing.pop(dependency, None)

    def down(self, dependency: str, why: str) -> None:
        """The last attempt to use `dependency` failed."""
        self.failing[dependency] = why[:200]

    def is_ready(self) -> bool:
        """What `/ready` answers."""
        return self.ready and not self.failing and self.alive()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype = generate_latest(REGISTRY), CONTENT_TYPE_LATEST
                code = 200
            elif path in ("/health", "/ready"):
                ok = health.alive() if path == "/health" else health.is_ready()
                code, ctype = (200 if ok else 503), "application/json"
                body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
            else:
                code, ctype, body = 404, "text/plain", b"not found"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would flood the JSON log

    return Handler


def serve_metrics(port: int, health: Health | None = None) -> Health:
    """Serve `/metrics`, `/health` and `/ready` on `port` in a thread (0: do not serve)."""
    health = health or Health()
    if port:
        server = ThreadingHTTPServer(("0.0.0.0", port), _handler(health))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return health
