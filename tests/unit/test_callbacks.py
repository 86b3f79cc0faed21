"""Callbacks: signatures, the SSRF guard, batching per URL, backoff and delivery outcomes."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from services.report.callbacks import (
    AllowList,
    CallbackRefused,
    CallbackSender,
    CallbackSettings,
    after_failure,
    backoff_s,
    check_url,
    encode_body,
    forbidden_reason,
    group_by_url,
    sign,
    signed_headers,
    verify_signature,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET = b"s3cret"


def _resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"cannot resolve {host}")
        return table[host]

    return resolve


def _row(job: str, url: str, status: str = "completed", attempts: int = 0) -> dict[str, Any]:
    return {
        "id": f"{job}:{status}",
        "job_id": job,
        "url": url,
        "payload": {"event": f"job.{status}", "job_id": job, "status": status},
        "attempts": attempts,
        "next_attempt_at": NOW,
        "delivered_at": None,
        "last_error": None,
    }


# -- signing ----------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1700000000", body) == f"v1={expected}"


def test_verify_accepts_fresh_and_rejects_tampered_or_old() -> None:
    body = b'{"a":1}'
    headers = signed_headers(SECRET, body, now=1_700_000_000)
    ts, sig = headers["x-voc-timestamp"], headers["x-voc-signature"]
    assert verify_signature(SECRET, ts, body, sig, now=1_700_000_010)
    assert not verify_signature(SECRET, ts, b'{"a":2}', sig, now=1_700_000_010)
    assert not verify_signature(b"other", ts, body, sig, now=1_700_000_010)
    assert not verify_signature(SECRET, ts, body, sig, now=1_700_001_000)  # replayed later
    assert not verify_signature(SECRET, "nope", body, sig)


# -- SSRF guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.5", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
    ],
)
def test_non_public_addresses_are_forbidden(ip: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(ip)) == reason


def test_public_addresses_are_fine() -> None:
    assert forbidden_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert forbidden_reason(ipaddress.ip_address("2606:4700::1111")) is None


async def test_check_url_resolves_and_checks_every_address() -> None:
    allow = AllowList.parse("")
    ok = _resolver({"hooks.example.com": ["93.184.216.34"]})
    await check_url("https://hooks.example.com/x", allow, ok)
    # One private address among public ones is enough to refuse (DNS tricks).
    mixed = _resolver({"hooks.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(CallbackRefused, match=r"10\.0\.0\.7, a private"):
        await check_url("https://hooks.example.com/x", allow, mixed)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1%25eth0]/x",
        "http://192.168.0.10/x",
    ],
)
async def test_check_url_refuses_internal_targets(url: str) -> None:
    resolver = _resolver({"localhost": ["127.0.0.1", "::1"]})
    with pytest.raises(CallbackRefused):
        await check_url(url, AllowList.parse(""), resolver)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http:///x", "http://user:pw@example.com/"]
)
async def test_check_url_refuses_bad_urls(url: str) -> None:
    with pytest.raises(CallbackRefused):
        await check_url(url, AllowList.parse(""), _resolver({"example.com": ["93.184.216.34"]}))


async def test_allow_list_by_cidr_and_by_host() -> None:
    resolver = _resolver({"localhost": ["127.0.0.1"], "internal.corp": ["10.0.0.5"]})
    by_cidr = AllowList.parse("127.0.0.0/8, ::1")
    await check_url("http://127.0.0.1:9000/hook", by_cidr, resolver)
    await check_url("http://localhost:9000/hook", by_cidr, resolver)
    await check_url("http://[::1]:9000/hook", by_cidr, resolver)
    with pytest.raises(CallbackRefused):
        await check_url("http://internal.corp/hook", by_cidr, resolver)
    by_host = AllowList.parse("Internal.Corp")
    await check_url("http://internal.corp/hook", by_host, resolver)
    with pytest.raises(CallbackRefused):
        await check_url("http://127.0.0.1/hook", by_host, resolver)


# -- batching and backoff ---------------------------------------------------------------------


def test_group_by_url_batches_and_splits() -> None:
    rows = [
        _row("a", "https://x/1"),
        _row("b", "https://y/"),
        _row("c", "https://x/1"),
        _row("d", "https://x/1"),
    ]
    groups = group_by_url(rows, max_batch=2)
    assert [[r["job_id"] for r in g] for g in groups] == [["a", "c"], ["d"], ["b"]]


def test_body_is_an_object_for_one_event_and_an_array_for_many() -> None:
    assert orjson.loads(encode_body([{"a": 1}])) == {"a": 1}
    assert orjson.loads(encode_body([{"a": 1}, {"a": 2}])) == [{"a": 1}, {"a": 2}]


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n, 2, 30) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]


def test_failure_schedules_retry_then_gives_up() -> None:
    s = CallbackSettings(max_attempts=3, backoff_base_s=2, backoff_max_s=60)
    r1 = after_failure(_row("a", "u"), "HTTP 500", NOW, s)
    assert r1["attempts"] == 1 and r1["next_attempt_at"] == NOW + timedelta(seconds=2)
    assert r1["last_error"] == "HTTP 500" and r1["delivered_at"] is None
    r2 = after_failure(r1, "HTTP 500", NOW, s)
    assert r2["next_attempt_at"] == NOW + timedelta(seconds=4)
    r3 = after_failure(r2, "HTTP 503", NOW, s)
    assert r3["attempts"] == 3 and r3["last_error"].startswith("gave up after 3 attempts")


# -- delivery ---------------------------------------------------------------------------------


def _sender(handler: Any, allow: str = "", **kw: Any) -> CallbackSender:
    settings = CallbackSettings(secret=SecretStr(SECRET.decode()), allow_hosts=allow, **kw)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    resolver = _resolver({"hooks.example.com": ["93.184.216.34"], "local": ["127.0.0.1"]})
    return CallbackSender(settings, client=client, resolver=resolver, clock=lambda: NOW)


async def test_delivery_batches_per_url_and_signs() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sender = _sender(handler)
    rows = [
        _row("a", "https://hooks.example.com/h"),
        _row("b", "https://hooks.example.com/h"),
        _row("c", "https://hooks.example.com/other"),
    ]
    out = await sender.deliver(rows)
    await sender.close()
    assert len(seen) == 2
    batch = next(r for r in seen if r.url.path == "/h")
    body = batch.content
    assert [e["job_id"] for e in orjson.loads(body)] == ["a", "b"]
    assert verify_signature(
        SECRET, batch.headers["x-voc-timestamp"], body, batch.headers["x-voc-signature"]
    )
    single = next(r for r in seen if r.url.path == "/other")
    assert orjson.loads(single.content)["job_id"] == "c"
    assert all(r["delivered_at"] == NOW and r["attempts"] == 1 for r in out)


async def test_refused_callback_is_never_sent_and_recorded_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        raise AssertionError("a refused callback was sent")

    sender = _sender(handler, max_attempts=5)
    out = await sender.deliver([_row("a", "http://local:9000/h")])
    await sender.close()
    assert out[0]["delivered_at"] is None
    assert out[0]["attempts"] == 5  # never due again
    assert out[0]["last_error"].startswith("refused: local resolves to 127.0.0.1, a loopback")


async def test_allow_listed_loopback_is_sent() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    sender = _sender(handler, allow="127.0.0.1")
    out = await sender.deliver([_row("a", "http://local:9000/h")])
    await sender.close()
    assert len(sent) == 1 and out[0]["delivered_at"] == NOW


async def test_http_error_and_transport_error_are_retried_later() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise httpx.ConnectError("connection refused")
        return httpx.Response(503)

    sender = _sender(handler, backoff_base_s=1)
    out = await sender.deliver(
        [_row("a", "https://hooks.example.com/503"), _row("b", "https://hooks.example.com/boom")]
    )
    await sender.close()
    by_job = {r["job_id"]: r for r in out}
    assert by_job["a"]["last_error"] == "HTTP 503"
    assert by_job["b"]["last_error"].startswith("ConnectError")
    for r in out:
        assert r["attempts"] == 1 and r["delivered_at"] is None
        assert r["next_attempt_at"] == NOW + timedelta(seconds=1)


async def test_without_a_secret_nothing_is_sent() -> None:
    settings = CallbackSettings(secret=None)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    sender = CallbackSender(
        settings,
        client=client,
        resolver=_resolver({"hooks.example.com": ["93.184.216.34"]}),
        clock=lambda: NOW,
    )
    out = await sender.deliver([_row("a", "https://hooks.example.com/h")])
    await sender.close()
    assert out[0]["last_error"] == "refused: VOC_CALLBACK_SECRET is not set"
