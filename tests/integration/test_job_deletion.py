"""Deleting a job (`DELETE /v1/jobs/{id}`), the retention sweep, and the stages skipping
the records of deleted jobs - against the real Postgres, Redis and Kafka of the stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from api_kit import (
    app_settings,
    auth,
    create_submitted_topic,
    database_url,
    delete_topic,
    new_key,
    running_app,
)
from fastapi import FastAPI
from redis.asyncio import Redis

from services.api.deletion import job_tables, sweep
from services.report.callbacks import CallbackSettings, PgOutbox, after_refusal
from shared.db.pool import ConnectionPool
from shared.jobstatus import status_cache_key
from shared.stage import Incoming, StageResult
from shared.stage.deleted import DeletedJobs, SkipDeletedJobs
from shared.topics import REVIEWS_INGESTED, TopicSpec

pytestmark = pytest.mark.integration

JOB = {"product": "Aurora X2 earbuds", "target_language": "en"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    key: str
    tenant: str


def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(autouse=True)
def release_planted_batches() -> Iterator[None]:
    """The held batches `_fill` plants are claimed for an hour (so the stack's learn leader
    leaves them alone): whatever a test did not delete goes, or learn would wait on it."""
    yield
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute("DELETE FROM learn_pending WHERE batch_key = %s", (PLANTED_BATCH,))


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[Api]:
    prefix = f"apidelete{uuid.uuid4().hex[:8]}."
    topic = await create_submitted_topic(prefix)
    tenant, key = new_key()
    async with running_app(app_settings(prefix)) as (app, client):
        yield Api(app, client, key, tenant)
    await delete_topic(topic)


async def _job(api: Api, key: str | None = None) -> str:
    key = key or api.key
    resp = await api.client.post("/v1/jobs", json=JOB, headers=auth(key))
    assert resp.status_code == 201, resp.text
    job_id = str(resp.json()["id"])
    up = await api.client.post(
        f"/v1/jobs/{job_id}/reviews",
        content=b'{"text": "one"}\n{"text": "two"}\n',
        headers={"content-type": "application/x-ndjson"} | auth(key),
    )
    assert up.status_code == 202, up.text
    return job_id


PLANTED_BATCH = "deletion-test-planted"


def _fill(job_id: str) -> None:
    """Rows in every table a job has, as the stages would write them (the stack's stages
    may be writing the job's own rows meanwhile: per-job rows are inserted if absent)."""
    rid = str(uuid.uuid4())
    iid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reviews (id, job_id, origin, text) VALUES (%s, %s, 'u:0:1', 'one')",
            (rid, job_id),
        )
        conn.execute(
            "INSERT INTO ingest_chunks VALUES (%s, %s, 2, 2, 0, 0)", (f"{uuid.uuid4()}:0", job_id)
        )
        conn.execute(
            "INSERT INTO job_models (job_id, dimensions, five_w, sample_size, model) "
            "VALUES (%s, '[]', '{}', 2, 'm') ON CONFLICT DO NOTHING",
            (job_id,),
        )
        conn.execute(
            # claimed for an hour: the stack's learn leader leaves it alone meanwhile
            "INSERT INTO learn_pending (job_id, batch_key, reviews, claimed_until)"
            " VALUES (%s, %s, '[]', now() + interval '1 hour')",
            (job_id, PLANTED_BATCH),
        )
        conn.execute(
            "INSERT INTO translations VALUES (%s, %s, 'en', 'en', 'one', false)", (rid, job_id)
        )
        conn.execute("INSERT INTO review_insights VALUES (%s, %s, 1)", (rid, job_id))
        conn.execute(
            "INSERT INTO insights (id, job_id, review_id, dimension, aspect, sentiment, score, "
            "quote, quote_start, quote_end, five_w) "
            "VALUES (%s, %s, %s, 'd', 'a', 'positive', 0.5, 'one', 0, 3, '{}')",
            (iid, job_id, rid),
        )
        conn.execute(
            "INSERT INTO themes (id, job_id, dimension, key, name, description) "
            "VALUES (%s, %s, 'd', 'k', 'n', 'x')",
            (tid, job_id),
        )
        conn.execute("INSERT INTO theme_members VALUES (%s, %s, %s, %s)", (iid, tid, job_id, rid))
        conn.execute("INSERT INTO review_themed VALUES (%s, %s)", (rid, job_id))
        conn.execute(
            "INSERT INTO reports (job_id, status, coverage, data) "
            "VALUES (%s, 'completed', 1, '{}') ON CONFLICT DO NOTHING",
            (job_id,),
        )
        conn.execute(
            "INSERT INTO dead_letters (id, stage, job_id, review_id, topic, partition, "
            "\"offset\", error_type, error) VALUES (%s, 'insight', %s, %s, 't', 0, 0, 'E', 'e')",
            (f"insight:{rid}", job_id, rid),
        )
        conn.execute(
            "INSERT INTO callback_outbox (id, job_id, url, payload) "
            "VALUES (%s, %s, 'https://example.com/h', '{}') ON CONFLICT DO NOTHING",
            (f"{job_id}:completed", job_id),
        )


def _rows(job_id: str) -> dict[str, int]:
    return {
        t.name: sql(f"SELECT count(*) FROM {t.name} WHERE job_id = %s", job_id)[0][0]
        for t in job_tables()
    }


def test_every_table_with_a_job_id_is_covered() -> None:
    in_db = {
        r[0]
        for r in sql(
            "SELECT table_name FROM information_schema.columns "
            "WHERE column_name = 'job_id' AND table_schema = current_schema()"
        )
    }
    assert {t.name for t in job_tables()} == in_db


async def test_delete_removes_everything_of_the_job_and_nothing_else(api: Api) -> None:
    _, other_key = new_key()
    job = await _job(api)
    other = await _job(api, other_key)
    _fill(job)
    _fill(other)
    other_before = _rows(other)
    first = (await api.client.get(f"/v1/jobs/{job}", headers=auth(api.key))).json()
    assert first["counts"]["ingested"] == 1  # and now cached in Redis
    redis = Redis.from_url(str(api.app.state.clients.settings.redis.url.get_secret_value()))
    assert await redis.exists(status_cache_key(api.tenant, job))
    # Another tenant cannot delete it.
    assert (await api.client.delete(f"/v1/jobs/{job}", headers=auth(other_key))).status_code == 404

    resp = await api.client.delete(f"/v1/jobs/{job}", headers=auth(api.key))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == job and body["status"] == "deleted"
    assert body["deleted"]["reviews"] == 1 and body["deleted"]["uploads"] == 1
    assert body["deleted"]["insights"] == 1 and body["deleted"]["reports"] == 1
    kafka = body["retained"][0]
    assert "Kafka" in kafka["what"] and "VOC_TOPIC_RETENTION_DAYS=7" in kafka["why"]
    assert "LLM answers" in body["retained"][1]["what"]

    assert set(_rows(job).values()) == {0}
    assert not await redis.exists(status_cache_key(api.tenant, job))
    await redis.aclose()
    # Only a tombstone remains: no product, no callback, no options.
    assert sql("SELECT status, product, callback_url, options FROM jobs WHERE id = %s", job) == [
        ("deleted", "", None, {})
    ]
    for method, path in (
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/report"),
        ("POST", f"/v1/jobs/{job}/seal"),
        ("DELETE", f"/v1/jobs/{job}"),
    ):
        assert (await api.client.request(method, path, headers=auth(api.key))).status_code == 404
    up = await api.client.post(
        f"/v1/jobs/{job}/reviews",
        content=b'{"text": "late"}\n',
        headers={"content-type": "application/x-ndjson"} | auth(api.key),
    )
    assert up.status_code == 404
    listed = (await api.client.get("/v1/jobs", headers=auth(api.key), params={"limit": 100})).json()
    assert job not in {j["id"] for j in listed["data"]}
    # The other tenant's job is untouched.
    assert _rows(other) == other_before
    still = (await api.client.get(f"/v1/jobs/{other}", headers=auth(other_key))).json()
    assert still["counts"]["ingested"] == 1


async def test_retention_sweep_expires_repurges_and_drops_tombstones(api: Api) -> None:
    old, late, ancient, fresh = [await _job(api) for _ in range(4)]
    for job in (old, late, ancient, fresh):
        _fill(job)
    fresh_before = _rows(fresh)
    sql("UPDATE jobs SET created_at = now() - interval '40 days' WHERE id = %s", old)
    # A job deleted a moment ago, whose stage wrote rows after the deletion...
    assert (await api.client.delete(f"/v1/jobs/{late}", headers=auth(api.key))).status_code == 200
    _fill(late)
    # ...and a tombstone older than the topics' retention.
    assert (
        await api.client.delete(f"/v1/jobs/{ancient}", headers=auth(api.key))
    ).status_code == 200
    sql("UPDATE jobs SET updated_at = now() - interval '9 days' WHERE id = %s", ancient)

    clients = api.app.state.clients
    result = await sweep(
        clients.engine, clients.status_cache, retention_days=30, topic_retention_days=7
    )
    assert result.ran and old in result.expired and fresh not in result.expired
    assert result.repurged_rows >= 10 and result.tombstones_dropped >= 1
    assert sql("SELECT status FROM jobs WHERE id = %s", old) == [("deleted",)]
    assert set(_rows(old).values()) == {0} and set(_rows(late).values()) == {0}
    assert sql("SELECT 1 FROM jobs WHERE id = %s", ancient) == []
    assert sql("SELECT status FROM jobs WHERE id = %s", fresh) == [("receiving",)]
    assert _rows(fresh) == fresh_before
    # Retention 0 keeps jobs forever.
    sql("UPDATE jobs SET created_at = now() - interval '4000 days' WHERE id = %s", fresh)
    kept = await sweep(
        clients.engine, clients.status_cache, retention_days=0, topic_retention_days=7
    )
    assert fresh not in kept.expired


class Recorder:
    """A stage handler that records what it is given (the port, implemented)."""

    name = "recorder"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(self) -> None:
        self.seen: list[Incoming] = []
        self.ticks = 0

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        self.seen.extend(batch)
        return StageResult(reviews_out=len(batch))

    async def tick(self) -> StageResult:
        self.ticks += 1
        return StageResult()


@dataclass
class _Event:
    job_id: str


def _rec(job_id: str, offset: int) -> Incoming:
    raw = orjson.dumps({"job_id": job_id})
    return Incoming(_Event(job_id), "t", 0, offset, raw, job_id.encode())


async def test_stages_skip_records_of_deleted_jobs_quietly(api: Api) -> None:
    gone, alive = await _job(api), await _job(api)
    assert (await api.client.delete(f"/v1/jobs/{gone}", headers=auth(api.key))).status_code == 200
    pool = ConnectionPool(api.app.state.clients.settings.db.libpq_url(), size=2)
    await pool.open()
    try:
        recorder = Recorder()
        handler = SkipDeletedJobs(recorder, DeletedJobs(pool, alive_ttl_s=0.0))
        batch = [_rec(gone, 0), _rec(alive, 1), _rec(gone, 2), _rec(alive, 3)]
        result = await handler.handle(batch)
        assert [r.offset for r in recorder.seen] == [1, 3]
        assert result.reviews_out == 2 and not result.dead_letters
        only_gone = await handler.handle([_rec(gone, 4)])
        assert only_gone == StageResult() and len(recorder.seen) == 2
        # A job deleted while the stage works on it is skipped from its next batch on.
        assert (
            await api.client.delete(f"/v1/jobs/{alive}", headers=auth(api.key))
        ).status_code == 200
        await handler.handle([_rec(alive, 5)])
        assert len(recorder.seen) == 2
        # Everything else is the wrapped handler's own.
        assert handler.name == "recorder" and handler.input is REVIEWS_INGESTED
        await handler.tick()
        assert recorder.ticks == 1
    finally:
        await pool.close()


def _outbox(job_id: str) -> list[tuple[Any, ...]]:
    return sql("SELECT id, attempts FROM callback_outbox WHERE job_id = %s", job_id)


async def test_a_callback_in_flight_when_its_job_is_deleted_is_not_written_back(api: Api) -> None:
    """The deliverer reads a due row, its job is deleted (rows purged) while the POST is
    out, then the outcome is saved: the purged row must stay gone, and a deleted job's
    rows are never handed out for delivery."""
    job = await _job(api)
    event = f"{job}:completed"
    sql(
        "INSERT INTO callback_outbox (id, job_id, url, payload) "
        "VALUES (%s, %s, 'https://example.com/h', '{}')",
        event,
        job,
    )
    pool = ConnectionPool(api.app.state.clients.settings.db.libpq_url(), size=2)
    await pool.open()
    try:
        outbox = PgOutbox(pool)
        settings = CallbackSettings()
        (row,) = [r for r in await outbox.due(10, 10_000, set()) if r["id"] == event]
        deleted = await api.client.delete(f"/v1/jobs/{job}", headers=auth(api.key))
        assert deleted.status_code == 200 and _outbox(job) == []
        await outbox.save([after_refusal(row, "receiver down", datetime.now(UTC), settings)])
        assert _outbox(job) == [], "saving the outcome brought a purged outbox row back"
        # A row a stage wrote after the deletion (before the sweep repurges it) is not due.
        sql(
            "INSERT INTO callback_outbox (id, job_id, url, payload) "
            "VALUES (%s, %s, 'https://example.com/h', '{}')",
            event,
            job,
        )
        assert [r for r in await outbox.due(10, 10_000, set()) if r["job_id"] == job] == []
    finally:
        await pool.close()
