"""Replays and dead letters on the real stack (issue: replay and dead letters).

1. A completed job, then every analysis stage replayed from the time the job started
   (`voc replay offsets --to-datetime ... --execute --restart`): Postgres ends identical
   and the fake LLM records zero new calls. Then `voc replay job --from insight --no-cache`:
   new calls, the same row counts, nothing doubled, and the job is completed again.
2. Garbage bytes and a schema-invalid event on insight's input topic both reach
   `insight.dlq` with the reason, and a job submitted after them completes.
3. Retryable LLM faults for some reviews: they go through the retry tiers without holding
   up the rest, end in the DLQ after the last attempt, the job completes counting them as
   failed; with the faults off, `voc dlq redrive --job J --execute` completes them and the
   report is rebuilt with full coverage.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from e2e_kit import create_job, sample_rows, upload, wait_completed

ANALYSIS_STAGES = ("learn", "translate", "insight", "theme", "report")

HASH_QUERIES = {
    "reviews": "SELECT id, text, rating, language FROM reviews WHERE job_id = %s ORDER BY id",
    "translations": "SELECT review_id, text, source_language, translated FROM translations "
    "WHERE job_id = %s ORDER BY review_id",
    "insights": "SELECT id, review_id, dimension, aspect, sentiment, score, quote, quote_start, "
    "quote_end FROM insights WHERE job_id = %s ORDER BY id",
    "review_insights": "SELECT review_id, n_insights FROM review_insights WHERE job_id = %s "
    "ORDER BY review_id",
    "themes": "SELECT id, dimension, key, name FROM themes WHERE job_id = %s ORDER BY id",
    "theme_members": "SELECT insight_id, theme_id FROM theme_members WHERE job_id = %s "
    "ORDER BY insight_id",
    "review_themed": "SELECT review_id FROM review_themed WHERE job_id = %s ORDER BY review_id",
    # the report's data without its build time
    "report": "SELECT status, coverage, data - 'generated_at' FROM reports WHERE job_id = %s",
}


def snapshot(db: psycopg.Connection[Any], job_id: str) -> dict[str, tuple[int, str]]:
    """Row count and content hash of every table the job's analysis wrote."""
    out = {}
    for table, sql in HASH_QUERIES.items():
        rows = db.execute(sql, (job_id,)).fetchall()
        out[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return out


def llm_calls(fake_llm: httpx.Client) -> dict[str, int]:
    stats = fake_llm.get("/stats").json()
    return {k: int(v.get("requests", 0)) for k, v in (stats.get("by_stage") or {}).items()}


def voc(*args: str) -> str:
    """Run the `voc` CLI against the test stack; returns its stdout (fails on non-zero)."""
    result = subprocess.run(
        [sys.executable, "-m", "voc", "--profile", "test", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"voc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_job(api: httpx.Client, rows: list[dict[str, Any]]) -> dict[str, Any]:
    job_id = create_job(api)
    upload(api, job_id, rows)
    assert api.post(f"/v1/jobs/{job_id}/seal").status_code == 200
    return wait_completed(api, job_id)


def test_replaying_every_stage_changes_nothing_and_costs_no_llm_call(
    api: httpx.Client, fake_llm: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    tag = uuid.uuid4().hex[:8]
    started = datetime.now(UTC)
    time.sleep(1.1)  # record timestamps have millisecond precision: keep earlier jobs out
    job = run_job(api, sample_rows(tag)[:60])
    time.sleep(2)  # let the report's events and callbacks settle
    before = snapshot(db, job["id"])
    calls_before = llm_calls(fake_llm)

    since = started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    for stage in ANALYSIS_STAGES:
        plan = voc("replay", "offsets", "--stage", stage, "--to-datetime", since)
        assert "dry run" in plan
        voc("replay", "offsets", "--stage", stage, "--to-datetime", since, "--execute", "--restart")
    # Wait for every stage to be through what was reset (lag back to zero), then settle.
    for stage in ANALYSIS_STAGES:
        _wait_no_lag(stage)
    time.sleep(3)
    assert snapshot(db, job["id"]) == before
    assert llm_calls(fake_llm) == calls_before, "a replay must be answered from the cache"

    # A replay that bypasses the cache (after a prompt or model change): new calls, and the
    # same rows, not doubled; the job goes through `reprocessing` back to `completed`.
    out = voc("replay", "job", job["id"], "--from", "insight", "--no-cache", "--execute")
    assert f"job {job['id']}: completed" in out
    after = snapshot(db, job["id"])
    assert llm_calls(fake_llm).get("insight", 0) > calls_before.get("insight", 0)
    for table in ("reviews", "translations", "insights", "review_insights", "review_themed"):
        assert after[table][0] == before[table][0], table
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "completed"


def _wait_no_lag(stage: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = voc("replay", "offsets", "--stage", stage, "--to-latest")
        lags = [
            int(cols[3])
            for line in out.splitlines()
            if (cols := line.split()) and cols[0].isdigit() and cols[3].isdigit()
        ]
        if lags and sum(lags) == 0:
            return
        time.sleep(1)
    raise AssertionError(f"{stage} still lagging after {timeout_s}s")


async def _produce_poison(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        where = []
        for value in (b"\x00\xffnot json at all\x00", b'{"v": 1, "job_id": "x", "reviews": 7}'):
            meta = await producer.send_and_wait(topic, value, partition=0)
            where.append((meta.partition, meta.offset))
        return where
    finally:
        await producer.stop()


async def _dlq_headers(
    bootstrap: str, topic: str, offsets: list[tuple[int, int]], since_ms: int
) -> list[dict[str, str]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        wanted = {(str(p), str(o)) for p, o in offsets}
        found: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(found) < len(wanted):
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                for r in recs:
                    h = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                    where = (h.get("voc-original-partition"), h.get("voc-original-offset"))
                    if (
                        r.timestamp >= since_ms
                        and where in wanted
                        and h.get("voc-original-topic", "").endswith("reviews.translated")
                    ):
                        found.append(h)
        return found
    finally:
        await consumer.stop()


def test_garbage_on_a_stage_input_is_dead_lettered_and_the_stage_moves_on(
    api: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    prefix = os.environ.get("VOC_TOPIC_PREFIX", "voc.")
    since_ms = int(time.time() * 1000)
    where = asyncio.run(_produce_poison(bootstrap, f"{prefix}reviews.translated"))
    job = run_job(api, sample_rows(uuid.uuid4().hex[:8])[:30])
    assert job["counts"]["dead_lettered"] == 0
    headers = asyncio.run(_dlq_headers(bootstrap, f"{prefix}insight.dlq", where, since_ms))
    assert len(headers) == 2
    for h in headers:
        assert h["voc-stage"] == "insight"
        assert h["voc-error-type"] == "PoisonRecord"
        assert h["voc-error-message"]
        assert h["voc-original-partition"] == "0"
        assert h["voc-attempt"] == "1"
        assert "voc-first-failed-at" in h
    ids = [f"insight:{prefix}reviews.translated:{p}:{o}" for p, o in where]
    rows = db.execute("SELECT id, error_type FROM dead_letters WHERE id = ANY(%s)", (ids,))
    assert sorted(r[1] for r in rows.fetchall()) == ["PoisonRecord", "PoisonRecord"]


def test_retryable_faults_go_through_the_tiers_then_redrive_completes_the_job(
    api: httpx.Client, fake_llm: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    tag = uuid.uuid4().hex[:8]
    marker = f"FAULT{tag}"
    rows = sample_rows(tag)[:40]
    faulty = set()
    for i, r in enumerate(rows):
        if i % 8 == 3 and r.get("language") == "en":
            r["text"] = f"{r['text']} {marker}"
            faulty.add(r["review_id"])
    assert faulty, "the sample must give some English rows to fault"
    previous = fake_llm.get("/admin/config").json()
    resp = fake_llm.post(
        "/admin/config",
        json={"error_rate": 1.0, "fault_match": marker, "fault_stages": ["insight"]},
    )
    assert resp.status_code == 200, resp.text
    try:
        job = run_job(api, rows)
    finally:
        keys = ("error_rate", "fault_match", "fault_stages")
        fake_llm.post("/admin/config", json={k: previous.get(k) for k in keys})
    assert job["counts"]["dead_lettered"] == len(faulty)
    dead = db.execute(
        "SELECT stage, attempts, error_type FROM dead_letters "
        "WHERE job_id = %s AND redriven_at IS NULL",
        (job["id"],),
    ).fetchall()
    assert len(dead) == len(faulty)
    # three retry tiers, then the DLQ: four attempts, all with a retryable error
    assert {(a, e) for _, a, e in dead} <= {(4, "LLMUnavailable"), (4, "LLMTimeout")}
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["coverage"]["ratio"] < 1.0

    out = voc("dlq", "redrive", "--job", job["id"], "--execute")
    assert f"{len(faulty)} dead letter(s)" in out
    again = voc("dlq", "redrive", "--job", job["id"], "--execute")  # nothing left to send
    assert "0 dead letter(s), 0 record(s)" in again
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        if report.get("coverage", {}).get("ratio") == 1.0:
            break
        time.sleep(1)
    assert report["coverage"]["ratio"] == 1.0, report.get("coverage")
    status = api.get(f"/v1/jobs/{job['id']}").json()
    assert status["counts"]["dead_lettered"] == 0
    assert status["counts"]["themed"] == len(rows)
