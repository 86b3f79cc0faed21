"""The API's Prometheus metrics, attached in one place: an ASGI middleware and two helpers.

Requests are labelled by route *template* (`/v1/jobs/{job_id}`), never by raw path, so the
label set stays small; unmatched paths share one label. Stage-wide metrics (events and
reviews out) come from `shared.metrics` and are recorded by the Kafka sink.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "vocstream_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "vocstream_api_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UPLOAD_ROWS = Counter(
    "vocstream_api_upload_rows_total",
    "Uploaded rows by outcome",
    ["outcome"],  # accepted | duplicate | rejected
)
UPLOAD_BYTES = Counter("vocstream_api_upload_bytes_total", "Bytes of upload bodies read")
RATE_LIMITED = Counter("vocstream_api_rate_limited_total", "Requests refused with 429")
KEY_LOOKUPS = Counter(
    "vocstream_api_key_lookups_total",
    "API keys looked up in Postgres (not answered by the key cache)",
    ["result"],  # known | unknown
)
KEY_CHANGES = Counter(
    "vocstream_api_key_changes_total", "Key revocations received over Redis pub/sub"
)
WRITE_BATCH = Histogram(
    "vocstream_api_write_batch_items",
    "Items per group-committed statement (coalesce.Coalescer)",
    ["write"],  # jobs
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)
BODIES_REFUSED = Counter(
    "vocstream_api_bodies_refused_total", "Request bodies refused with 413 before parsing"
)
READY_CHECKS = Counter(
    "vocstream_api_ready_checks_total",
    "Dependency checks run by /ready (answers in between come from its cache)",
    ["check", "result"],
)
JOBS_DELETED = Counter(
    "vocstream_api_jobs_deleted_total",
    "Jobs deleted",
    ["by"],  # api | retention
)


def record_upload(accepted: int, duplicates: int, rejected: int) -> None:
    """Count an upload's rows by outcome."""
    UPLOAD_ROWS.labels("accepted").inc(accepted)
    UPLOAD_ROWS.labels("duplicate").inc(duplicates)
    UPLOAD_ROWS.labels("rejected").inc(rejected)


def exposition() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            REQUESTS.labels(method, template, str(status)).inc()
            REQUEST_SECONDS.labels(method, template).observe(time.perf_counter() - started)
