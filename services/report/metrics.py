"""Report-specific Prometheus metrics: report builds and callback deliveries.

The generic stage metrics (records in/out, batch latency, commits, dead letters) come from
`shared.metrics` through the runner; these are what only the report stage knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REPORTS_BUILT = Counter(
    "vocstream_report_builds_total",
    "Reports built, by status (partial, report_ready, completed) and summary source "
    "(llm, fallback)",
    ["status", "summary_source"],
)
STALLED_JOBS = Gauge(
    "vocstream_report_jobs_stalled",
    "Jobs whose reviews stopped finishing for the stall timeout (status stalled), as this "
    "replica last counted them in Postgres",
)
TRANSITIONS = Counter(
    "vocstream_report_transitions_total",
    "Job status transitions, by target status and outcome: applied, or refused because the "
    "job's status had changed meanwhile (an operator's cancel, a replay, another replica)",
    ["status", "outcome"],
)
IS_LEADER = Gauge(
    "vocstream_report_leader", "1 while this replica produces job events and delivers callbacks"
)
REPORT_BUILD_SECONDS = Histogram(
    "vocstream_report_build_seconds",
    "Time to build one report: aggregates, LLM summary, assembly",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 150),
)
CALLBACKS = Counter(
    "vocstream_callbacks_total",
    "Callback events by outcome: delivered, retry (failed, will retry), failed (gave up "
    "or refused by the SSRF guard)",
    ["outcome"],
)


def observe_build(status: str, summary_source: str, seconds: float) -> None:
    """Count one report build."""
    REPORTS_BUILT.labels(status, summary_source).inc()
    REPORT_BUILD_SECONDS.observe(seconds)


def observe_callbacks(rows: Iterable[Mapping[str, Any]], max_attempts: int) -> None:
    """Count the outcome of each delivered-or-attempted outbox row."""
    for row in rows:
        if row.get("delivered_at") is not None:
            CALLBACKS.labels("delivered").inc()
        elif int(row.get("attempts") or 0) >= max_attempts:
            CALLBACKS.labels("failed").inc()
        else:
            CALLBACKS.labels("retry").inc()
