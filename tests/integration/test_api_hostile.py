"""Hostile input against the API (in-process app on the real stack): oversized and deeply
nested bodies, NUL bytes, bad encodings, huge fields, odd ids and cursors, key floods,
limits shared by a tenant's keys, Redis outages, `/ready`, and security headers.

Every case asserts the precise answer (status, and where the error is) and, through the
`bystander` fixture, that another tenant's job is untouched afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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

from shared.auth import new_key as random_key

pytestmark = pytest.mark.integration

MAX_BODY = 4096
MAX_UPLOAD = 64 * 1024
JSON = {"content-type": "application/json"}
JOB = {"product": "Aurora X2 earbuds", "target_language": "en"}


@dataclass
class Api:
    """The app under test, its client and one tenant's key."""

    app: FastAPI
    client: httpx.AsyncClient
    key: str
    tenant: str

    async def create_job(self, **fields: Any) -> str:
        resp = await self.client.post("/v1/jobs", json=JOB | fields, headers=auth(self.key))
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])


def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[Api]:
    prefix = f"apihostile{uuid.uuid4().hex[:8]}."
    topic = await create_submitted_topic(prefix)
    tenant, key = new_key()
    settings = app_settings(
        prefix,
        rate_limit_per_s=10_000.0,
        rate_limit_burst=10_000,
        key_lookups_per_s=10_000.0,
        key_lookups_burst=10_000,
        max_body_bytes=MAX_BODY,
        max_upload_bytes=MAX_UPLOAD,
    )
    async with running_app(settings) as (app, client):
        yield Api(app, client, key, tenant)
    await delete_topic(topic)


@pytest.fixture
async def bystander(api: Api) -> AsyncIterator[str]:
    """Another tenant's job with an upload; after the test it must be exactly as it was."""
    _, key = new_key()
    resp = await api.client.post("/v1/jobs", json=JOB, headers=auth(key))
    job_id = str(resp.json()["id"])
    up = await api.client.post(
        f"/v1/jobs/{job_id}/reviews",
        content=b'{"text": "still here"}\n',
        headers={"content-type": "application/x-ndjson"} | auth(key),
    )
    assert up.status_code == 202, up.text
    before = sql("SELECT status, submitted, product FROM jobs WHERE id = %s", job_id)
    yield job_id
    after = (await api.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json()
    assert after["status"] == "receiving" and after["counts"]["submitted"] == 1
    assert sql("SELECT status, submitted, product FROM jobs WHERE id = %s", job_id) == before


def _locs(resp: httpx.Response) -> list[list[Any]]:
    return [err["loc"] for err in resp.json()["detail"]]


# -- defect 4: bodies are limited before parsing, authenticated or not -------------------------


async def test_oversized_body_is_413_before_auth_by_content_length(
    api: Api, bystander: str
) -> None:
    big = orjson.dumps(JOB | {"options": {"x": "y" * 2_000_000}})
    resp = await api.client.post("/v1/jobs", content=big, headers=JSON)  # no key at all
    assert resp.status_code == 413, resp.text
    assert resp.json() == {
        "detail": f"request body of {len(big)} bytes exceeds the limit of {MAX_BODY} bytes "
        "for POST /v1/jobs"
    }


async def test_oversized_chunked_body_is_413_while_streaming(api: Api, bystander: str) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b"[" * 1024

    resp = await api.client.post("/v1/jobs", content=chunks(), headers=JSON | auth(api.key))
    assert resp.status_code == 413, resp.text
    assert resp.json()["detail"] == (
        f"request body exceeds the limit of {MAX_BODY} bytes for POST /v1/jobs"
    )
    assert sent < 10  # refused after the limit, not after the whole body


async def test_every_route_limits_its_body(api: Api, bystander: str) -> None:
    job = await api.create_job()
    body = b"x" * (MAX_BODY + 1)
    for method, path in (
        ("POST", f"/v1/jobs/{job}/seal"),
        ("GET", "/v1/jobs"),
        ("DELETE", f"/v1/jobs/{job}"),
        ("POST", "/no/such/route"),
    ):
        resp = await api.client.request(method, path, content=body, headers=auth(api.key))
        assert resp.status_code == 413, (method, path, resp.text)
    # Uploads keep their own, larger limit (and stream under it).
    rows = b"".join(b'{"text": "review %d"}\n' % i for i in range(300))
    assert MAX_BODY < len(rows) < MAX_UPLOAD
    up = await api.client.post(
        f"/v1/jobs/{job}/reviews",
        content=rows,
        headers={"content-type": "application/x-ndjson"} | auth(api.key),
    )
    assert up.status_code == 202 and up.json()["accepted"] == 300, up.text
    too_big = await api.client.post(
        f"/v1/jobs/{job}/reviews",
        content=b"x" * (MAX_UPLOAD + 1),
        headers={"content-type": "text/csv"} | auth(api.key),
    )
    assert too_big.status_code == 413
    assert f"exceeds the limit of {MAX_UPLOAD} bytes" in too_big.json()["detail"]


async def test_invalid_content_length_is_400(api: Api) -> None:
    resp = await api.client.post(
        "/v1/jobs", content=b"{}", headers=JSON | {"content-length": "-5"} | auth(api.key)
    )
    assert resp.status_code == 400 and resp.json() == {"detail": "invalid Content-Length header"}


# -- defect 6 and the hostile suite: odd values get precise 4xx, never a 500 -------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # deeply nested options
        (
            b'{"product": "p", "target_language": "en", "options": '
            + b'{"a": ' * 40
            + b"1"
            + b"}" * 40
            + b"}",
            "must not nest deeper than 16 levels",
        ),
        # integers beyond 64 bits and numbers JSON cannot carry back
        (
            b'{"product": "p", "target_language": "en", "options": {"n": 18446744073709551616}}',
            "integers must fit in 64 bits",
        ),
        (
            b'{"product": "p", "target_language": "en", "options": {"n": 1e999}}',
            "numbers must be finite",
        ),
        (
            b'{"product": "p", "target_language": "en", "options": {"n": NaN}}',
            "numbers must be finite",
        ),
        (
            b'{"product": "p", "target_language": "en", "options": {"n": 1.5e62}}',
            "numbers must be finite and within +-2^63",  # Postgres would return an integer
        ),
        # NUL and lone surrogates, in values and keys
        (
            b'{"product": "p", "target_language": "en", "options": {"k\\u0000": 1}}',
            "must not contain NUL characters",
        ),
        (b'{"product": "p\\ud800", "target_language": "en"}', "unicode string"),
        (
            b'{"product": "p", "target_language": "en", "options": {"k": ["\\udfff"]}}',
            "no lone surrogates",
        ),
        # huge fields
        (orjson.dumps({"product": "p" * 600, "target_language": "en"}), "at most 500"),
    ],
)
async def test_job_fields_that_cannot_be_stored_are_422(
    api: Api, bystander: str, raw: bytes, message: str
) -> None:
    resp = await api.client.post("/v1/jobs", content=raw, headers=JSON | auth(api.key))
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]
    assert any(message in err["msg"] for err in errors), errors
    assert errors[0]["loc"][0] == "body"
    assert all(set(err) == {"loc", "msg", "type"} for err in errors)  # the input is not echoed


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 3000,  # deep nesting of the body itself
        b'{"product": "\xff\xfe", "target_language": "en"}',  # not UTF-8
        b'{"product": "p", "target_language": "en"',  # truncated
        b"\x00\x00\x00",
    ],
)
async def test_unparseable_bodies_are_4xx(api: Api, bystander: str, raw: bytes) -> None:
    resp = await api.client.post("/v1/jobs", content=raw, headers=JSON | auth(api.key))
    assert resp.status_code in (400, 422), resp.text
    assert "detail" in resp.json()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/report"),
        ("GET", "/report.html"),
        ("GET", "/insights"),
        ("GET", "/themes"),
        ("POST", "/seal"),
        ("POST", "/reviews"),
        ("DELETE", ""),
    ],
)
@pytest.mark.parametrize("job_id", ["%00", "x" * 80, "a%27%3B--", "ABC", "%F0%9F%92%A9"])
async def test_odd_job_ids_are_422_on_every_route(
    api: Api, bystander: str, method: str, suffix: str, job_id: str
) -> None:
    resp = await api.client.request(
        method,
        f"/v1/jobs/{job_id}{suffix}",
        content=b"[]",
        headers=JSON | auth(api.key),
    )
    assert resp.status_code == 422, resp.text
    assert _locs(resp) == [["path", "job_id"]]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("suffix", "params", "where"),
    [
        ("/insights", {"dimension": "\x00"}, ["query", "dimension"]),
        ("/themes", {"dimension": "\x00"}, ["query", "dimension"]),
        ("/insights", {"theme_id": "\x00"}, ["query", "theme_id"]),
        ("/insights", {"theme_id": "not-a-theme"}, ["query", "theme_id"]),
        ("/insights", {"cursor": "AA"}, ["query", "cursor"]),  # decodes to a NUL
        ("/insights", {"cursor": _b64(b"\xff\xfe")}, ["query", "cursor"]),
        ("/themes", {"cursor": _b64(b"99999999999999999999999")}, ["query", "cursor"]),
        ("/themes", {"cursor": _b64(b"-1")}, ["query", "cursor"]),
        ("/themes", {"cursor": "AA"}, ["query", "cursor"]),
        ("", {"cursor": "AA"}, None),  # GET /v1/jobs/{id} has no cursor: ignored
    ],
)
async def test_odd_filters_and_cursors_are_422(
    api: Api, bystander: str, suffix: str, params: dict[str, str], where: list[str] | None
) -> None:
    job = await api.create_job()
    resp = await api.client.get(f"/v1/jobs/{job}{suffix}", params=params, headers=auth(api.key))
    if where is None:
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code == 422, resp.text
    assert _locs(resp) == [where]


async def test_job_list_cursor_of_nul_is_422(api: Api) -> None:
    resp = await api.client.get("/v1/jobs", params={"cursor": "AA"}, headers=auth(api.key))
    assert resp.status_code == 422 and _locs(resp) == [["query", "cursor"]]


# -- defect 7: limits before auth, per tenant, and what Redis being down does ------------------


async def test_random_keys_cost_no_lookups_beyond_the_address_budget() -> None:
    prefix = f"apihostile{uuid.uuid4().hex[:8]}."
    _, key = new_key()
    settings = app_settings(prefix, key_lookups_per_s=0.1, key_lookups_burst=5)
    async with running_app(settings) as (_, client):
        before = _metric((await client.get("/metrics")).text, UNKNOWN_LOOKUPS)
        ok = await client.get("/v1/jobs", headers=auth(key))
        assert ok.status_code == 200  # one lookup of a known key (free), now cached
        codes = [
            (await client.get("/v1/jobs", headers=auth(random_key()))).status_code
            for _ in range(40)
        ]
        # The burst of unknown keys is answered (401), the next one finds the budget
        # empty (429, and the address is blocked), the rest cost no lookup at all.
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        refused = await client.get("/v1/jobs", headers=auth(random_key()))
        assert "too many unknown API keys from 127.0.0.1" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        # Garbage that is not shaped like a key costs nothing at all.
        for junk in ("nope", "voc_", "Bearer", "x" * 300):
            assert (await client.get("/v1/jobs", headers=auth(junk))).status_code == 401
        # The tenant's cached key was not flushed by the flood, and the same unknown key
        # twice is answered from the negative cache.
        assert (await client.get("/v1/jobs", headers=auth(key))).status_code == 200
        metrics = (await client.get("/metrics")).text
    # Metrics are per process: the delta is this test's.
    assert _metric(metrics, UNKNOWN_LOOKUPS) - before == 6


UNKNOWN_LOOKUPS = 'vocstream_api_key_lookups_total{result="unknown"}'
REDIS_FAILED = 'vocstream_api_ready_checks_total{check="redis",result="failed"}'
POSTGRES_OK = 'vocstream_api_ready_checks_total{check="postgres",result="ok"}'


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_rate_limit_is_shared_by_a_tenants_keys() -> None:
    prefix = f"apihostile{uuid.uuid4().hex[:8]}."
    settings = app_settings(prefix, rate_limit_per_s=0.5, rate_limit_burst=3)
    tenant, first = new_key()
    _, second = new_key(tenant)
    _, stranger = new_key()
    async with running_app(settings) as (_, client):
        codes = [(await client.get("/v1/jobs", headers=auth(first))).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        resp = await client.get("/v1/jobs", headers=auth(second))  # same tenant, other key
        assert resp.status_code == 429, resp.text
        assert f"for tenant '{tenant}'" in resp.json()["detail"]
        # Another tenant is unaffected.
        assert (await client.get("/v1/jobs", headers=auth(stranger))).status_code == 200


async def test_with_redis_down_reads_pass_and_writes_are_503() -> None:
    prefix = f"apihostile{uuid.uuid4().hex[:8]}."
    settings = app_settings(prefix)
    settings = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(
                update={"url": settings.redis.url.__class__("redis://127.0.0.1:1/0")}
            )
        }
    )
    _, key = new_key()
    async with running_app(settings) as (_, client):
        listed = await client.get("/v1/jobs", headers=auth(key))
        assert listed.status_code == 200, listed.text
        created = await client.post("/v1/jobs", json=JOB, headers=auth(key))
        assert created.status_code == 503, created.text
        assert created.json() == {"detail": "the rate limiter (Redis) is unavailable, retry later"}
        assert created.headers["retry-after"] == "5"
        # Key lookups fall back to a per-replica limit: unknown keys are still refused.
        assert (await client.get("/v1/jobs", headers=auth(random_key()))).status_code == 401


async def test_ready_is_cached_and_reveals_no_internals() -> None:
    prefix = f"apihostile{uuid.uuid4().hex[:8]}."
    topic = await create_submitted_topic(prefix)
    settings = app_settings(prefix, ready_cache_s=30.0, ready_timeout_s=1.0)
    settings = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(
                update={"url": settings.redis.url.__class__("redis://127.0.0.1:1/0")}
            )
        }
    )
    async with running_app(settings) as (_, client):
        before = (await client.get("/metrics")).text
        answers = await asyncio.gather(*(client.get("/ready") for _ in range(25)))
        metrics = (await client.get("/metrics")).text
    await delete_topic(topic)
    assert {a.status_code for a in answers} == {503}
    body = answers[0].json()
    assert body == {
        "status": "not ready",
        "checks": {"kafka": "ok", "postgres": "ok", "redis": "failed"},
        "detail": "not ready: redis failed",
    }
    assert all(a.json() == body for a in answers)
    # 25 concurrent probes cost each dependency one check.
    for series in (REDIS_FAILED, POSTGRES_OK):
        assert _metric(metrics, series) - _metric(before, series) == 1, series


# -- defect 10: security headers -------------------------------------------------------------


async def test_security_headers_on_every_answer(api: Api) -> None:
    job = await api.create_job()
    for path, key in (
        ("/v1/jobs", api.key),
        (f"/v1/jobs/{job}", api.key),
        ("/v1/jobs", None),  # a 401
        ("/health", None),
        ("/nowhere", None),
    ):
        resp = await api.client.get(path, headers=auth(key) if key else {})
        assert resp.headers["x-content-type-options"] == "nosniff", path
        assert resp.headers["x-frame-options"] == "DENY", path
        assert resp.headers["referrer-policy"] == "no-referrer", path
        assert resp.headers["content-security-policy"].startswith("default-src 'none'"), path
    assert (await api.client.get("/v1/jobs", headers=auth(api.key))).headers[
        "cache-control"
    ] == "no-store"


async def test_report_html_has_a_strict_csp(api: Api) -> None:
    job = await api.create_job()
    pending = await api.client.get(f"/v1/jobs/{job}/report.html", headers=auth(api.key))
    assert pending.status_code == 202
    report = {
        "job_id": job,
        "product": "<script>alert(1)</script>",
        "status": "completed",
        "summary": "ok",
    }
    sql(
        "INSERT INTO reports (job_id, status, coverage, data) VALUES (%s, 'completed', 1, %s)",
        job,
        orjson.dumps(report).decode(),
    )
    page = await api.client.get(f"/v1/jobs/{job}/report.html", headers=auth(api.key))
    for resp in (pending, page):
        csp = resp.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-type"].startswith("text/html")
