"""Job callbacks: signed POSTs of `job.report_ready` / `job.completed` to a job's URL.

The report stage writes a `callback_outbox` row (id `job_id:status`) in the same
transaction as the report, so a callback is never lost nor announced for a report that
does not exist. The stage's tick then delivers due rows:

- events due for the same URL go in one POST (a JSON array; a single event is sent as an
  object);
- the body is signed with HMAC-SHA256 over `timestamp + "." + body`
  (`X-Voc-Timestamp`, `X-Voc-Signature: v1=<hex>`), so a receiver can check origin and
  reject replays older than a few minutes (`verify_signature`);
- failures are retried with exponential backoff (`attempts`, `next_attempt_at`,
  `last_error`) up to `max_attempts`, then left as failed;
- SSRF guard: the URL's host is resolved and every address must be public; private,
  loopback, link-local, multicast, reserved and other non-global addresses are refused
  unless `VOC_CALLBACK_ALLOW_HOSTS` names the host or a CIDR containing the address. A
  refused callback is recorded as failed with the reason and never sent.

Delivery is at-least-once (a crash between the POST and the outbox update re-sends), so
receivers should dedupe on (`job_id`, `event`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

SIGNATURE_VERSION = "v1"
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


class CallbackSettings(BaseSettings):
    """Callback signing, SSRF allow-list, timeouts and retry policy."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    secret: SecretStr | None = Field(default=None, validation_alias="VOC_CALLBACK_SECRET")
    allow_hosts: str = Field(default="", validation_alias="VOC_CALLBACK_ALLOW_HOSTS")
    timeout_s: float = Field(default=5.0, gt=0, validation_alias="VOC_CALLBACK_TIMEOUT_S")
    max_attempts: int = Field(default=8, ge=1, validation_alias="VOC_CALLBACK_MAX_ATTEMPTS")
    backoff_base_s: float = Field(default=2.0, ge=0, validation_alias="VOC_CALLBACK_BACKOFF_S")
    backoff_max_s: float = Field(default=600.0, ge=0, validation_alias="VOC_CALLBACK_BACKOFF_MAX_S")
    max_batch: int = Field(default=50, ge=1, validation_alias="VOC_CALLBACK_MAX_BATCH")


class CallbackRefused(Exception):
    """The callback URL may not be called (SSRF guard or bad URL); never retried."""


# -- signing --------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 of `timestamp + "." + body` with `secret`."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    if age > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def encode_body(payloads: Sequence[Mapping[str, Any]]) -> bytes:
    """One event as a JSON object, several as a JSON array."""
    return orjson.dumps(payloads[0] if len(payloads) == 1 else list(payloads))


def signed_headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The request headers carrying the timestamp and the signature."""
    ts = str(int(time.time() if now is None else now))
    return {
        "content-type": "application/json",
        "user-agent": "vocstream-callbacks/1",
        "x-voc-timestamp": ts,
        "x-voc-signature": sign(secret, ts, body),
    }


# -- SSRF guard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Hosts (exact names) and networks that may be called despite the SSRF guard."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> AllowList:
        """From `VOC_CALLBACK_ALLOW_HOSTS`: comma-separated host names, IPs or CIDRs."""
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        for item in (x.strip() for x in raw.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(nets))

    def allows_host(self, host: str) -> bool:
        """The host name itself is allow-listed."""
        return host.lower().rstrip(".") in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        """The address lies in an allow-listed network."""
        return any(ip.version == n.version and ip in n for n in self.networks)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be called (None if it is a public, global address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden_reason(ip.ipv4_mapped)
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_unspecified", "unspecified"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return label
    if not ip.is_global:
        return "not globally routable"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the OS resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_url(url: str, allow: AllowList, resolver: Resolver = system_resolver) -> None:
    """Raise `CallbackRefused` unless `url` is http(s) and every address it has is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused(f"scheme {parts.scheme!r} not allowed (http or https only)")
    host = parts.hostname
    if not host:
        raise CallbackRefused("URL has no host")
    if parts.username or parts.password:
        raise CallbackRefused("credentials in the URL are not allowed")
    if allow.allows_host(host):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CallbackRefused(f"bad port: {exc}") from None
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal is not None else await resolver(host, port)
    if not addresses:
        raise CallbackRefused(f"{host} resolves to no address")
    for raw in addresses:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])  # drop an IPv6 zone id
        reason = forbidden_reason(ip)
        if reason is not None and not allow.allows_ip(ip):
            raise CallbackRefused(
                f"{host} resolves to {ip}, a {reason} address (not in VOC_CALLBACK_ALLOW_HOSTS)"
            )


# -- retry policy ---------------------------------------------------------------------------


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before the next try after `attempts` failed ones: base * 2^(attempts-1), capped."""
    return float(min(max_s, base_s * (2 ** max(0, attempts - 1))))


def group_by_url(
    rows: Sequence[Mapping[str, Any]], max_batch: int
) -> list[list[Mapping[str, Any]]]:
    """Due rows grouped per URL (in order), each group at most `max_batch` rows."""
    per_url: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        per_url.setdefault(str(row["url"]), []).append(row)
    groups: list[list[Mapping[str, Any]]] = []
    for items in per_url.values():
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
    delay = backoff_s(attempts, settings.backoff_base_s, settings.backoff_max_s)
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


# -- delivery -------------------------------------------------------------------------------


class CallbackSender:
    """Delivers due outbox rows over HTTP; returns the rows to upsert with their outcome."""

    def __init__(
        self,
        settings: CallbackSettings,
        *,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] | None = None,
        concurrency: int = 8,
    ) -> None:
        self.settings = settings
        self.allow = AllowList.parse(settings.allow_hosts)
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s), follow_redirects=False
        )
        self.resolver = resolver
        self.clock = clock or _utcnow
        self._sem = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """POST every due row (batched per URL); the updated rows, ready to upsert."""
        groups = group_by_url(rows, self.settings.max_batch)
        results = await asyncio.gather(*(self._deliver_group(g) for g in groups))
        return [row for group in results for row in group]

    async def _deliver_group(self, group: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        url = str(group[0]["url"])
        async with self._sem:
            try:
                await check_url(url, self.allow, self.resolver)
            except CallbackRefused as exc:
                now = self.clock()
                log.warning("callback refused", extra={"url": url, "reason": str(exc)})
                return [after_refusal(r, str(exc), now, self.settings) for r in group]
            except OSError as exc:  # DNS failure: may be transient, retry later
                now = self.clock()
                return [
                    after_failure(r, f"resolve failed: {exc}", now, self.settings) for r in group
                ]
            secret = self.settings.secret
            if secret is None:
                now = self.clock()
                return [
                    after_refusal(r, "VOC_CALLBACK_SECRET is not set", now, self.settings)
                    for r in group
                ]
            body = encode_body([r["payload"] for r in group])
            headers = signed_headers(secret.get_secret_value().encode(), body)
            error: str | None
            try:
                resp = await self.client.post(url, content=body, headers=headers)
                error = None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            now = self.clock()
            if error is None:
                log.info("callback delivered", extra={"url": url, "events": len(group)})
                return [after_success(r, now) for r in group]
            log.warning("callback failed", extra={"url": url, "error": error})
            return [after_failure(r, error, now, self.settings) for r in group]


def _utcnow() -> datetime:
    return datetime.now(UTC)
