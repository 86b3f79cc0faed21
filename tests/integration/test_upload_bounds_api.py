"""Upload bounds over HTTP (issue 12, defect 5): too many rows is a 413 naming the limit and
what was already forwarded; JSON nested past the limit is a 400 at once, and the job is
untouched by a refused upload."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
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

from services.api.upload.json_array import JsonArrayParser

pytestmark = pytest.mark.integration

MAX_ROWS = 1000


@pytest.fixture(scope="module")
async def client_key() -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    prefix = f"upbounds{uuid.uuid4().hex[:8]}."
    topic = await create_submitted_topic(prefix)
    _, key = new_key()
    settings = app_settings(
        prefix,
        rate_limit_per_s=10_000.0,
        rate_limit_burst=10_000,
        max_upload_rows=MAX_ROWS,
        chunk_rows=100,
    )
    async with running_app(settings) as (app, client):
        # A new topic's leaders take a moment; the first upload must not race them.
        await app.state.clients.kafka.producer.partitions_for(topic)
        yield client, key
    await delete_topic(topic)


async def _job(client: httpx.AsyncClient, key: str) -> str:
    resp = await client.post(
        "/v1/jobs", json={"product": "bounds", "target_language": "en"}, headers=auth(key)
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _job_row(job_id: str) -> tuple[int, str]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute("SELECT submitted, status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


async def test_an_upload_over_the_row_limit_is_413(
    client_key: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = client_key
    job = await _job(client, key)
    body = b"text\n" + b"".join(b"r%d\n" % i for i in range(3 * MAX_ROWS))

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    resp = await client.post(
        f"/v1/jobs/{job}/reviews",
        content=pieces(),
        headers={"content-type": "text/csv"} | auth(key),
    )
    assert resp.status_code == 413, resp.text
    detail = resp.json()["detail"]
    assert detail.startswith(f"upload has more than {MAX_ROWS} rows; split it into several")
    assert "rows of this body had already been forwarded" in detail
    assert _job_row(job) == (0, "created")  # a refused upload is not recorded

    ok = b"text\n" + b"".join(b"s%d\n" % i for i in range(MAX_ROWS))
    resp = await client.post(
        f"/v1/jobs/{job}/reviews", content=ok, headers={"content-type": "text/csv"} | auth(key)
    )
    assert resp.status_code == 202 and resp.json()["accepted"] == MAX_ROWS


async def test_json_nested_past_the_limit_is_400(
    client_key: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = client_key
    job = await _job(client, key)
    resp = await client.post(
        f"/v1/jobs/{job}/reviews",
        content=b"[" * 2_000_000,
        headers={"content-type": "application/json"} | auth(key),
    )
    assert resp.status_code == 400, resp.text
    depth = JsonArrayParser.MAX_DEPTH
    assert resp.json()["detail"] == (
        f"body: JSON nested deeper than {depth} levels at byte {depth + 1}; "
        "a review is an object of plain fields"
    )
    assert _job_row(job) == (0, "created")
