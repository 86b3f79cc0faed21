"""A Lua script run in Redis for every replica, and what to do while Redis is unreachable.

The LLM quota (`ratelimit.py`) and the concurrency cap (`concurrency.py`) each keep their
shared state in one Redis script. When a call of it fails (Redis down, slow, refusing),
`run` returns None and the caller applies its local fallback; Redis is tried again once
`PROBE_INTERVAL_S` has passed, so an outage costs one timeout per second, not one per
call. Going down and coming back are logged once each and shown on a gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import Any

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0


class SharedScript:
    """One Lua file of `shared.llm`, run under a gate of concurrent Redis calls."""

    def __init__(
        self,
        redis: Redis | None,
        lua_file: str,
        *,
        gate: asyncio.Semaphore,
        timeout_s: float,
        what: str,
        fallback: str,
        resumed: str,
        gauge: Gauge | None,
    ) -> None:
        self._redis = redis
        self._lua_file = lua_file
        # Bounds this process's concurrent Redis calls: hundreds of callers must queue here,
        # not exhaust the client's connection pool (MaxConnectionsError).
        self._gate = gate
        self._timeout_s = timeout_s
        self._what = what  # "llm limiter": the start of the log lines
        self._fallback = fallback  # what the caller does meanwhile, for the log
        self._resumed = resumed
        self._gauge = gauge
        self._script: Any = None
        self._down = False
        self._down_until = 0.0

    @property
    def down(self) -> bool:
        """True while callers run on their local fallback."""
        return self._down

    async def run(self, keys: list[str], args: list[Any]) -> list[int] | None:
        """The script's answer; None while Redis is unreachable (apply the fallback)."""
        if self._redis is None:
            return None
        if self._down and time.monotonic() < self._down_until:
            return None
        if self._script is None:
            text = resources.files("shared.llm").joinpath(self._lua_file).read_text()
            self._script = self._redis.register_script(text)
        try:
            async with self._gate:
                result = await asyncio.wait_for(self._script(keys=keys, args=args), self._timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + PROBE_INTERVAL_S
            if not self._down:
                self._down = True
                log.warning(
                    "%s: Redis unreachable (%s); %s until it is back",
                    self._what,
                    type(exc).__name__,
                    self._fallback,
                )
                if self._gauge is not None:
                    self._gauge.set(1)
            return None
        if self._down:
            self._down = False
            log.info("%s: Redis is back; %s", self._what, self._resumed)
            if self._gauge is not None:
                self._gauge.set(0)
        return [int(x) for x in result]
