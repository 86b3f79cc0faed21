"""Learn-specific Prometheus metrics: jobs learned and reviews held back.

Generic stage metrics (records in/out, batches, commits, dead letters) come from
`shared.metrics` through the runner.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_LEARNED = Counter(
    "vocstream_learn_jobs_total",
    "Job models stored, by source: llm (learned) or default (LLM failed for good)",
    ["source"],
)
LEARN_FAILURES = Counter(
    "vocstream_learn_failures_total", "Learn attempts that failed, by error type", ["error_type"]
)
LEARN_SECONDS = Histogram(
    "vocstream_learn_seconds",
    "Time to learn one job's model (sample read, LLM call, write)",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 150),
)
HELD_REVIEWS = Gauge(
    "vocstream_learn_held_reviews", "Reviews held in learn_pending, as last seen by the leader"
)
HELD_JOBS = Gauge("vocstream_learn_held_jobs", "Jobs with held reviews, as last seen by the leader")
RELEASED_REVIEWS = Counter(
    "vocstream_learn_released_reviews_total", "Held reviews released once their model existed"
)
IS_LEADER = Gauge("vocstream_learn_leader", "1 while this replica runs the learn/release ticks")
