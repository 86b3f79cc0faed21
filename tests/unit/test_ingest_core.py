"""The ingest core: ids, dedup, replay classification and events of valid submitted rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.ingest.core import (
    EVENT_REVIEWS,
    IngestOutcome,
    ingest_batch,
    ingest_chunk,
    prepare_chunk,
)
from services.ingest.service import REVIEWS, IngestHandler
from shared.events import ReviewsIngested, ReviewsSubmitted, SubmittedRow
from shared.reviews import dedup_key, normalise_row, review_uuid
from shared.stage import Incoming

JOB = "9f1c2a52-0000-4000-8000-000000000001"


def chunk(
    rows: Sequence[dict[str, Any]], *, upload: str = "up1", chunk_no: int = 0, job: str = JOB
) -> ReviewsSubmitted:
    """A submitted chunk of rows as the API would send them (normalised, numbered from 1)."""
    return ReviewsSubmitted(
        job_id=job,
        tenant_id="t1",
        upload_id=upload,
        chunk_no=chunk_no,
        rows=[SubmittedRow(**normalise_row(r), row=i + 1) for i, r in enumerate(rows)],
    )


def rid(row: dict[str, Any], job: str = JOB) -> str:
    return review_uuid(job, dedup_key(normalise_row(row)))


def totals(o: IngestOutcome) -> tuple[int, int]:
    return o.accepted, o.duplicates


def decoded(o: IngestOutcome) -> list[ReviewsIngested]:
    """The outcome's events as the topic contract reads them (which also validates them)."""
    return [ReviewsIngested.model_validate_json(value) for _, value in o.events]


# -- rows into review rows --------------------------------------------------------------------


def test_rows_become_review_rows() -> None:
    out = ingest_chunk(
        chunk(
            [
                {
                    "text": "  Cafe\u0301 was great  ",
                    "rating": 5,
                    "language": "EN-gb",
                    "created_at": "2024-03-01T10:00:00Z",
                    "review_id": " ext-1 ",
                    "author": "ann",
                    "source": "shop",
                }
            ]
        ),
        {},
    )
    [row] = out.reviews
    assert row["text"] == "Café was great"  # as the API normalised it
    assert row["language"] == "en"
    assert row["created_at_src"] == "2024-03-01T10:00:00+00:00"
    assert row["external_id"] == "ext-1"
    assert row["author"] == "ann" and row["source"] == "shop" and row["rating"] == 5
    assert row["job_id"] == JOB
    assert row["origin"] == "up1:0:1"
    assert row["id"] == review_uuid(JOB, "id:ext-1")
    assert set(row) == set(REVIEWS.columns) - {"ingested_at"}
    assert out.chunk["rejected"] == 0  # the API rejects rows; none reach ingest invalid


def test_optional_fields_may_be_absent_from_a_row() -> None:
    event = ReviewsSubmitted.model_validate_json(
        b'{"job_id":"j","tenant_id":"t","upload_id":"u","chunk_no":0,'
        b'"rows":[{"row":1,"text":"only text"}]}'
    )
    [row] = ingest_chunk(event, {}).reviews
    assert row["text"] == "only text" and row["rating"] is None and row["external_id"] is None


# -- dedup -------------------------------------------------------------------------------------


def test_in_chunk_duplicates_by_id_and_by_text_keep_the_first() -> None:
    out = ingest_chunk(
        chunk(
            [
                {"text": "Great  Battery"},
                {"text": "great battery"},  # same text after case/space folding
                {"text": "first", "review_id": "A"},
                {"text": "second, same id", "review_id": "A"},
                {"text": "Great Battery", "review_id": "B"},  # has an id: not a text dupe
            ]
        ),
        {},
    )
    assert totals(out) == (3, 2)
    assert [r["origin"] for r in out.reviews] == ["up1:0:1", "up1:0:3", "up1:0:5"]
    assert out.reviews[1]["text"] == "first"


def test_review_existing_under_another_origin_is_a_duplicate() -> None:
    row = {"text": "seen before", "review_id": "X"}
    out = ingest_chunk(chunk([row, {"text": "new"}]), {rid(row): "other-upload:3:17"})
    assert totals(out) == (1, 1)
    assert [r["text"] for r in out.reviews] == ["new"]
    emitted = [r.id for e in decoded(out) for r in e.reviews]
    assert rid(row) not in emitted


def test_same_review_in_another_job_is_not_a_duplicate() -> None:
    row = {"text": "same text"}
    a = ingest_chunk(chunk([row], job=JOB), {})
    b = ingest_chunk(chunk([row], job="another-job"), {a.reviews[0]["id"]: "up1:0:1"})
    assert a.reviews[0]["id"] != b.reviews[0]["id"]
    assert totals(b) == (1, 0)


# -- replay ------------------------------------------------------------------------------------


def test_replay_after_a_crash_emits_again_with_identical_numbers() -> None:
    rows = [
        {"text": "one"},
        {"text": "two"},
        {"text": "ONE"},  # in-chunk duplicate
        {"text": "dup of other chunk", "review_id": "Z"},
    ]
    other = {rid({"text": "z", "review_id": "Z"}): "up0:0:1"}
    first = ingest_chunk(chunk(rows), other)
    # The first run's rows were committed (origin = ours), then the process died before
    # committing the offset: the replay sees its own rows.
    stored = other | {r["id"]: r["origin"] for r in first.reviews}
    again = ingest_chunk(chunk(rows), stored)
    assert totals(first) == totals(again) == (2, 2)
    assert first.chunk == again.chunk
    assert first.reviews == again.reviews
    assert first.events == again.events


def test_batch_claims_flow_from_earlier_chunks_to_later_ones() -> None:
    shared_row = {"text": "in both chunks"}
    c1 = chunk([shared_row, {"text": "only one"}], upload="u", chunk_no=1)
    c2 = chunk([{"text": "only two"}, shared_row], upload="u", chunk_no=2)
    o1, o2 = ingest_batch([prepare_chunk(c1), prepare_chunk(c2)], {})
    assert totals(o1) == (2, 0)
    assert totals(o2) == (1, 1)
    # Replayed in one batch after commit: the stored origin decides, same numbers.
    stored = {r["id"]: r["origin"] for o in (o1, o2) for r in o.reviews}
    r1, r2 = ingest_batch([prepare_chunk(c1), prepare_chunk(c2)], stored)
    assert (r1.chunk, r2.chunk) == (o1.chunk, o2.chunk)
    # A chunk delivered twice in one batch (producer retry) is ours both times.
    d1, d2 = ingest_batch([prepare_chunk(c1), prepare_chunk(c1)], {})
    assert d1.chunk == d2.chunk and totals(d2) == (2, 0)


def test_ids_and_origins_are_deterministic() -> None:
    rows = [{"text": f"review {i}", "rating": 1 + i % 5} for i in range(30)]
    a = ingest_chunk(chunk(rows, upload="u9", chunk_no=4), {})
    b = ingest_chunk(chunk(rows, upload="u9", chunk_no=4), {})
    assert [r["id"] for r in a.reviews] == [r["id"] for r in b.reviews]
    assert a.reviews[29]["origin"] == "u9:4:30"
    assert a.chunk["id"] == "u9:4"


# -- events ------------------------------------------------------------------------------------


def test_events_carry_up_to_fifty_reviews_with_spread_keys() -> None:
    rows = [{"text": f"review number {i}", "rating": 3} for i in range(123)]
    out = ingest_chunk(chunk(rows, upload="upX", chunk_no=7), {})
    sizes = [len(e.reviews) for e in decoded(out)]
    assert sizes == [EVENT_REVIEWS, EVENT_REVIEWS, 23]
    assert [k for k, _ in out.events] == [f"{JOB}:upX:7:{i}".encode() for i in range(3)]
    emitted = [r.id for e in decoded(out) for r in e.reviews]
    assert emitted == [r["id"] for r in out.reviews]


def test_events_round_trip_through_the_topic_contract() -> None:
    out = ingest_chunk(
        chunk([{"text": "hi", "rating": "5", "language": "fr", "created_at": "2024-01-02"}]), {}
    )
    [(_, value)] = out.events
    event = ReviewsIngested.model_validate_json(value)  # extra="forbid": no stray fields
    assert event.job_id == JOB and event.v == 1
    assert event.to_bytes() == value  # the same bytes the typed model would write
    [review] = event.reviews
    assert (review.text, review.rating, review.language, review.created_at) == (
        "hi",
        5,
        "fr",
        "2024-01-02T00:00:00",
    )


def test_empty_and_all_duplicate_chunks_emit_nothing_but_are_recorded() -> None:
    empty = ingest_chunk(chunk([]), {})
    assert empty.events == [] and empty.reviews == []
    assert empty.chunk == {
        "id": "up1:0",
        "job_id": JOB,
        "rows": 0,
        "accepted": 0,
        "duplicates": 0,
        "rejected": 0,
    }
    rows = [{"text": "a", "review_id": "1"}, {"text": "b", "review_id": "2"}]
    stored = {rid(r): "elsewhere:0:1" for r in rows}
    all_dupes = ingest_chunk(chunk(rows), stored)
    assert all_dupes.events == [] and all_dupes.reviews == []
    assert totals(all_dupes) == (0, 2)


# -- the handler with a fake origins port ------------------------------------------------------


class FakeOrigins:
    """`ReviewOrigins` over a dict; records the reads so tests can count them."""

    def __init__(self, stored: dict[str, str] | None = None) -> None:
        self.stored = stored or {}
        self.reads: list[list[str]] = []

    async def origins(self, ids: Sequence[str]) -> dict[str, str]:
        self.reads.append(list(ids))
        return {i: self.stored[i] for i in ids if i in self.stored}


def incoming(event: ReviewsSubmitted, offset: int) -> Incoming:
    raw = event.to_bytes()
    return Incoming(event, "voc.reviews.submitted", 0, offset, raw, b"k")


async def test_handler_reads_once_per_batch_and_returns_rows_events_and_chunks() -> None:
    fake = FakeOrigins()
    handler = IngestHandler(fake, "t.")
    c1 = chunk([{"text": f"a{i}"} for i in range(60)], chunk_no=0)
    c2 = chunk([{"text": "a1"}, {"text": "b"}], chunk_no=1)
    result = await handler.handle([incoming(c1, 0), incoming(c2, 1)])
    assert len(fake.reads) == 1 and len(fake.reads[0]) == 62
    [(reviews_spec, rows), (_, chunks)] = result.upserts
    assert reviews_spec is REVIEWS
    assert "origin" not in (REVIEWS.update or ()) and "text" in (REVIEWS.update or ())
    assert len(rows) == 61 and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert [(c["accepted"], c["duplicates"]) for c in chunks] == [(60, 0), (1, 1)]
    assert [e.topic for e in result.events] == ["t.reviews.ingested"] * 3
    assert result.reviews_out == 61
    assert not result.dead_letters


def test_review_uuid_is_exactly_uuid5_of_job_and_key() -> None:
    import uuid

    from shared.reviews import REVIEW_NS, review_uuid

    for job, key in [("j", "id:1"), ("5b0f8c1e", "tx:" + "ab" * 20), ("ü", "id:é")]:
        assert review_uuid(job, key) == str(uuid.uuid5(REVIEW_NS, f"{job}\x00{key}"))
