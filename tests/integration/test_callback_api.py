"""The API side of callbacks, in-process on the real stack: callback URLs validated at job
creation (precise 422s), and the tenant's own signing secret (create, list, rotate)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

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

from shared.callback_signing import SigningSettings, derive_secret

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    prefix = f"cbapi{uuid.uuid4().hex[:8]}."
    topic = await create_submitted_topic(prefix, partitions=1)
    settings = app_settings(prefix, rate_limit_per_s=10_000.0, rate_limit_burst=10_000)
    async with running_app(settings) as (_, c):
        yield c
    await delete_topic(topic)


def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# -- callback URLs at job creation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://{'a' * 64}.example.com/hook", "is longer than 63 characters"),
        ("http://a..example.com/hook", "has an empty label"),
        ("http://exa_mple.com/hook", "may only hold letters, digits and inner hyphens"),
        ("https://example.com:22/hook", "port 22 is not allowed"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/hook", "10.0.0.5 is a private address"),
        ("http://[fec0::1]/hook", "fec0::1 is a site-local address"),
        ("http://[2002:a00:1::1]/hook", "6to4 form of 10.0.0.1"),
        ("http://0x7f000002/hook", "127.0.0.2 is a loopback address"),
        ("http://user:pw@example.com/hook", "credentials in the URL are not allowed"),
    ],
)
async def test_bad_callback_urls_are_refused_with_the_reason(
    client: httpx.AsyncClient, url: str, message: str
) -> None:
    _, key = new_key()
    resp = await client.post(
        "/v1/jobs",
        json={"product": "p", "target_language": "en", "callback_url": url},
        headers=auth(key),
    )
    assert resp.status_code == 422, resp.text
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["body", "callback_url"]
    assert message in error["msg"], error


async def test_good_callback_urls_are_accepted(client: httpx.AsyncClient) -> None:
    _, key = new_key()
    for url in ("https://hooks.example.com/voc?token=x", "http://127.0.0.1:39999/hook"):
        resp = await client.post(
            "/v1/jobs",
            json={"product": "p", "target_language": "en", "callback_url": url},
            headers=auth(key),
        )
        # 127.0.0.1 is allow-listed in the test stack (VOC_CALLBACK_ALLOW_HOSTS), any port.
        assert resp.status_code == 201, resp.text


# -- signing secrets --------------------------------------------------------------------------


async def test_secret_is_shown_once_and_derived_not_stored(client: httpx.AsyncClient) -> None:
    tenant, key = new_key()
    resp = await client.post("/v1/callback-secret", headers=auth(key))
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    doc = resp.json()
    assert doc["secret"].startswith("vocwhsec_") and doc["previous_valid_until"] is None
    # Postgres holds the id only; the secret is the server key's derivation of it.
    rows = sql("SELECT * FROM callback_secrets WHERE tenant_id = %s", tenant)
    assert len(rows) == 1 and doc["secret"] not in repr(rows)
    server_key = SigningSettings().key
    assert server_key is not None
    assert doc["secret"] == derive_secret(server_key.get_secret_value().encode(), tenant, doc["id"])
    listed = (await client.get("/v1/callback-secret", headers=auth(key))).json()
    assert listed == {
        "data": [{"id": doc["id"], "created_at": doc["created_at"], "expires_at": None}]
    }
    assert doc["secret"] not in (await client.get("/v1/callback-secret", headers=auth(key))).text


async def test_each_tenant_has_its_own_secret(client: httpx.AsyncClient) -> None:
    _, key_a = new_key()
    _, key_b = new_key()
    a = (await client.post("/v1/callback-secret", headers=auth(key_a))).json()
    b = (await client.post("/v1/callback-secret", headers=auth(key_b))).json()
    assert a["secret"] != b["secret"]
    listed_b = (await client.get("/v1/callback-secret", headers=auth(key_b))).json()["data"]
    assert [s["id"] for s in listed_b] == [b["id"]]


async def test_rotation_overlaps_then_ends_and_can_cut_over_at_once(
    client: httpx.AsyncClient,
) -> None:
    _, key = new_key()
    first = (await client.post("/v1/callback-secret", headers=auth(key))).json()
    second = (
        await client.post("/v1/callback-secret", json={"overlap_s": 3600}, headers=auth(key))
    ).json()
    assert second["previous_valid_until"] is not None
    listed = (await client.get("/v1/callback-secret", headers=auth(key))).json()["data"]
    assert [s["id"] for s in listed] == [second["id"], first["id"]]
    assert listed[0]["expires_at"] is None
    assert listed[1]["expires_at"] == second["previous_valid_until"]
    # A leaked secret: overlap 0 ends every earlier one now.
    third = (
        await client.post("/v1/callback-secret", json={"overlap_s": 0}, headers=auth(key))
    ).json()
    listed = (await client.get("/v1/callback-secret", headers=auth(key))).json()["data"]
    assert [s["id"] for s in listed] == [third["id"]]


async def test_secret_endpoint_refuses_bad_input_and_anonymous_callers(
    client: httpx.AsyncClient,
) -> None:
    _, key = new_key()
    assert (await client.post("/v1/callback-secret")).status_code == 401
    for body in ({"overlap_s": -1}, {"overlap_s": 10**9}, {"overlap": 5}):
        resp = await client.post("/v1/callback-secret", json=body, headers=auth(key))
        assert resp.status_code == 422, (body, resp.text)


async def test_without_a_server_key_secrets_cannot_be_made(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_key()
    monkeypatch.delenv("VOC_CALLBACK_SECRET", raising=False)
    resp = await client.post("/v1/callback-secret", headers=auth(key))
    assert resp.status_code == 503
    assert "VOC_CALLBACK_SECRET" in resp.json()["detail"]
