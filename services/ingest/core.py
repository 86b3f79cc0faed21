"""The ingest stage's pure core: give each submitted row its id, deduplicate, classify.

No IO here. Rows arrive valid: the API validated and normalised each one (and answered
the client about the rest), and the runner decoded the record with the topic's model,
whose constraints make every row storable; a record with an invalid row never gets here
(it is dead-lettered whole). The adapter (`service.py`) reads which review ids already
exist (with the origin that first stored them) and hands that mapping in; the core
decides, per row:

- **duplicate**: its review id is already taken by another origin (an earlier row of this
  chunk, another chunk, another upload): counted, not stored again, not emitted;
- **accepted**: new, or already stored *by this very row* (same origin): a replay after a
  crash, so it is upserted and emitted again and the chunk's numbers come out identical.

A review's id is `review_uuid(job_id, dedup_key(row))` and its origin
`"{upload_id}:{chunk_no}:{row}"`, both deterministic, which is what makes replays safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import ReviewFields, ReviewsIngested, ReviewsSubmitted, SubmittedRow
from shared.reviews import dedup_key, review_uuid

EVENT_REVIEWS = 50
"""Reviews per `ReviewsIngested` event: small enough to spread a chunk over partitions."""


@dataclass(slots=True)
class Candidate:
    """A row with its deterministic review id and origin, not yet classified."""

    id: str
    origin: str
    fields: SubmittedRow


@dataclass(frozen=True)
class PreparedChunk:
    """A chunk with ids and in-chunk dedup done, before the database is consulted."""

    event: ReviewsSubmitted
    candidates: list[Candidate]
    in_chunk_duplicates: int

    @property
    def ids(self) -> list[str]:
        """The review ids this chunk would store."""
        return [c.id for c in self.candidates]


@dataclass
class IngestOutcome:
    """What one chunk yields: rows to upsert, its ingest_chunks row and events to emit.

    `events` are `(key, value)` records of `reviews.ingested`, built by the topic model's
    `ReviewsIngested.key` and `ReviewsIngested.encode`.
    """

    reviews: list[dict[str, Any]]
    chunk: dict[str, Any]
    events: list[tuple[bytes, bytes]]

    @property
    def accepted(self) -> int:
        """Rows stored and emitted (new, or replayed by their own origin)."""
        return int(self.chunk["accepted"])

    @property
    def duplicates(self) -> int:
        """Rows whose review exists under another origin (or earlier in this chunk)."""
        return int(self.chunk["duplicates"])


def chunk_id(event: ReviewsSubmitted) -> str:
    """The ingest_chunks key of a submitted chunk."""
    return f"{event.upload_id}:{event.chunk_no}"


def prepare_chunk(event: ReviewsSubmitted) -> PreparedChunk:
    """Compute every row's id and origin and drop in-chunk duplicates (the first stays)."""
    job_id = event.job_id
    origin = f"{event.upload_id}:{event.chunk_no}:"
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for row in event.rows:
        rid = review_uuid(job_id, dedup_key(row))
        if rid in seen:
            continue
        seen.add(rid)
        candidates.append(Candidate(rid, origin + str(row["row"]), row))
    return PreparedChunk(event, candidates, len(event.rows) - len(candidates))


def classify(prepared: PreparedChunk, existing: Mapping[str, str]) -> IngestOutcome:
    """Split a prepared chunk into accepted and duplicate rows given `existing` id -> origin."""
    event = prepared.event
    job_id = event.job_id
    rows: list[dict[str, Any]] = []
    reviews: list[ReviewFields] = []
    duplicates = prepared.in_chunk_duplicates
    for cand in prepared.candidates:
        first = existing.get(cand.id)
        if first is not None and first != cand.origin:
            duplicates += 1
            continue
        f = cand.fields
        text, rating, language = f["text"], f.get("rating"), f.get("language")
        created_at = f.get("created_at")
        rows.append(
            {
                "id": cand.id,
                "job_id": job_id,
                "origin": cand.origin,
                "external_id": f.get("review_id"),
                "text": text,
                "rating": rating,
                "language": language,
                "created_at_src": created_at,
                "author": f.get("author"),
                "source": f.get("source"),
            }
        )
        reviews.append(
            ReviewFields(
                id=cand.id,
                text=text,
                rating=rating,
                language=language,
                created_at=created_at,
                external_id=f.get("review_id"),
            )
        )
    chunk = {
        "id": chunk_id(event),
        "job_id": job_id,
        "rows": len(event.rows),
        "accepted": len(rows),
        "duplicates": duplicates,
        # Rows are rejected by the API (and counted on the job); none reach ingest invalid.
        "rejected": 0,
    }
    return IngestOutcome(rows, chunk, _events(event, reviews))


def _events(event: ReviewsSubmitted, reviews: list[ReviewFields]) -> list[tuple[bytes, bytes]]:
    job_id, upload_id, chunk_no = event.job_id, event.upload_id, event.chunk_no
    return [
        (
            ReviewsIngested.key(job_id, upload_id, chunk_no, i),
            ReviewsIngested.encode(job_id, reviews[start : start + EVENT_REVIEWS]),
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
