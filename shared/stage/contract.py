"""The handler contract: what a stage receives, what it returns, and what it may do besides.

A stage is a `StageHandler` (a name, an input topic, `handle(batch) -> StageResult`). It
never writes Postgres or Kafka itself: it returns rows to upsert, records to produce and
dead letters, and the runner writes them in that order before it commits the offsets. A
stage with time-driven work (learn's timeouts, report's completion checks) also `Ticks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import psycopg

from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.events import Event
from shared.topics import TopicSpec

# Headers `voc replay job` sets on the records it re-emits; the runner passes them on to
# everything a batch carrying them produces, so they reach every later stage.
REPLAY_HEADER = "voc-replay"
NO_CACHE_HEADER = "voc-no-cache"  # `--no-cache`: LLM calls for these records skip the cache
REPLAY_MARKS = (REPLAY_HEADER, NO_CACHE_HEADER)

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Incoming:
    """A decoded input record with where it came from (`event` is None for a poison one)."""

    event: Any
    topic: str
    partition: int
    offset: int
    raw: bytes
    key: bytes | None
    headers: Headers = ()

    @property
    def replay_marks(self) -> Headers:
        """The replay headers this record carries."""
        return tuple((k, v) for k, v in self.headers if k in REPLAY_MARKS)

    @property
    def no_cache(self) -> bool:
        """Whether LLM calls made for this record must skip the result cache (a replay
        after a prompt or model change): stages pass `cache=False` for it."""
        return any(k == NO_CACHE_HEADER for k, _ in self.headers)


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: full topic name, key and serialised value."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()

    @classmethod
    def event(cls, topic: str, key: str, event: Event) -> Outgoing:
        """An event record keyed by `key`."""
        return cls(topic, key.encode(), event.to_bytes())


@dataclass(frozen=True)
class DeadLetterOut:
    """A review (or whole record) the stage gives up on, and the `Failure` why.

    `value` is what a redrive re-feeds (the record itself, or an event holding just the
    failed review); `review_ids` lists a whole record's reviews, each counted as failed.
    """

    failure: Failure
    value: bytes
    key: bytes | None
    source: Incoming | None
    job_id: str | None = None
    review_id: str | None = None
    review_ids: tuple[str, ...] = ()

    @property
    def error_type(self) -> str:
        """The failure's kind (the `error_type` of headers, rows and metrics)."""
        return self.failure.kind

    @property
    def error(self) -> str:
        """The failure's reason."""
        return self.failure.reason


PostProduce = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


@dataclass
class StageResult:
    """What a batch produced: rows to upsert, events to emit, dead letters.

    `cleanup` actions run after the events were produced (and acknowledged), together in
    one transaction: for state that may only go once its content is safely downstream,
    such as `learn`'s held batches. A crash before they commit replays them, so they must
    be idempotent (a DELETE by key is).
    """

    upserts: list[tuple[Upsert, list[dict[str, Any]]]] = field(default_factory=list)
    events: list[Outgoing] = field(default_factory=list)
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    reviews_out: int = 0
    cleanup: list[PostProduce] = field(default_factory=list)

    def merge(self, other: StageResult) -> None:
        """Add another result's rows, events, dead letters and cleanup to this one."""
        self.upserts.extend(other.upserts)
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        self.reviews_out += other.reviews_out
        self.cleanup.extend(other.cleanup)


class StageHandler(Protocol):
    """A pipeline stage as the runner sees it."""

    name: str
    input: TopicSpec

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Process decoded records; must not write Postgres or Kafka itself."""
        ...


@runtime_checkable
class Ticks(Protocol):
    """Optional: a stage that also does time-driven work (learn timeouts, report checks).

    The input topic's runner calls `tick()` every `tick_interval_s` and writes its result
    like a batch's (no offset is committed for it, so a tick must find its work again).
    """

    tick_interval_s: float

    async def tick(self) -> StageResult:
        """Time-driven work; its result is upserted and produced."""
        ...
