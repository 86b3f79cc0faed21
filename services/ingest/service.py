"""The ingest stage as the runner sees it: one read per batch, the core, rows and events.

`IngestHandler.handle` prepares every chunk of the batch (ids, in-chunk dedup), asks
Postgres once which of those review ids already exist and with which origin, lets the
core classify the chunks in order and returns the rows to upsert and the events to emit.
The runner (`shared.stage.StageRunner`) decodes each record with the topic's model (a
record with an invalid row is dead-lettered whole there), upserts, produces and only
then commits offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

import psycopg

from services.ingest import metrics
from services.ingest.core import (
    IngestOutcome,
    ingest_batch,
    prepare_chunk,
)
from shared.db.models import IngestChunk
from shared.db.models import Review as ReviewRow
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.settings import CommonSettings
from shared.stage import Incoming, Outgoing, StageResult
from shared.topics import REVIEWS_INGESTED, REVIEWS_SUBMITTED, TopicSpec

# On conflict every column is rewritten except `origin`: the first origin must survive a
# replay, or a replayed chunk would later see its reviews as someone else's duplicates.
REVIEWS = Upsert(
    ReviewRow.__table__,  # type: ignore[arg-type]
    key=("id",),
    update=tuple(
        c.name
        for c in ReviewRow.__table__.columns
        if c.name not in ("id", "origin") and c.server_default is None
    ),
)
INGEST_CHUNKS = Upsert(IngestChunk.__table__, key=("id",))  # type: ignore[arg-type]

# The ids travel as one comma-joined text (review ids are UUIDs): psycopg dumps a Python
# list element by element in Python, which cost more than the query. `$1` and a raw
# cursor skip the %s conversion of the statement too.
_ORIGINS_SQL = b"SELECT id, origin FROM reviews WHERE id = ANY(string_to_array($1, ','))"
READ_SLICE = 1000  # ids per statement of the existing-reviews read


class ReviewOrigins(Protocol):
    """Port: which of these review ids are stored, and the origin that first stored each."""

    async def origins(self, ids: Sequence[str]) -> dict[str, str]:
        """Map every stored id among `ids` to its origin."""
        ...


class PgReviewOrigins:
    """`ReviewOrigins` read from the `reviews` table in one round trip."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def origins(self, ids: Sequence[str]) -> dict[str, str]:
        """`SELECT id, origin ... WHERE id = ANY(ids)` in one round trip.

        The ids go in slices of `READ_SLICE`, pipelined: with a long array the planner
        prefers scanning the whole table over index lookups once the table is big.
        """
        if not ids:
            return {}
        ordered = sorted(ids)  # neighbouring keys share index pages
        found: dict[str, str] = {}
        async with self.pool.connection() as conn:
            async with conn.pipeline():
                cursors = []
                for start in range(0, len(ordered), READ_SLICE):
                    cur = psycopg.AsyncRawCursor(conn)
                    part = ",".join(ordered[start : start + READ_SLICE])
                    await cur.execute(_ORIGINS_SQL, (part,), prepare=True)
                    cursors.append(cur)
            for cur in cursors:
                found.update(await cur.fetchall())
            # End the read's transaction: the pool hands the connection on as it is.
            await conn.rollback()
        return found


class IngestHandler:
    """The ingest `StageHandler`: `reviews.submitted` in, rows and `reviews.ingested` out."""

    name = "ingest"
    input: TopicSpec = REVIEWS_SUBMITTED

    def __init__(self, origins: ReviewOrigins, topic_prefix: str) -> None:
        self.origins = origins
        self.output_topic = REVIEWS_INGESTED.full_name(topic_prefix)

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Ingest a batch of submitted chunks (see the module docstring)."""
        prepared = [prepare_chunk(rec.event) for rec in batch]
        ids = [rid for chunk in prepared for rid in chunk.ids]
        existing = await self.origins.origins(ids) if ids else {}
        outcomes = ingest_batch(prepared, existing)
        result = StageResult()
        self._collect(outcomes, result)
        metrics.observe(outcomes)
        return result

    def _collect(self, outcomes: Sequence[IngestOutcome], result: StageResult) -> None:
        rows: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        topic = self.output_topic
        for o in outcomes:
            rows.extend(o.reviews)
            chunks.append(o.chunk)
            result.events.extend(Outgoing(topic, key, value) for key, value in o.events)
            result.reviews_out += o.accepted
        # Sorted by key so concurrent batches lock shared rows in the same order (no deadlock).
        rows.sort(key=itemgetter("id"))
        if rows:
            result.upserts.append((REVIEWS, rows))
        if chunks:
            result.upserts.append((INGEST_CHUNKS, chunks))


async def build(
    settings: CommonSettings, pool: ConnectionPool, *, origins: ReviewOrigins | None = None
) -> IngestHandler:
    """Wire the ingest handler from settings; tests may pass their own `origins` port."""
    return IngestHandler(origins or PgReviewOrigins(pool), settings.kafka.topic_prefix)
