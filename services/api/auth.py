"""API-key authentication: a Bearer key resolves to exactly one tenant.

Keys are looked up by their SHA-256 (`shared.auth.hash_key`) in `api_keys`, revoked keys
excluded. Answers are kept in-process (`KeyCache`) so a busy client costs no database
round trip per request; the key itself is never stored or logged.

- Known keys and unknown keys live in two bounded LRUs: a flood of random keys evicts
  only other random keys, never a tenant's cached key (and never costs more memory).
- A key due to be revoked later (`voc keys rotate --grace`) is cached no longer than it
  stays valid.
- `KeyChanges` listens on Redis pub/sub (`shared.auth.KEYS_CHANGED_CHANNEL`): a revoked
  or rotated key is dropped from every replica's cache at once. Whenever the
  subscription is (re)established the whole cache is dropped, since messages may have
  been missed meanwhile; the cache TTL bounds what a missed message can cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.auth import KEYS_CHANGED_CHANNEL
from shared.lru import LRU

from . import metrics

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 256  # real keys are ~50; longer tokens are refused before hashing


@dataclass(frozen=True, slots=True)
class Tenant:
    """The authenticated caller: its tenant and the hash of the key it used."""

    id: str
    key_hash: str


class KeyCache:
    """key hash -> tenant id, or None for a key known to be invalid, each for `ttl_s`."""

    def __init__(
        self, ttl_s: float = 30.0, max_entries: int = 10_000, max_unknown: int = 10_000
    ) -> None:
        self.ttl_s = ttl_s
        self._known: LRU[str, str] = LRU(max_entries, ttl_s)
        self._unknown: LRU[str, None] = LRU(max_unknown, ttl_s)

    def get(self, key_hash: str) -> tuple[bool, str | None]:
        """`(hit, tenant_id)`; a hit with `None` means the key is known to be invalid."""
        hit, tenant = self._known.lookup(key_hash)
        if hit:
            return True, tenant
        hit, _ = self._unknown.lookup(key_hash)
        return hit, None

    def put(self, key_hash: str, tenant_id: str | None, valid_for_s: float | None = None) -> None:
        """Remember a lookup result (a key revoked in `valid_for_s` is kept no longer)."""
        if tenant_id is None:
            self._unknown.put(key_hash, None)
        else:
            self._unknown.pop(key_hash)
            self._known.put(key_hash, tenant_id, valid_for_s)

    def forget(self, key_hash: str) -> None:
        """Drop what is known about one key (it was revoked or rotated)."""
        self._known.pop(key_hash)
        self._unknown.pop(key_hash)

    def clear(self) -> None:
        """Drop everything."""
        self._known.clear()
        self._unknown.clear()


class KeyChanges:
    """Keeps a `KeyCache` in step with key revocations published by any process."""

    def __init__(self, redis: Redis, cache: KeyCache, retry_s: float = 1.0) -> None:
        self.redis = redis
        self.cache = cache
        self.retry_s = retry_s
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._run(), name="api-key-changes")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        warned = False
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(KEYS_CHANGED_CHANNEL)
                    self.cache.clear()  # whatever changed while we were not listening
                    self.subscribed.set()
                    if warned:
                        log.info("key change subscription restored")
                        warned = False
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            key_hash = data.decode() if isinstance(data, bytes) else str(data)
                            self.cache.forget(key_hash)
                            metrics.KEY_CHANGES.inc()
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                if not warned:
                    log.warning(
                        "key change subscription lost, relying on the key cache TTL",
                        extra={"error": type(exc).__name__},
                    )
                    warned = True
                await asyncio.sleep(self.retry_s)
