"""Failed records: non-blocking retry tiers first, then the stage's dead-letter topic.

A record (or one review of it) that fails with a retryable error (the LLM provider was
unavailable, timed out, or its quota did not allow the call in time) is produced to the
stage's retry topic of its next tier, with a `voc-not-before` time; the partition it came
from moves on at once. Each tier is consumed by its own consumer that waits for that time
(records of one tier share one delay, so they are due in the order they arrive). After the
last tier, or at once for an error that will not go away by waiting (malformed output, a
schema-invalid record), the record goes to the dead-letter topic and to `dead_letters`.

Every retried or dead-lettered record carries the same headers: original topic, partition
and offset, stage, error type and message, attempt count, first-failure time and job id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.topics import dlq, retry_topic

# Errors that waiting can cure. Stage handlers report errors by type name, so this works
# for the LLM layer's errors without importing them here.
RETRYABLE_ERRORS = frozenset({"LLMUnavailable", "LLMTimeout", "LLMRateLimited"})

H_ATTEMPT = "voc-attempt"
H_NOT_BEFORE = "voc-not-before"
H_FIRST_FAILED = "voc-first-failed-at"
H_ORIG_TOPIC = "voc-original-topic"
H_ORIG_PARTITION = "voc-original-partition"
H_ORIG_OFFSET = "voc-original-offset"


@dataclass(frozen=True)
class Origin:
    """Where a failing record first came from, and how often it has been tried."""

    topic: str
    partition: int
    offset: int
    attempt: int  # attempts made before this one (0 for a record from the input topic)
    first_failed_at: str | None


def header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as a dict of text (the last value of a repeated key wins)."""
    return {k: v.decode(errors="replace") for k, v in headers}


def origin_of(topic: str, partition: int, offset: int, headers: Mapping[str, str]) -> Origin:
    """The original coordinates carried by a retried record, or the record's own."""
    if H_ORIG_TOPIC in headers:
        return Origin(
            headers[H_ORIG_TOPIC],
            int(headers.get(H_ORIG_PARTITION, "-1")),
            int(headers.get(H_ORIG_OFFSET, "-1")),
            int(headers.get(H_ATTEMPT, "0")),
            headers.get(H_FIRST_FAILED),
        )
    return Origin(topic, partition, offset, 0, None)


def not_before_ms(headers: Mapping[str, str]) -> int:
    """When a retried record may be processed again (0: now)."""
    try:
        return int(headers.get(H_NOT_BEFORE, "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Routing:
    """Where a failure goes: retry tier `tier` (1-based), or the DLQ when `tier` is 0."""

    topic: str
    tier: int
    attempt: int
    headers: tuple[tuple[str, bytes], ...]


def route(
    *,
    stage: str,
    prefix: str,
    origin: Origin,
    error_type: str,
    error: str,
    retryable: bool,
    delays_s: Sequence[float],
    job_id: str | None,
    review_id: str | None,
    now_ms: int | None = None,
) -> Routing:
    """Decide the next hop of a failure and the headers it travels with."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    attempt = origin.attempt + 1
    first = origin.first_failed_at or datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()
    headers: list[tuple[str, bytes]] = [
        ("voc-stage", stage.encode()),
        ("voc-error-type", error_type.encode()),
        ("voc-error-message", error[:2000].encode()),
        (H_ATTEMPT, str(attempt).encode()),
        (H_FIRST_FAILED, first.encode()),
        (H_ORIG_TOPIC, origin.topic.encode()),
        (H_ORIG_PARTITION, str(origin.partition).encode()),
        (H_ORIG_OFFSET, str(origin.offset).encode()),
    ]
    if job_id:
        headers.append(("voc-job-id", job_id.encode()))
    if review_id:
        headers.append(("voc-review-id", review_id.encode()))
    tier = attempt if retryable and origin.attempt < len(delays_s) else 0
    if tier:
        due = now_ms + int(delays_s[tier - 1] * 1000)
        headers.append((H_NOT_BEFORE, str(due).encode()))
        return Routing(retry_topic(stage, tier).full_name(prefix), tier, attempt, tuple(headers))
    return Routing(dlq(stage).full_name(prefix), 0, attempt, tuple(headers))


def parse_delays(text: str) -> tuple[float, ...]:
    """`"2,10,30"` -> (2.0, 10.0, 30.0): one delay per retry tier."""
    delays = tuple(float(x) for x in text.split(",") if x.strip())
    if any(d < 0 for d in delays):
        raise ValueError("retry delays must be >= 0")
    return delays


def describe(headers: Mapping[str, str]) -> dict[str, Any]:
    """The failure headers of a record, for `voc dlq show`."""
    return {k: v for k, v in headers.items() if k.startswith("voc-")}
