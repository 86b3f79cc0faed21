"""The ingest stage as the runner sees it: one read per batch, the core, rows and events.

`IngestHandler.handle` prepares every chunk of the batch (validation, ids, in-chunk dedup),
asks Postgres once which of those review ids already exist and with which origin, lets the
core classify the chunks in order and returns the rows to upsert and the events to emit.
The runner (`shared.stage.StageRunner`) upserts, produces and only then commits offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

from services.ingest import metrics
from services.ingest.core import (
    IngestOutcome,
    PreparedChunk,
    ingest_batch,
    prepare_chunk,
)
from shared.db.models import IngestChunk
from shared.db.models import Review as ReviewRow
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.errors import Failure, PoisonRecord
from shared.settings import CommonSettings
from shared.stage import DeadLetterOut, Incoming, Outgoing, StageResult
from shared.topics import REVIEWS_INGESTED, REVIEWS_SUBMITTED, TopicSpec

log = logging.getLogger(__name__)

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

_ORIGINS_SQL = "SELECT id, origin FROM reviews WHERE id = ANY(%s)"
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
                    cur = conn.cursor()
                    part = ordered[start : start + READ_SLICE]
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
        prepared: list[PreparedChunk] = []
        result = StageResult()
        for rec in batch:
            try:
                prepared.append(prepare_chunk(rec.event))
            except PoisonRecord as exc:
                result.dead_letters.append(_dead_letter(rec, exc))
        ids = [rid for chunk in prepared for rid in chunk.ids]
        existing = await self.origins.origins(ids) if ids else {}
        outcomes = ingest_batch(prepared, existing)
        self._collect(outcomes, result)
        metrics.observe(outcomes)
        return result

    def _collect(self, outcomes: Sequence[IngestOutcome], result: StageResult) -> None:
        rows: list[dict[str, Any]] = []
        chunks: list[dict[str, Any]] = []
        for o in outcomes:
            rows.extend(o.reviews)
            chunks.append(o.chunk)
            result.events.extend(
                Outgoing(self.output_topic, key.encode(), value) for key, value in o.events
            )
            result.reviews_out += o.accepted
            if o.rejections:
                log.warning(
                    "rows rejected",
                    extra={
                        "stage": self.name,
                        "job_id": o.chunk["job_id"],
                        "chunk": o.chunk["id"],
                        "rejected": o.rejected,
                        "first": [f"row {r.row}: {r.field}: {r.reason}" for r in o.rejections[:5]],
                    },
                )
        # Sorted by key so concurrent batches lock shared rows in the same order (no deadlock).
        rows.sort(key=itemgetter("id"))
        if rows:
            result.upserts.append((REVIEWS, rows))
        if chunks:
            result.upserts.append((INGEST_CHUNKS, chunks))


def _dead_letter(rec: Incoming, exc: PoisonRecord) -> DeadLetterOut:
    job_id = getattr(rec.event, "job_id", None)
    return DeadLetterOut(
        failure=Failure.of(exc),
        value=rec.raw,
        key=rec.key,
        source=rec,
        # dead_letters.job_id is VARCHAR(36) too: an unstorable id would fail the batch.
        job_id=job_id if isinstance(job_id, str) and 0 < len(job_id) <= 36 else None,
    )


async def build(
    settings: CommonSettings, pool: ConnectionPool, *, origins: ReviewOrigins | None = None
) -> IngestHandler:
    """Wire the ingest handler from settings; tests may pass their own `origins` port."""
    return IngestHandler(origins or PgReviewOrigins(pool), settings.kafka.topic_prefix)
