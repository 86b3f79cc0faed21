"""Riding through infrastructure faults: wait while it is down, give up on what keeps failing.

Work of a batch that fails with an infrastructure error (Postgres, Kafka, Redis, the
network: `INFRA_ERRORS`) is tried again with capped, jittered backoff, so a stage never
exits on a transient error and never busy-loops. After each failure an `InfraProbe` asks
the component itself whether it works:

- it does not (the broker, Postgres or Redis is down): the stage keeps waiting, however
  long the outage lasts, and reports not-ready on `/ready` meanwhile;
- it does: then it is this work that keeps failing (a record too large for the broker, a
  statement that always fails). That counts as a try, and after `max_tries` tries
  `KeepsFailing` is raised; the runner then isolates the record and dead-letters it with
  the reason, so one record never stalls its partition.

A Kafka outage mostly does not raise at all (the idempotent producer and the commit wait
for the broker to come back), so `InfraProbe.watch` also probes every few seconds and
keeps `/ready` honest while nothing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.metrics import Health
from shared.stage.observer import StageObserver

log = logging.getLogger(__name__)

T = TypeVar("T")

INFRA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    KafkaError,
    OSError,  # with TimeoutError
    RedisConnectionError,
    RedisTimeoutError,
)
# what a probe's own check may raise
_PROBE_ERRORS: tuple[type[BaseException], ...] = (*INFRA_ERRORS, psycopg.Error)
POSTGRES, KAFKA, REDIS, IO = "postgres", "kafka", "redis", "io"


def component_of(exc: BaseException) -> str:
    """Which part of the infrastructure an infrastructure error comes from."""
    if isinstance(exc, psycopg.Error):
        return POSTGRES
    if isinstance(exc, KafkaError):
        return KAFKA
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return REDIS
    return IO


def short(exc: BaseException) -> str:
    """`Type: message`, bounded, for logs and reasons."""
    return f"{type(exc).__name__}: {exc}"[:2000]


class KeepsFailing(Exception):
    """Work failed `tries` times with `error` while the infrastructure worked."""

    def __init__(self, error: BaseException, tries: int) -> None:
        super().__init__(
            f"{short(error)} (failed {tries} times while {component_of(error)} worked)"
        )
        self.error = error
        self.tries = tries


class InfraProbe:
    """Answers "does Postgres / Kafka work right now?", for one process.

    One short-lived check per component at a time, remembered for `memo_s`, so a burst of
    failing batches costs one probe. Every check is bounded by `timeout_s`. Redis has no
    probe here (the stages' LLM layer owns its connection): a Redis error always counts
    as Redis being down.
    """

    def __init__(
        self,
        db_url: str,
        bootstrap_servers: str,
        health: Health,
        *,
        timeout_s: float = 3.0,
        memo_s: float = 1.0,
    ) -> None:
        self.db_url = db_url
        self.bootstrap_servers = bootstrap_servers
        self.health = health
        self.timeout_s = timeout_s
        self.memo_s = memo_s
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._kafka: AIOKafkaClient | None = None
        self._last: dict[str, tuple[float, bool]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def works(self, component: str) -> bool:
        """Whether `component` works now (`io`: Postgres and Kafka both do)."""
        if component == IO:
            return await self.works(POSTGRES) and await self.works(KAFKA)
        if component not in (POSTGRES, KAFKA):
            return False
        lock = self._locks.setdefault(component, asyncio.Lock())
        async with lock:
            seen = self._last.get(component)
            if seen is not None and time.monotonic() - seen[0] < self.memo_s:
                return seen[1]
            try:
                async with asyncio.timeout(self.timeout_s):
                    await (self._postgres() if component == POSTGRES else self._broker())
                ok, why = True, ""
            except _PROBE_ERRORS as exc:
                ok, why = False, short(exc)
                await self._forget(component)
            self._last[component] = (time.monotonic(), ok)
            if ok:
                self.health.up(component)
            else:
                self.health.down(component, why)
            return ok

    async def watch(self, interval_s: float = 5.0) -> None:
        """Probe Postgres and Kafka every `interval_s` until cancelled (keeps `/ready` true)."""
        while True:
            await self.works(POSTGRES)
            await self.works(KAFKA)
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        """Close the probe connections."""
        await self._forget(POSTGRES)
        await self._forget(KAFKA)

    async def _postgres(self) -> None:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = await psycopg.AsyncConnection.connect(
                self.db_url, autocommit=True, connect_timeout=max(1, int(self.timeout_s))
            )
        await self._pg.execute("SELECT 1")

    async def _broker(self) -> None:
        if self._kafka is None:
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, client_id="voc-probe")
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._kafka = client
        await self._kafka.fetch_all_metadata()

    async def _forget(self, component: str) -> None:
        if component == POSTGRES and self._pg is not None:
            conn, self._pg = self._pg, None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        if component == KAFKA and self._kafka is not None:
            client, self._kafka = self._kafka, None
            with contextlib.suppress(KafkaError, OSError):
                await client.close()


class Faults:
    """Runs one step of a batch through infrastructure faults (see the module docstring)."""

    def __init__(
        self,
        stage: str,
        probe: Callable[[str], Awaitable[bool]],
        health: Health,
        observer: StageObserver,
        *,
        max_tries: int,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.stage = stage
        self.probe = probe
        self.health = health
        self.observer = observer
        self.max_tries = max_tries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    async def run(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        """`await fn()` until it succeeds; `KeepsFailing` after `max_tries` failures of it
        while the infrastructure worked. Waits without limit while it is down."""
        delay = self.backoff_base_s
        tries = 0
        failed: set[str] = set()
        while True:
            try:
                result = await fn()
            except INFRA_ERRORS as exc:
                component = component_of(exc)
                failed.add(component)
                self.observer.on_infra_fault(component)
                if await self.probe(component):
                    tries += 1
                    if tries >= self.max_tries:
                        raise KeepsFailing(exc, tries) from exc
                log.warning(
                    f"{what} failed, retrying",
                    extra={
                        "stage": self.stage,
                        "component": component,
                        "error": short(exc),
                        "tries": tries,
                        "retry_in_s": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
            else:
                for component in failed:  # it works again: ready at once, not at next probe
                    for c in (POSTGRES, KAFKA) if component == IO else (component,):
                        self.health.up(c)
                return result
