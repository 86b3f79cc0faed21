"""The ingest stage's pure core: validate, normalise, deduplicate and classify one chunk.

No IO here. The adapter (`service.py`) reads which review ids already exist (with the
origin that first stored them) and hands that mapping in; the core decides, per row:

- **rejected**: the row fails `normalise_row` (or holds a character Postgres cannot
  store); counted, never raised, so one bad row never fails its chunk;
- **duplicate**: its review id is already taken by another origin (an earlier row of this
  chunk, another chunk, another upload): counted, not stored again, not emitted;
- **accepted**: new, or already stored *by this very row* (same origin): a replay after a
  crash, so it is upserted and emitted again and the chunk's numbers come out identical.

A review's id is `review_uuid(job_id, dedup_key(row))` and its origin
`"{upload_id}:{chunk_no}:{row}"`, both deterministic, which is what makes replays safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import PoisonRecord
from shared.events import SCHEMA_VERSION, ReviewsSubmitted, SubmittedRow
from shared.reviews import RowError, dedup_key, normalise_row, review_uuid

EVENT_REVIEWS = 50
"""Reviews per `ReviewsIngested` event: small enough to spread a chunk over partitions."""

MAX_JOB_ID = 36  # reviews.job_id is VARCHAR(36)


@dataclass(frozen=True)
class Rejection:
    """A row that failed validation: its 1-based row number, the field and the reason."""

    row: int
    field: str
    reason: str


@dataclass(slots=True)
class Candidate:
    """A valid row with its deterministic review id and origin, not yet classified."""

    id: str
    origin: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk after validation and in-chunk dedup, before the database is consulted."""

    event: ReviewsSubmitted
    candidates: list[Candidate]
    in_chunk_duplicates: int
    rejections: list[Rejection]

    @property
    def ids(self) -> list[str]:
        """The review ids this chunk would store."""
        return [c.id for c in self.candidates]


@dataclass
class IngestOutcome:
    """What one chunk yields: rows to upsert, its ingest_chunks row and events to emit.

    `events` are `(key, value)` records of `reviews.ingested`: each value is the JSON of a
    `shared.events.ReviewsIngested`, serialised straight from dicts because building a
    pydantic model per review would cost more than everything else ingest does per row.
    """

    reviews: list[dict[str, Any]]
    chunk: dict[str, Any]
    events: list[tuple[str, bytes]]
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows stored and emitted (new, or replayed by their own origin)."""
        return int(self.chunk["accepted"])

    @property
    def duplicates(self) -> int:
        """Rows whose review exists under another origin (or earlier in this chunk)."""
        return int(self.chunk["duplicates"])

    @property
    def rejected(self) -> int:
        """Rows that failed validation."""
        return int(self.chunk["rejected"])


def origin_of(event: ReviewsSubmitted, row: int) -> str:
    """Where a review was first seen: `upload_id:chunk_no:row`."""
    return f"{event.upload_id}:{event.chunk_no}:{row}"


def chunk_id(event: ReviewsSubmitted) -> str:
    """The ingest_chunks key of a submitted chunk."""
    return f"{event.upload_id}:{event.chunk_no}"


def _check_chunk(event: ReviewsSubmitted) -> None:
    if not event.job_id or len(event.job_id) > MAX_JOB_ID or "\x00" in event.job_id:
        raise PoisonRecord(f"job_id: must be 1-{MAX_JOB_ID} characters, got {event.job_id[:60]!r}")
    if "\x00" in event.upload_id:
        raise PoisonRecord("upload_id: contains a NUL character")


def _normalise(row: SubmittedRow) -> dict[str, Any]:
    # A pydantic model's __dict__ holds exactly its fields: no model_dump() per row.
    return normalise_row(row.__dict__)


def prepare_chunk(event: ReviewsSubmitted) -> PreparedChunk:
    """Validate and normalise every row, compute ids and origins, drop in-chunk duplicates.

    Raises `PoisonRecord` if the chunk itself is unusable (its job id cannot be stored).
    """
    _check_chunk(event)
    job_id = event.job_id
    candidates: list[Candidate] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    dupes = 0
    for row in event.rows:
        try:
            fields = _normalise(row)
        except RowError as exc:
            rejections.append(Rejection(row.row, exc.field, exc.reason))
            continue
        rid = review_uuid(job_id, dedup_key(fields))
        if rid in seen:
            dupes += 1
            continue
        seen.add(rid)
        candidates.append(Candidate(rid, origin_of(event, row.row), fields))
    return PreparedChunk(event, candidates, dupes, rejections)


def classify(prepared: PreparedChunk, existing: Mapping[str, str]) -> IngestOutcome:
    """Split a prepared chunk into accepted and duplicate rows given `existing` id -> origin."""
    event = prepared.event
    job_id = event.job_id
    rows: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    duplicates = prepared.in_chunk_duplicates
    for cand in prepared.candidates:
        first = existing.get(cand.id)
        if first is not None and first != cand.origin:
            duplicates += 1
            continue
        f = cand.fields
        rows.append(
            {
                "id": cand.id,
                "job_id": job_id,
                "origin": cand.origin,
                "external_id": f["review_id"],
                "text": f["text"],
                "rating": f["rating"],
                "language": f["language"],
                "created_at_src": f["created_at"],
                "author": f["author"],
                "source": f["source"],
            }
        )
        # Exactly the fields of shared.events.Review, already validated by normalise_row.
        reviews.append(
            {
                "id": cand.id,
                "text": f["text"],
                "rating": f["rating"],
                "language": f["language"],
                "created_at": f["created_at"],
                "external_id": f["review_id"],
            }
        )
    chunk = {
        "id": chunk_id(event),
        "job_id": job_id,
        "rows": len(event.rows),
        "accepted": len(rows),
        "duplicates": duplicates,
        "rejected": len(prepared.rejections),
    }
    return IngestOutcome(rows, chunk, _events(event, reviews), list(prepared.rejections))


def _events(event: ReviewsSubmitted, reviews: Sequence[dict[str, Any]]) -> list[tuple[str, bytes]]:
    base = f"{event.job_id}:{event.upload_id}:{event.chunk_no}"
    return [
        (
            f"{base}:{i}",
            orjson.dumps(
                {
                    "v": SCHEMA_VERSION,
                    "job_id": event.job_id,
                    "reviews": reviews[start : start + EVENT_REVIEWS],
                }
            ),
        )
        for i, start in enumerate(range(0, len(reviews), EVENT_REVIEWS))
    ]


def ingest_chunk(event: ReviewsSubmitted, existing: Mapping[str, str]) -> IngestOutcome:
    """Ingest one submitted chunk given which of its review ids exist (id -> origin)."""
    return classify(prepare_chunk(event), existing)


def ingest_batch(
    prepared: Iterable[PreparedChunk], existing: Mapping[str, str]
) -> list[IngestOutcome]:
    """Classify several chunks in order; a review claimed by an earlier chunk of the batch
    is a duplicate for later ones, exactly as if that chunk had been committed first."""
    known = dict(existing)
    outcomes = []
    for chunk in prepared:
        outcome = classify(chunk, known)
        for row in outcome.reviews:
            known.setdefault(row["id"], row["origin"])
        outcomes.append(outcome)
    return outcomes
