"""The ingest service on the real stack: chunks in, rows in Postgres and events out; poison
records on the dead-letter topic and in `dead_letters` while the records after them flow on."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from ingest_kit import (
    collect,
    db,
    dlq_topic,
    end_offsets,
    ingested_topic,
    key_of,
    new_job,
    producer,
    scalar,
    send_chunk,
    submitted,
    submitted_topic,
    wait_for,
)

from shared.events import ReviewsIngested
from shared.reviews import dedup_key, review_uuid
from voc.stack import Stack

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _ingest_running(stack: dict[str, str], stack_ctl: Stack) -> None:
    """Every test here needs the stack's ingest service (a kill test may have stopped it)."""
    if stack_ctl.service_pid("ingest") is None:
        stack_ctl.start_service("ingest")


def _ids_of_job(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [r.id for rec in records for r in ReviewsIngested.model_validate_json(rec.value).reviews]


def _for_job(job: str) -> Any:
    prefix = f"{job}:".encode()
    return lambda rec: rec.key is not None and rec.key.startswith(prefix)


async def test_chunks_become_rows_chunk_counts_and_events() -> None:
    job, upload = new_job(), str(uuid.uuid4())
    rows0 = [{"text": f"review {i}", "rating": 1 + i % 5} for i in range(120)]
    c0 = submitted(job, upload, 0, rows0)
    c1 = submitted(
        job,
        upload,
        1,
        [
            {"text": "review 7"},  # duplicate of chunk 0 by text
            {"text": "  REVIEW   7 "},  # ... and again, inside this chunk
            {"text": "new one", "review_id": "ext-1", "language": "de"},
        ],
        first_row=121,
    )
    since = await end_offsets(ingested_topic())
    async with producer() as p, db() as conn:

        async def chunks_done(n: int) -> bool:
            got = await scalar(conn, "SELECT count(*) FROM ingest_chunks WHERE job_id=%s", job)
            return bool(got == n)

        # Chunks of one upload go to different partitions; which one claims a shared review
        # depends on which is committed first, so chunk 0 is made to go first.
        await send_chunk(p, c0)
        assert await wait_for(lambda: chunks_done(1), TIMEOUT)
        await send_chunk(p, c1)
        # The same chunk delivered twice (a producer retry) changes nothing.
        await send_chunk(p, c1)
        assert await wait_for(lambda: chunks_done(2), TIMEOUT)
        cur = await conn.execute(
            "SELECT id, rows, accepted, duplicates, rejected FROM ingest_chunks"
            " WHERE job_id=%s ORDER BY id",
            (job,),
        )
        assert await cur.fetchall() == [
            (f"{upload}:0", 120, 120, 0, 0),
            (f"{upload}:1", 3, 1, 2, 0),
        ]
        assert await scalar(conn, "SELECT count(*) FROM reviews WHERE job_id=%s", job) == 121
        cur = await conn.execute(
            "SELECT origin, external_id, language FROM reviews WHERE id=%s",
            (review_uuid(job, "id:ext-1"),),
        )
        assert await cur.fetchone() == (f"{upload}:1:123", "ext-1", "de")
        # The duplicate kept its first origin.
        dup_id = review_uuid(job, dedup_key({"text": "review 7"}))
        origin = await scalar(conn, "SELECT origin FROM reviews WHERE id=%s", dup_id)
        assert origin == f"{upload}:0:8"

    expected = 121 + 1  # chunk 1 was delivered twice: its one review is emitted twice
    records = await collect(
        since, _for_job(job), lambda got: len(_ids_of_job(got)) >= expected, TIMEOUT
    )
    ids = _ids_of_job(records)
    assert len(ids) == expected and len(set(ids)) == 121
    keys = sorted(r.key.decode() for r in records if r.key)
    assert f"{job}:{upload}:0:0" in keys and f"{job}:{upload}:0:2" in keys
    assert max(len(ReviewsIngested.model_validate_json(r.value).reviews) for r in records) == 50
    # Spread over partitions rather than all on one.
    assert len({r.partition for r in records}) > 1


async def test_poison_records_are_dead_lettered_and_the_next_records_processed() -> None:
    job = new_job()
    topic = submitted_topic()
    garbage = b"\xff\xfe not json at all \x00\x01"
    schema_invalid = orjson.dumps({"job_id": job, "tenant_id": "t", "rows": "nope"})
    head = {"tenant_id": "t", "upload_id": "u-bad", "chunk_no": 0}
    # Rows the API would never send: the chunk is dead-lettered whole, nothing stored.
    bad_row = orjson.dumps(head | {"job_id": job, "rows": [{"row": 1, "text": "a\x00b"}]})
    too_long_job = orjson.dumps(head | {"job_id": "j" * 40, "rows": [{"row": 1, "text": "x"}]})
    good = submitted(job, "u-good", 0, [{"text": "after the poison"}])
    dlq_since = await end_offsets(dlq_topic())
    async with producer() as p:
        # All on one partition, in this order: the good chunk comes after the poison.
        meta = [
            await p.send_and_wait(topic, value, key=b"poison", partition=0)
            for value in (garbage, schema_invalid, bad_row, too_long_job)
        ]
        await p.send_and_wait(topic, good.to_bytes(), key=key_of(good), partition=0)

    async with db() as conn:

        async def good_stored() -> bool:
            n = await scalar(conn, "SELECT count(*) FROM reviews WHERE job_id=%s", job)
            return bool(n == 1)

        assert await wait_for(good_stored, TIMEOUT)
        cur = await conn.execute(
            'SELECT "offset", error_type, job_id FROM dead_letters'
            ' WHERE stage=%s AND topic=%s AND partition=0 AND "offset" = ANY(%s) ORDER BY 1',
            ("ingest", topic, [m.offset for m in meta]),
        )
        rows = await cur.fetchall()
    assert [(o, t) for o, t, _ in rows] == [(m.offset, "PoisonRecord") for m in meta]
    assert [j for _, _, j in rows] == [None, job, job, None]

    offsets = {str(m.offset).encode() for m in meta}

    def ours(rec: ConsumerRecord[bytes, bytes]) -> bool:
        headers = dict(rec.headers or ())
        return headers.get("voc-original-topic") == topic.encode() and (
            headers.get("voc-original-offset") in offsets
        )

    dead = await collect(dlq_since, ours, lambda got: len(got) >= 4, TIMEOUT)
    assert sorted(r.value for r in dead) == sorted([garbage, schema_invalid, bad_row, too_long_job])
    for rec in dead:
        headers = dict(rec.headers or ())
        assert headers["voc-stage"] == b"ingest"
        assert headers["voc-error-type"] == b"PoisonRecord"
        assert headers["voc-error-message"]
        assert headers["voc-original-partition"] == b"0"
        assert rec.key == b"poison"
