"""What other processes changed, heard over Redis pub/sub: revoked API keys and changed jobs.

One subscription per API replica, to two channels:
- `shared.auth.KEYS_CHANGED_CHANNEL`: a revoked or rotated key's hash, dropped from the
  `KeyCache` (`voc keys revoke|rotate` publishes it);
- `shared.jobstatus.STATUS_CHANGED_CHANNEL`: a job's status cache key, dropped from the
  `StatusCache`'s memory (`forget_status` publishes it, wherever the job changed).

Whenever the subscription is (re)established both caches are dropped, since messages may
have been missed meanwhile. While it is down the status cache's memory layer is off (every
read asks Redis) and the key cache relies on its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.auth import KEYS_CHANGED_CHANNEL
from shared.jobstatus import STATUS_CHANGED_CHANNEL

from . import metrics
from .auth import KeyCache
from .cache import StatusCache

log = logging.getLogger(__name__)


class Invalidations:
    """Keeps the key cache and the status cache's memory in step with other processes."""

    def __init__(
        self, redis: Redis, keys: KeyCache, status: StatusCache, retry_s: float = 1.0
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.status = status
        self.retry_s = retry_s
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._run(), name="api-invalidations")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.status.local_off()

    def _on_message(self, channel: str, data: str) -> None:
        if channel == KEYS_CHANGED_CHANNEL:
            self.keys.forget(data)
            metrics.KEY_CHANGES.inc()
        elif channel == STATUS_CHANGED_CHANNEL:
            self.status.forget_local(data)

    async def _run(self) -> None:
        warned = False
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(KEYS_CHANGED_CHANNEL, STATUS_CHANGED_CHANNEL)
                    # Whatever changed while we were not listening.
                    self.keys.clear()
                    self.status.local_on()
                    self.subscribed.set()
                    if warned:
                        log.info("invalidation subscription restored")
                        warned = False
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            self._on_message(_text(message["channel"]), _text(message["data"]))
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                self.status.local_off()
                if not warned:
                    log.warning(
                        "invalidation subscription lost: status reads go to Redis, "
                        "keys rely on the key cache TTL",
                        extra={"error": type(exc).__name__},
                    )
                    warned = True
                await asyncio.sleep(self.retry_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
