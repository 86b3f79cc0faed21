"""A job deleted while its records still wait on a topic: the live stage skips them.

`DELETE /v1/jobs/{id}` cannot remove records from Kafka (only retention does), so the
stages must drop them (shared.stage.deleted). On the real stack: with the insight service
stopped, a job's reviews are produced onto `reviews.translated` and the job is deleted
through the API; another job's reviews follow. Started again, insight analyses the live
job and skips the deleted one's records: no insight or dead-letter row of it appears
(unskipped, they would be dead-lettered: the job's model went with it), the skip is counted
in `vocstream_deleted_job_records_skipped_total`, and the job stays gone for its tenant.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import httpx
import pytest
from ingest_kit import db, scalar, wait_for
from prometheus_client.parser import text_string_to_metric_families
from stage_kit import service_stopped
from test_insight_theme import make_job, reviews, send

pytestmark = pytest.mark.integration

GONE_REVIEWS, ALIVE_REVIEWS = 200, 50  # 4 records and 1 (50 reviews per record)


def _skipped(port: int) -> float:
    """insight's count of skipped records of deleted jobs (0 before the first)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "vocstream_deleted_job_records_skipped":
            return sum(s.value for s in family.samples if s.labels.get("stage") == "insight")
    return 0.0


async def _rows(job: str) -> int:
    async with db() as conn:
        n = await scalar(
            conn,
            # Unskipped, its records would be dead-lettered (its model went with the job).
            "SELECT (SELECT count(*) FROM insights WHERE job_id = %s)"
            " + (SELECT count(*) FROM review_insights WHERE job_id = %s)"
            " + (SELECT count(*) FROM dead_letters WHERE job_id = %s)",
            job,
            job,
            job,
        )
        return int(n)


async def test_records_of_a_job_deleted_while_on_kafka_are_skipped(stack: Any) -> None:
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    api = httpx.AsyncClient(
        base_url=stack["VOC_API_URL"],
        headers={"Authorization": f"Bearer {stack['VOC_API_KEY']}"},
        timeout=30,
    )
    port = int(stack["VOC_METRICS_PORT_INSIGHT"])
    alive = str(uuid.uuid4())
    try:
        for _ in range(10):  # a 503 "retry later" right after another test's Postgres restart
            resp = await api.post("/v1/jobs", json={"product": "Earbuds", "target_language": "en"})
            if resp.status_code != 503:
                break
            await asyncio.sleep(0.5)
        assert resp.status_code == 201, resp.text
        gone = str(resp.json()["id"])
        await make_job(alive, "it-deleted-in-kafka")
        with service_stopped(stack, "insight"):
            # The API's job, with the model learn would have stored (make_job adds it).
            await make_job(gone)
            await send(gone, reviews(gone, GONE_REVIEWS))
            resp = await api.delete(f"/v1/jobs/{gone}")
            assert resp.status_code == 200, resp.text
            await send(alive, reviews(alive, ALIVE_REVIEWS))
        # insight runs again from its committed offsets: the deleted job's records first.

        async def through() -> bool:
            async with db() as conn:
                done = await scalar(
                    conn, "SELECT count(*) FROM review_insights WHERE job_id = %s", alive
                )
            skipped = await asyncio.to_thread(_skipped, port)
            return int(done) == ALIVE_REVIEWS and skipped >= GONE_REVIEWS // 50

        assert await wait_for(through, 120.0, interval=0.5), (
            await _rows(alive),
            await asyncio.to_thread(_skipped, port),
        )
        assert await _rows(gone) == 0
        resp = await api.get(f"/v1/jobs/{gone}")
        assert resp.status_code == 404, resp.text
    finally:
        await api.aclose()
