"""Dead-letter routing: non-blocking retry tiers first, then the stage's dead-letter topic.

A record (or one review of it) whose `Failure` is retryable (the LLM provider was
unavailable, timed out, or its quota did not allow the call in time) is produced to the
stage's retry topic of its next tier, with a `voc-not-before` time; the partition it came
from moves on at once. Each tier is consumed by its own runner that waits for that time
(records of one tier share one delay, so they are due in the order they arrive). After the
last tier, or at once for a failure that waiting will not cure (malformed output, a
schema-invalid record, a record the infrastructure keeps refusing), the record goes to the
dead-letter topic and to `dead_letters`.

Every retried or dead-lettered record carries the same headers: original topic, partition
and offset, stage, the failure's kind, reason and retryability, attempt count,
first-failure time and job (and review) id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.db.models import DeadLetter
from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.stage.contract import DeadLetterOut, Incoming, Outgoing
from shared.topics import dlq, retry_topic

H_ATTEMPT = "voc-attempt"
H_NOT_BEFORE = "voc-not-before"
H_FIRST_FAILED = "voc-first-failed-at"
H_ORIG_TOPIC = "voc-original-topic"
H_ORIG_PARTITION = "voc-original-partition"
H_ORIG_OFFSET = "voc-original-offset"
H_RETRYABLE = "voc-error-retryable"
H_PAYLOAD_OMITTED = "voc-payload-omitted"

DEAD_LETTERS = Upsert(
    DeadLetter.__table__,  # type: ignore[arg-type]
    key=("id",),
    # every column but created_at (`attempts` has a server default but is always known)
    columns=tuple(c.name for c in DeadLetter.__table__.columns if c.name != "created_at"),
)


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
    failure: Failure,
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
        ("voc-error-type", clean(failure.kind)[:200].encode()),
        ("voc-error-message", clean(failure.reason)[:2000].encode()),
        (H_RETRYABLE, b"true" if failure.retryable else b"false"),
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
    tier = attempt if failure.retryable and origin.attempt < len(delays_s) else 0
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


class Router:
    """Routes one stage's dead letters and turns them into records and `dead_letters` rows."""

    def __init__(self, stage: str, prefix: str, delays_s: Sequence[float]) -> None:
        self.stage = stage
        self.prefix = prefix
        self.delays_s = tuple(delays_s)

    def route(self, d: DeadLetterOut) -> Routing:
        """The next hop of `d`."""
        return route(
            stage=self.stage,
            prefix=self.prefix,
            origin=self._origin(d),
            failure=d.failure,
            delays_s=self.delays_s,
            job_id=safe_id(d.job_id),
            review_id=safe_id(d.review_id),
        )

    def record(self, d: DeadLetterOut, r: Routing) -> Outgoing:
        """The retry or dead-letter record of `d`."""
        return Outgoing(r.topic, d.key, d.value, r.headers)

    def rows(self, d: DeadLetterOut, r: Routing) -> list[dict[str, Any]]:
        """One `dead_letters` row per failed review (or one for a record without reviews)."""
        o = self._origin(d)
        base = {
            "stage": self.stage,
            "job_id": safe_id(d.job_id),
            "topic": o.topic,
            "partition": o.partition,
            "offset": o.offset,
            "error_type": clean(d.failure.kind)[:200],
            "error": clean(d.failure.reason)[:2000],
            "attempts": r.attempt,
            "payload": d.value,
            "redriven_at": None,
        }
        reviews = [d.review_id] if d.review_id else list(d.review_ids)
        reviews = [x for x in reviews if safe_id(x)]
        if not reviews:
            ident = f"{self.stage}:{o.topic}:{o.partition}:{o.offset}"
            return [base | {"id": ident, "review_id": None}]
        return [base | {"id": f"{self.stage}:{x}", "review_id": x} for x in reviews]

    def _origin(self, d: DeadLetterOut) -> Origin:
        src = d.source
        if src is None:
            return Origin("", -1, -1, 0, None)
        return origin_of(src.topic, src.partition, src.offset, header_map(src.headers))


def without_payload(rec: Outgoing) -> Outgoing:
    """A dead letter the broker refuses as too large: the headers go, the payload stays in
    the `dead_letters` row (a redrive reads it from there)."""
    return Outgoing(rec.topic, rec.key, b"", (*rec.headers, (H_PAYLOAD_OMITTED, b"too large")))


def record_dead_letter(rec: Incoming, failure: Failure) -> DeadLetterOut:
    """A whole decoded record given up on: every review in it counts as failed."""
    return DeadLetterOut(
        failure=failure,
        value=rec.raw,
        key=rec.key,
        source=rec,
        job_id=safe_id(getattr(rec.event, "job_id", None)),
        review_ids=_review_ids(rec.event),
    )


def poison_dead_letter(src: Incoming, reason: str) -> DeadLetterOut:
    """A record that does not decode into its topic's model: best-effort ids from its JSON."""
    doc = _json_object(src.raw)
    return DeadLetterOut(
        failure=Failure("PoisonRecord", reason),
        value=src.raw,
        key=src.key,
        source=src,
        job_id=safe_id(doc.get("job_id")),
        review_ids=_review_ids_of(doc),
    )


def clean(text: str) -> str:
    """Postgres text cannot hold NUL characters (garbage records carry them)."""
    return text.replace("\x00", "\\x00")


def safe_id(value: object) -> str | None:
    """An id that fits the 36-character id columns, else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 36 else None


def _review_ids(event: Any) -> tuple[str, ...]:
    """The ids of the reviews a stage event carries (for whole-record dead letters)."""
    if event is None:
        return ()
    reviews = getattr(event, "reviews", None)
    if reviews is not None:
        return tuple(r.id for r in reviews if safe_id(getattr(r, "id", None)))
    return tuple(r for r in getattr(event, "review_ids", ()) if safe_id(r))


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _review_ids_of(doc: dict[str, Any]) -> tuple[str, ...]:
    ids: list[Any] = []
    if isinstance(doc.get("reviews"), list):
        ids = [r.get("id") for r in doc["reviews"] if isinstance(r, dict)]
    elif isinstance(doc.get("review_ids"), list):
        ids = doc["review_ids"]
    return tuple(i for i in ids if safe_id(i))
