"""Job callbacks: signed POSTs of `job.report_ready` / `job.completed` to a job's URL.

The report stage writes a `callback_outbox` row (id `job_id:status`) in the same
transaction as the report, so a callback is never lost nor announced for a report that
does not exist. Delivery is not part of the stage's consume path or tick: a
`CallbackDeliverer` runs as its own task in the report process (on the replica holding
the deliverer lock), so no receiver can hold up reports. Each pass it takes due rows:

- events due for the same (tenant, URL) go in one POST (a JSON array, report_ready before
  completed; a single event is sent as an object);
- the body is signed with the tenant's own secrets (`shared.callback_signing`);
- every delivery is on its own: its own task, a total deadline for resolve, connect, send
  and response together (`VOC_CALLBACK_DEADLINE_S`), at most a few KB of the response read
  (`VOC_CALLBACK_MAX_RESPONSE_BYTES`), redirects not followed, and whatever goes wrong is
  recorded on its rows only (`attempts`, `next_attempt_at` with exponential backoff,
  `last_error`), up to `max_attempts`; its rows are saved as soon as it ends;
- the SSRF guard (`shared.netguard`): the URL is checked, resolved once, every address
  must be public (or allow-listed), and the connection goes to a vetted address (pinned:
  a DNS answer that changes after the check is never used). A refused URL is recorded
  as failed for good with the reason and never sent. Logs name the receiver by origin
  only (URL paths can carry the tenant's tokens).

Delivery is at-least-once (a crash between the POST and saving its outcome re-sends), so
receivers should dedupe on (`job_id`, `event`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from psycopg.rows import dict_row
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.report import metrics
from shared import netguard
from shared.backoff import capped_exponential
from shared.callback_signing import derive_secret, signed_headers
from shared.db.pool import ConnectionPool

log = logging.getLogger(__name__)

OUTBOX_COLUMNS = (
    "id",
    "job_id",
    "url",
    "payload",
    "attempts",
    "next_attempt_at",
    "delivered_at",
    "last_error",
)
# A delivery's outcome is an UPDATE, never an upsert: the job may have been deleted (its
# rows purged) while the POST was out, and an upsert would bring the purged row back.
Q_SAVE = """
UPDATE callback_outbox SET attempts = %(attempts)s, next_attempt_at = %(next_attempt_at)s,
       delivered_at = %(delivered_at)s, last_error = %(last_error)s
WHERE id = %(id)s
"""
# Lifecycle order of the events of one job inside one POST.
_EVENT_RANK = {"report_ready": 0, "completed": 1}
MAX_SECRETS_PER_TENANT = 5  # signatures per request while rotations overlap


class CallbackSettings(BaseSettings):
    """Callback SSRF allow-lists, deadlines, retry policy and concurrency."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    allow_hosts: str = Field(default="", validation_alias="VOC_CALLBACK_ALLOW_HOSTS")
    allow_ports: str = Field(
        default=netguard.DEFAULT_PORTS, validation_alias="VOC_CALLBACK_ALLOW_PORTS"
    )
    # Each network step (connect, write, each read); the deadline bounds their sum.
    timeout_s: float = Field(default=5.0, gt=0, validation_alias="VOC_CALLBACK_TIMEOUT_S")
    deadline_s: float = Field(default=10.0, gt=0, validation_alias="VOC_CALLBACK_DEADLINE_S")
    max_response_bytes: int = Field(
        default=4096, ge=0, le=65536, validation_alias="VOC_CALLBACK_MAX_RESPONSE_BYTES"
    )
    max_attempts: int = Field(default=8, ge=1, validation_alias="VOC_CALLBACK_MAX_ATTEMPTS")
    backoff_base_s: float = Field(default=2.0, ge=0, validation_alias="VOC_CALLBACK_BACKOFF_S")
    backoff_max_s: float = Field(default=600.0, ge=0, validation_alias="VOC_CALLBACK_BACKOFF_MAX_S")
    max_batch: int = Field(default=50, ge=1, validation_alias="VOC_CALLBACK_MAX_BATCH")
    concurrency: int = Field(default=8, ge=1, validation_alias="VOC_CALLBACK_CONCURRENCY")
    poll_s: float = Field(default=1.0, gt=0, validation_alias="VOC_CALLBACK_POLL_S")

    def policy(self) -> netguard.Policy:
        """The SSRF guard's allow-lists."""
        return netguard.Policy.parse(self.allow_hosts, self.allow_ports)


def encode_body(payloads: Sequence[Mapping[str, Any]]) -> bytes:
    """One event as a JSON object, several as a JSON array."""
    return orjson.dumps(payloads[0] if len(payloads) == 1 else list(payloads))


# -- retry policy ---------------------------------------------------------------------------


def _event_of(row: Mapping[str, Any]) -> str:
    return str(row["id"]).rsplit(":", 1)[-1]


def group_by_target(
    rows: Sequence[Mapping[str, Any]], max_batch: int
) -> list[list[Mapping[str, Any]]]:
    """Due rows grouped per (tenant, URL), in order of first appearance, each group at
    most `max_batch` rows, a job's report_ready before its completed. Tenants never
    share a request: each is signed with its own tenant's secrets."""
    per_target: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row.get("tenant_id") or ""), str(row["url"]))
        per_target.setdefault(key, []).append(row)
    groups: list[list[Mapping[str, Any]]] = []
    for items in per_target.values():
        items.sort(key=lambda r: _EVENT_RANK.get(_event_of(r), len(_EVENT_RANK)))
        groups.extend(items[i : i + max_batch] for i in range(0, len(items), max_batch))
    return groups


def after_success(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The outbox row once delivered."""
    return {**row, "attempts": int(row["attempts"]) + 1, "delivered_at": now, "last_error": None}


def after_failure(
    row: Mapping[str, Any], error: str, now: datetime, settings: CallbackSettings
) -> dict[str, Any]:
    """The outbox row after a failed try: backoff, or failed for good at the limit."""
    attempts = int(row["attempts"]) + 1
    if attempts >= settings.max_attempts:
        error = f"gave up after {attempts} attempts: {error}"
    delay = capped_exponential(attempts, settings.backoff_base_s, settings.backoff_max_s)
    return {
        **row,
        "attempts": attempts,
        "next_attempt_at": now + timedelta(seconds=delay),
        "last_error": error[:2000],
    }


def after_refusal(
    row: Mapping[str, Any], reason: str, now: datetime, settings: CallbackSettings
) -> dict[str, Any]:
    """The outbox row of a refused callback: failed for good, with the reason, never sent."""
    return {
        **row,
        "attempts": max(int(row["attempts"]), settings.max_attempts),
        "next_attempt_at": now,
        "last_error": f"refused: {reason}"[:2000],
    }


# -- one delivery ---------------------------------------------------------------------------

TransportFactory = Callable[[netguard.Target], httpx.AsyncBaseTransport]


class CallbackSender:
    """Delivers one group of outbox rows (see the module docstring) and returns them with
    their outcome; never raises for anything a receiver or its DNS does."""

    def __init__(
        self,
        settings: CallbackSettings,
        *,
        resolver: netguard.Resolver | None = None,
        transport: TransportFactory | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self._own_resolver = netguard.SystemResolver(settings.concurrency)
        self.resolver = resolver or self._own_resolver
        self._ssl_context = ssl_context
        self.transport = transport or self._pinned
        self.clock = clock or _utcnow

    def _pinned(self, target: netguard.Target) -> httpx.AsyncBaseTransport:
        if self._ssl_context is None:  # made once, when first needed (it loads the CA store)
            self._ssl_context = ssl.create_default_context()
        return netguard.PinnedTransport(target, self._ssl_context)

    async def close(self) -> None:
        """Stop the resolver's threads."""
        self._own_resolver.close()

    async def deliver_group(
        self, group: Sequence[Mapping[str, Any]], secrets: Sequence[bytes]
    ) -> list[dict[str, Any]]:
        """POST one group (one tenant, one URL) signed with `secrets`; the updated rows."""
        url = str(group[0]["url"])
        origin = _origin_of(url)
        s = self.settings
        try:
            async with asyncio.timeout(s.deadline_s):
                target = await netguard.vet(url, self.policy, self.resolver)
                origin = target.origin
                if not secrets:
                    return self._failed(
                        group,
                        origin,
                        f"tenant {group[0].get('tenant_id')} has no callback signing secret "
                        "(create one with POST /v1/callback-secret)",
                    )
                body = encode_body([r["payload"] for r in group])
                status = await self._post(target, body, signed_headers(secrets, body))
        except netguard.UrlRefused as exc:
            log.warning("callback refused", extra={"target": origin, "reason": str(exc)})
            now = self.clock()
            return [after_refusal(r, str(exc), now, s) for r in group]
        except TimeoutError:
            return self._failed(
                group,
                origin,
                f"deadline of {s.deadline_s:g}s exceeded (DNS, connect, send "
                "and response together)",
            )
        except OSError as exc:  # the resolver: may be transient
            return self._failed(group, origin, f"resolve failed: {exc}")
        except Exception as exc:
            # Whatever else the receiver provoked (protocol errors, TLS, resets): its own
            # rows record it; no other delivery, and no report, is affected.
            return self._failed(group, origin, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            log.info("callback delivered", extra={"target": origin, "events": len(group)})
            now = self.clock()
            return [after_success(r, now) for r in group]
        if 300 <= status < 400:
            return self._failed(group, origin, f"HTTP {status} (redirects are not followed)")
        return self._failed(group, origin, f"HTTP {status}")

    async def _post(self, target: netguard.Target, body: bytes, headers: dict[str, str]) -> int:
        """The response status; at most `max_response_bytes` of the body are read."""
        async with (
            httpx.AsyncClient(
                transport=self.transport(target),
                timeout=httpx.Timeout(self.settings.timeout_s),
                follow_redirects=False,
                trust_env=False,  # an HTTP(S)_PROXY from the environment would bypass the pin
            ) as client,
            client.stream("POST", target.url, content=body, headers=headers) as response,
        ):
            limit = self.settings.max_response_bytes
            read = 0
            # (A transport may hand over a response it has read already: nothing to read.)
            if limit and not response.is_stream_consumed:
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= limit:
                        break  # the rest is never read: closing drops the connection
            return response.status_code

    def _failed(
        self, group: Sequence[Mapping[str, Any]], origin: str, error: str
    ) -> list[dict[str, Any]]:
        log.warning("callback failed", extra={"target": origin, "error": error})
        now = self.clock()
        return [after_failure(r, error, now, self.settings) for r in group]


# -- the delivery loop ----------------------------------------------------------------------


class Outbox(Protocol):
    """Port: the outbox rows and the signing secrets the deliverer needs."""

    async def due(
        self, max_attempts: int, limit: int, busy: Collection[str]
    ) -> list[dict[str, Any]]:
        """Outbox rows due now (with their job's `tenant_id`), except the `busy` ids."""
        ...

    async def secret_ids(self, tenants: Collection[str]) -> dict[str, list[str]]:
        """Each tenant's current signing secret ids, newest first."""
        ...

    async def save(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store the rows' new delivery state."""
        ...


class Leader(Protocol):
    """Port: whether this replica is the one delivering callbacks."""

    async def check(self) -> bool:
        """True while this process holds the role (`shared.db.leader.AdvisoryLeader`)."""
        ...

    async def close(self) -> None:
        """Give the role up."""
        ...


Q_DUE = """
SELECT o.id, o.job_id, o.url, o.payload, o.attempts, o.next_attempt_at, o.delivered_at,
       o.last_error, j.tenant_id
FROM callback_outbox o LEFT JOIN jobs j ON j.id = o.job_id
WHERE o.delivered_at IS NULL AND o.attempts < %(max_attempts)s AND o.next_attempt_at <= now()
  AND o.id <> ALL(%(busy)s)
  AND j.status IS DISTINCT FROM 'deleted'  -- a deleted job's rows wait for the sweep's purge
ORDER BY o.next_attempt_at, o.id
LIMIT %(limit)s
"""

Q_SECRETS = """
SELECT tenant_id, id FROM callback_secrets
WHERE tenant_id = ANY(%(tenants)s) AND (expires_at IS NULL OR expires_at > now())
ORDER BY tenant_id, created_at DESC, id
"""


class PgOutbox:
    """`Outbox` on the report stage's connection pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            try:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(sql, params)
                    return list(await cur.fetchall())
            finally:
                await conn.rollback()  # release the snapshot: the pool hands it on as is

    async def due(
        self, max_attempts: int, limit: int, busy: Collection[str]
    ) -> list[dict[str, Any]]:
        """See `Outbox.due`."""
        params = {"max_attempts": max_attempts, "limit": limit, "busy": sorted(busy)}
        return await self._rows(Q_DUE, params)

    async def secret_ids(self, tenants: Collection[str]) -> dict[str, list[str]]:
        """See `Outbox.secret_ids`."""
        if not tenants:
            return {}
        out: dict[str, list[str]] = {}
        for r in await self._rows(Q_SECRETS, {"tenants": sorted(tenants)}):
            out.setdefault(r["tenant_id"], []).append(r["id"])
        return out

    async def save(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """One transaction for the rows of one delivery."""
        state = ("id", "attempts", "next_attempt_at", "delivered_at", "last_error")
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(Q_SAVE, [{k: r[k] for k in state} for r in rows])
            await conn.commit()


class CallbackDeliverer:
    """The delivery loop: every `poll_s`, start a task per due (tenant, URL) group, up to
    `concurrency` at once; each saves its own rows when it ends. Rows in flight are not
    taken again; a slow receiver holds one slot for at most its deadline."""

    def __init__(
        self,
        sender: CallbackSender,
        outbox: Outbox,
        signing_key: bytes | None,
        settings: CallbackSettings,
        *,
        leader: Leader | None = None,
    ) -> None:
        self.sender = sender
        self.outbox = outbox
        self.signing_key = signing_key
        self.settings = settings
        self.leader = leader
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the loop in the background until `close`."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="callback-deliverer")

    async def close(self) -> None:
        """Stop the loop; deliveries still running are cancelled (their rows stay due and
        go out again later), then the sender and the leader role are released."""
        self._stopping.set()
        if self._loop is not None:
            await self._loop
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.close()
        if self.leader is not None:
            await self.leader.close()

    async def wait_idle(self) -> None:
        """Wait for the deliveries started so far (tests, and an orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.pass_once()
            except Exception:
                # Postgres or the lock connection failing: the next pass tries again.
                log.exception("callback delivery pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_s)

    async def pass_once(self) -> int:
        """Start deliveries for the due rows (if this replica delivers); how many."""
        s = self.settings
        free = s.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        if self.leader is not None and not await self.leader.check():
            return 0
        due = await self.outbox.due(s.max_attempts, free * s.max_batch, self._busy)
        groups = group_by_target(due, s.max_batch)[:free]
        if not groups:
            return 0
        tenants = {str(g[0]["tenant_id"]) for g in groups if g[0].get("tenant_id")}
        ids = await self.outbox.secret_ids(tenants)
        for group in groups:
            tenant = str(group[0].get("tenant_id") or "")
            task = asyncio.create_task(self._deliver(group, self._secrets(tenant, ids)))
            self._busy.update(str(r["id"]) for r in group)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(groups)

    def _secrets(self, tenant: str, ids: Mapping[str, Sequence[str]]) -> list[bytes]:
        if self.signing_key is None or not tenant:
            return []
        return [
            derive_secret(self.signing_key, tenant, secret_id).encode()
            for secret_id in ids.get(tenant, ())[:MAX_SECRETS_PER_TENANT]
        ]

    async def _deliver(self, group: Sequence[Mapping[str, Any]], secrets: list[bytes]) -> None:
        try:
            if self.signing_key is None:
                now = _utcnow()
                rows = [
                    after_refusal(r, "VOC_CALLBACK_SECRET is not set", now, self.settings)
                    for r in group
                ]
            elif not group[0].get("tenant_id"):
                now = _utcnow()
                rows = [
                    after_refusal(r, "the job no longer exists", now, self.settings) for r in group
                ]
            else:
                rows = await self.sender.deliver_group(group, secrets)
            await self.outbox.save(rows)
            metrics.observe_callbacks(rows, self.settings.max_attempts)
        except Exception:
            # Saving failed (Postgres): the rows stay due and are delivered again later.
            log.exception("saving callback outcomes failed", extra={"events": len(group)})
        finally:
            self._busy.difference_update(str(r["id"]) for r in group)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _origin_of(url: str) -> str:
    """`scheme://host:port` of a URL for logs (never its path, query or credentials)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"
    except ValueError:
        return "<not a URL>"
