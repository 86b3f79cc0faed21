"""Callback delivery: grouping, backoff, one delivery's outcomes, and the delivery loop.

The sender's HTTP goes through `httpx.MockTransport` (the real-socket behaviours are in
tests/integration/test_callback_delivery.py and tests/e2e/test_callback_receivers.py);
the loop runs against an in-memory `Outbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from services.report.callbacks import (
    CallbackDeliverer,
    CallbackSender,
    CallbackSettings,
    after_failure,
    encode_body,
    group_by_target,
)
from shared import netguard
from shared.backoff import capped_exponential
from shared.callback_signing import derive_secret, verify_signature

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECRET = b"s3cret"
Handler = Callable[[httpx.Request], Any]


def _resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"cannot resolve {host}")
        return table[host]

    return resolve


RESOLVE = _resolver({"hooks.example.com": ["93.184.216.34"], "local": ["127.0.0.1"]})


def _row(
    job: str, url: str, status: str = "completed", attempts: int = 0, tenant: str = "t1"
) -> dict[str, Any]:
    return {
        "id": f"{job}:{status}",
        "job_id": job,
        "url": url,
        "payload": {"event": f"job.{status}", "job_id": job, "status": status},
        "attempts": attempts,
        "next_attempt_at": NOW,
        "delivered_at": None,
        "last_error": None,
        "tenant_id": tenant,
    }


class Pinned:
    """A transport factory: the targets it was asked for, each served by `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.targets: list[netguard.Target] = []

    def __call__(self, target: netguard.Target) -> httpx.AsyncBaseTransport:
        self.targets.append(target)
        return httpx.MockTransport(self.handler)


def _sender(
    handler: Handler, allow: str = "", resolver: Any = RESOLVE, **kw: Any
) -> tuple[CallbackSender, Pinned]:
    pinned = Pinned(handler)
    settings = CallbackSettings(allow_hosts=allow, **kw)
    sender = CallbackSender(settings, resolver=resolver, transport=pinned, clock=lambda: NOW)
    return sender, pinned


# -- grouping and backoff ---------------------------------------------------------------------


def test_groups_per_tenant_and_url_with_lifecycle_order() -> None:
    rows = [
        _row("a", "https://x/1", "completed"),
        _row("b", "https://y/"),
        _row("a", "https://x/1", "report_ready"),
        _row("c", "https://x/1", "completed", tenant="t2"),  # same URL, other tenant
        _row("d", "https://x/1"),
    ]
    groups = group_by_target(rows, max_batch=50)
    assert [[r["id"] for r in g] for g in groups] == [
        ["a:report_ready", "a:completed", "d:completed"],
        ["b:completed"],
        ["c:completed"],
    ]
    split = group_by_target(rows, max_batch=2)
    assert [len(g) for g in split] == [2, 1, 1, 1]


def test_body_is_an_object_for_one_event_and_an_array_for_many() -> None:
    assert orjson.loads(encode_body([{"a": 1}])) == {"a": 1}
    assert orjson.loads(encode_body([{"a": 1}, {"a": 2}])) == [{"a": 1}, {"a": 2}]


def test_backoff_doubles_and_caps() -> None:
    assert [capped_exponential(n, 2, 30) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]


def test_backoff_stays_a_float_after_any_number_of_tries() -> None:
    # 2.0 * 2**1024 overflowed a float: a wait or a failure that lasts long enough got
    # OverflowError instead of the ceiling
    assert capped_exponential(5_000, 2, 60) == 60
    assert capped_exponential(10**9, 0.02, 0.25) == 0.25
    assert capped_exponential(0, 2, 60) == capped_exponential(-3, 2, 60) == 2


def test_failure_schedules_retry_then_gives_up() -> None:
    s = CallbackSettings(max_attempts=3, backoff_base_s=2, backoff_max_s=60)
    r1 = after_failure(_row("a", "u"), "HTTP 500", NOW, s)
    assert r1["attempts"] == 1 and r1["next_attempt_at"] == NOW + timedelta(seconds=2)
    assert r1["last_error"] == "HTTP 500" and r1["delivered_at"] is None
    r2 = after_failure(r1, "HTTP 500", NOW, s)
    assert r2["next_attempt_at"] == NOW + timedelta(seconds=4)
    r3 = after_failure(r2, "HTTP 503", NOW, s)
    assert r3["attempts"] == 3 and r3["last_error"].startswith("gave up after 3 attempts")


# -- one delivery -----------------------------------------------------------------------------


async def test_delivery_is_signed_with_every_given_secret_and_pinned() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sender, pinned = _sender(handler)
    rows = [_row("a", "https://hooks.example.com/h"), _row("b", "https://hooks.example.com/h")]
    out = await sender.deliver_group(rows, [b"new", b"old"])
    await sender.close()
    assert [t.addresses for t in pinned.targets] == [("93.184.216.34",)]
    (request,) = seen
    assert [e["job_id"] for e in orjson.loads(request.content)] == ["a", "b"]
    ts, sig = request.headers["x-voc-timestamp"], request.headers["x-voc-signature"]
    assert verify_signature(b"new", ts, request.content, sig)
    assert verify_signature(b"old", ts, request.content, sig)
    assert all(r["delivered_at"] == NOW and r["attempts"] == 1 for r in out)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://local:9000/h", "refused: port 9000 is not allowed"),
        ("http://local/h", "refused: local resolves to 127.0.0.1, a loopback address"),
        # Labels that made getaddrinfo raise UnicodeError and halt the whole tick.
        (f"http://{'a' * 64}.example.com/h", "refused: host label 'aaaaaaaaaaaaaaaaaaaa'..."),
        ("http://a..example.com/h", "refused: host 'a..example.com' has an empty label"),
    ],
)
async def test_refused_callback_is_never_sent_and_failed_for_good(url: str, reason: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        raise AssertionError("a refused callback was sent")

    sender, pinned = _sender(handler, max_attempts=5)
    (row,) = await sender.deliver_group([_row("a", url)], [SECRET])
    assert row["delivered_at"] is None
    assert row["attempts"] == 5  # never due again
    assert row["last_error"].startswith(reason)
    assert pinned.targets == []


async def test_allow_listed_loopback_is_sent() -> None:
    sender, pinned = _sender(lambda r: httpx.Response(200), allow="127.0.0.1")
    (row,) = await sender.deliver_group([_row("a", "http://local/h")], [SECRET])
    assert row["delivered_at"] == NOW and pinned.targets[0].addresses == ("127.0.0.1",)


async def test_http_errors_redirects_and_transport_errors_are_retried_later() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise httpx.ConnectError("connection refused")
        if request.url.path == "/moved":
            return httpx.Response(307, headers={"location": "http://169.254.169.254/"})
        return httpx.Response(503)

    sender, _ = _sender(handler, backoff_base_s=1)
    outcomes = {}
    for path in ("/503", "/boom", "/moved"):
        (row,) = await sender.deliver_group(
            [_row(path, f"https://hooks.example.com{path}")], [b"s"]
        )
        outcomes[path] = row
        assert row["attempts"] == 1 and row["delivered_at"] is None
        assert row["next_attempt_at"] == NOW + timedelta(seconds=1)
    assert outcomes["/503"]["last_error"] == "HTTP 503"
    assert outcomes["/boom"]["last_error"].startswith("ConnectError: connection refused")
    assert outcomes["/moved"]["last_error"] == "HTTP 307 (redirects are not followed)"


async def test_any_resolver_or_receiver_error_stays_in_its_own_rows() -> None:
    async def unicode_resolver(host: str, port: int) -> list[str]:
        raise UnicodeError("label empty or too long")

    sender, _ = _sender(lambda r: httpx.Response(200), resolver=unicode_resolver)
    (row,) = await sender.deliver_group([_row("a", "https://hooks.example.com/h")], [b"s"])
    assert row["last_error"] == "UnicodeError: label empty or too long"
    sender, _ = _sender(lambda r: httpx.Response(200), resolver=_resolver({}))
    (row,) = await sender.deliver_group([_row("a", "https://hooks.example.com/h")], [b"s"])
    assert row["last_error"] == "resolve failed: cannot resolve hooks.example.com"


async def test_a_slow_receiver_is_cut_at_the_total_deadline() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)  # pragma: no cover - the deadline comes first

    sender, _ = _sender(handler, deadline_s=0.2)
    (row,) = await sender.deliver_group([_row("a", "https://hooks.example.com/h")], [b"s"])
    assert row["last_error"].startswith("deadline of 0.2s exceeded")
    assert row["delivered_at"] is None and row["attempts"] == 1


async def test_the_response_body_is_read_only_up_to_the_limit() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    sender, _ = _sender(handler, max_response_bytes=4096)
    (row,) = await sender.deliver_group([_row("a", "https://hooks.example.com/h")], [b"s"])
    assert row["delivered_at"] == NOW
    assert pulled <= 5


async def test_without_secrets_nothing_is_sent_and_it_is_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        raise AssertionError("an unsigned callback was sent")

    sender, _ = _sender(handler)
    (row,) = await sender.deliver_group([_row("a", "https://hooks.example.com/h")], [])
    assert row["last_error"] == (
        "tenant t1 has no callback signing secret (create one with POST /v1/callback-secret)"
    )
    assert row["attempts"] == 1 and row["delivered_at"] is None


# -- the delivery loop ------------------------------------------------------------------------


class MemoryOutbox:
    """An in-memory `Outbox`: rows by id, secrets by tenant, every save recorded."""

    def __init__(self, rows: Sequence[dict[str, Any]], secrets: dict[str, list[str]]) -> None:
        self.rows = {r["id"]: dict(r) for r in rows}
        self.secrets = secrets
        self.saves: list[list[str]] = []
        self.busy_seen: list[set[str]] = []

    async def due(
        self, max_attempts: int, limit: int, busy: Collection[str]
    ) -> list[dict[str, Any]]:
        self.busy_seen.append(set(busy))
        due = [
            r
            for r in self.rows.values()
            if r["delivered_at"] is None
            and r["attempts"] < max_attempts
            and r["next_attempt_at"] <= NOW
            and r["id"] not in busy
        ]
        return due[:limit]

    async def secret_ids(self, tenants: Collection[str]) -> dict[str, list[str]]:
        return {t: self.secrets[t] for t in tenants if t in self.secrets}

    async def save(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.saves.append([r["id"] for r in rows])
        for r in rows:
            self.rows[r["id"]] = dict(r)


async def test_loop_isolates_deliveries_and_saves_each_as_it_ends() -> None:
    release = asyncio.Event()
    received: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        if request.url.path == "/slow":
            await release.wait()
        if request.url.path == "/broken":
            raise httpx.RemoteProtocolError("garbage")
        return httpx.Response(204)

    sender, _ = _sender(handler)
    outbox = MemoryOutbox(
        [
            _row("slow", "https://hooks.example.com/slow"),
            _row("broken", "https://hooks.example.com/broken"),
            _row("fine", "https://hooks.example.com/fine", tenant="t2"),
            _row("legacy", f"http://{'a' * 64}.example.com/h"),
            _row("orphan", "https://hooks.example.com/fine", tenant=""),
        ],
        {"t1": ["s1"], "t2": ["s2-new", "s2-old"]},
    )
    deliverer = CallbackDeliverer(sender, outbox, b"key", sender.settings)
    assert await deliverer.pass_once() == 5
    # The others are saved while /slow still waits, and the next pass does not take it again.
    for _ in range(100):
        if len(outbox.saves) == 4:
            break
        await asyncio.sleep(0.01)
    assert sorted(i for s in outbox.saves for i in s) == [
        "broken:completed",
        "fine:completed",
        "legacy:completed",
        "orphan:completed",
    ]
    assert await deliverer.pass_once() == 0
    assert outbox.busy_seen[-1] == {"slow:completed"}
    release.set()
    await deliverer.wait_idle()
    state = {i: r for i, r in outbox.rows.items()}
    assert state["slow:completed"]["delivered_at"] == NOW
    assert state["fine:completed"]["delivered_at"] == NOW
    assert state["broken:completed"]["last_error"] == "RemoteProtocolError: garbage"
    assert state["legacy:completed"]["last_error"].startswith("refused: host label")
    assert state["orphan:completed"]["last_error"] == "refused: the job no longer exists"
    # Tenant t2 was signed with both of its current secrets, derived from the server key.
    fine = next(r for r in received if r.url.path == "/fine")
    ts, sig = fine.headers["x-voc-timestamp"], fine.headers["x-voc-signature"]
    for secret_id in ("s2-new", "s2-old"):
        assert verify_signature(
            derive_secret(b"key", "t2", secret_id).encode(), ts, fine.content, sig
        )
    assert not verify_signature(derive_secret(b"key", "t1", "s1").encode(), ts, fine.content, sig)
    await deliverer.close()


async def test_loop_without_a_server_key_refuses_and_a_failing_save_keeps_rows_due() -> None:
    sender, pinned = _sender(lambda r: httpx.Response(204))
    outbox = MemoryOutbox([_row("a", "https://hooks.example.com/h")], {"t1": ["s1"]})
    deliverer = CallbackDeliverer(sender, outbox, None, sender.settings)
    await deliverer.pass_once()
    await deliverer.wait_idle()
    assert outbox.rows["a:completed"]["last_error"] == "refused: VOC_CALLBACK_SECRET is not set"
    assert pinned.targets == []

    class FailingOutbox(MemoryOutbox):
        async def save(self, rows: Sequence[Mapping[str, Any]]) -> None:
            raise OSError("postgres went away")

    failing = FailingOutbox([_row("b", "https://hooks.example.com/h")], {"t1": ["s1"]})
    deliverer = CallbackDeliverer(sender, failing, b"key", sender.settings)
    await deliverer.pass_once()
    await deliverer.wait_idle()
    assert failing.rows["b:completed"]["delivered_at"] is None  # delivered again later
    assert await deliverer.pass_once() == 1  # no longer busy
    await deliverer.wait_idle()
    await deliverer.close()


async def test_only_the_leader_delivers_and_close_stops_the_loop() -> None:
    class Follower:
        closed = False

        async def check(self) -> bool:
            return False

        async def close(self) -> None:
            self.closed = True

    sender, _ = _sender(lambda r: httpx.Response(204))
    outbox = MemoryOutbox([_row("a", "https://hooks.example.com/h")], {"t1": ["s1"]})
    leader = Follower()
    deliverer = CallbackDeliverer(
        sender, outbox, b"key", CallbackSettings(poll_s=0.01), leader=leader
    )
    deliverer.start()
    await asyncio.sleep(0.05)
    await deliverer.close()
    assert outbox.saves == [] and outbox.busy_seen == [] and leader.closed
