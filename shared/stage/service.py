"""Process start-up of a stage: logging, metrics, wiring, signals, run until SIGTERM.

`main(name, build, ...)` is what every `services/<stage>/__main__.py` calls. It opens the
Postgres pool (waiting for Postgres if it is down), builds the handler, and runs one
`StageRunner` on the input topic plus one per retry tier (and, for the LLM stages, one on
the overflow lane of `shared.stage.fair`), sharing one `Health` (served on
`VOC_METRICS_PORT` with `/metrics`) and one `InfraProbe`. SIGTERM or SIGINT stops every
runner (see `StageRunner.stop`: bounded in time, so a hung LLM call never holds the
process), then the handler and the pool are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from shared import metrics as m
from shared.db.pool import ConnectionPool
from shared.logging import setup_logging
from shared.settings import CommonSettings
from shared.stage.contract import StageHandler
from shared.stage.deadletters import parse_delays
from shared.stage.deleted import DeletedJobs, SkipDeletedJobs
from shared.stage.fair import JobShares, ShareJobs
from shared.stage.faults import POSTGRES, InfraProbe, short
from shared.stage.observer import PrometheusObserver
from shared.stage.runner import StageRunner
from shared.topics import RETRY_TIERS, overflow_topic

log = logging.getLogger(__name__)

Build = Callable[[CommonSettings, ConnectionPool], Awaitable[StageHandler]]


async def run_service(
    name: str,
    build: Build,
    *,
    max_records: int = 200,
    max_inflight: int = 1,
    settings: CommonSettings | None = None,
    retries: bool = True,
    overflow: bool = False,
) -> None:
    """Run a stage process until SIGTERM (see the module docstring).

    Besides the input topic's runner, one runner per retry tier consumes the stage's retry
    topics (`retries=False` for a stage that never reports a retryable error), and with
    `overflow` one more its overflow lane (`shared.stage.fair`).
    """
    settings = settings or CommonSettings()
    rt = settings.runtime
    setup_logging(name, rt.log_level)
    health = m.serve_metrics(rt.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tiers = min(len(parse_delays(rt.retry_delays_s)), RETRY_TIERS) if retries else 0
    probe = InfraProbe(settings.db.libpq_url(), settings.kafka.bootstrap_servers, health)
    watch = asyncio.create_task(probe.watch(rt.probe_interval_s))
    lane_inflight = rt.overflow_max_inflight if overflow else 0
    size = max(2, max_inflight + 1 + tiers + lane_inflight)
    pool: ConnectionPool | None = None
    runners: list[StageRunner] = []
    handler: StageHandler | None = None
    try:
        pool = await _open_pool(settings.db.libpq_url(), size, health, stopping)
        if pool is None:
            return
        # Records of deleted jobs never reach a stage's handler (see shared.stage.deleted).
        handler = SkipDeletedJobs(await build(settings, pool), DeletedJobs(pool))
        observer = PrometheusObserver(name)

        def runner(h: StageHandler, **lane: Any) -> StageRunner:
            return StageRunner(
                h,
                settings,
                pool,
                max_records=max_records,
                health=health,
                observer=observer,
                probe=probe.works,
                **lane,
            )

        if overflow:
            # Every lane counts its jobs' reviews; only the input topic's defers.
            shares = JobShares(rt.job_share_reviews, rt.job_free_reviews)
            lane_topic = overflow_topic(name).full_name(settings.kafka.topic_prefix)
            counted = ShareJobs(handler, shares, None)
            runners = [
                runner(ShareJobs(handler, shares, lane_topic), max_inflight=max_inflight),
                runner(counted, max_inflight=lane_inflight, overflow=True),
                *(runner(counted, max_inflight=1, retry_tier=t) for t in range(1, tiers + 1)),
            ]
        else:
            runners = [
                runner(handler, max_inflight=max_inflight if t == 0 else 1, retry_tier=t)
                for t in range(tiers + 1)
            ]
        await _until_stopped(runners, stopping)
    finally:
        await asyncio.gather(*(r.stop() for r in runners))
        if handler is not None:
            closer = getattr(handler, "close", None)
            if closer is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closer(), rt.shutdown_grace_s)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await probe.close()
        if pool is not None:
            await pool.close()
        log.info("stage stopped", extra={"stage": name})


async def _open_pool(
    url: str, size: int, health: m.Health, stopping: asyncio.Event
) -> ConnectionPool | None:
    """An open pool, waiting (capped backoff) while Postgres is down; None if stopped."""
    delay = 0.5
    while not stopping.is_set():
        pool = ConnectionPool(url, size=size)
        try:
            await pool.open()
            health.up(POSTGRES)
            return pool
        except (psycopg.OperationalError, OSError) as exc:
            health.down(POSTGRES, short(exc))
            await pool.close()
            log.warning(
                "cannot reach Postgres, retrying", extra={"error": short(exc), "retry_in_s": delay}
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, 10.0)
    return None


async def _until_stopped(runners: list[StageRunner], stopping: asyncio.Event) -> None:
    """Start and run every runner until `stopping` is set or one of them fails."""

    def stop_all() -> None:
        for r in runners:
            r.stopping.set()

    relay: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    relay.add_done_callback(lambda _: stop_all())
    try:
        starts: asyncio.Future[Any] = asyncio.gather(*(r.start() for r in runners))
        first, _ = await asyncio.wait({starts, relay}, return_when=asyncio.FIRST_COMPLETED)
        if relay in first:
            starts.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starts
            return
        await starts
        tasks = [asyncio.create_task(r.run()) for r in runners]
        # The first runner to return either saw the stop signal or failed: stop the rest.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
    finally:
        relay.cancel()


def main(
    name: str,
    build: Build,
    *,
    max_records: int,
    max_inflight: int,
    retries: bool = True,
    overflow: bool = False,
) -> None:
    """Run a stage process on uvloop until SIGTERM: what every `services/<stage>/__main__`
    calls with its build function and its batch settings. Exits 0 after a clean stop, 1
    if a runner failed."""
    import uvloop

    code = 0
    try:
        uvloop.run(
            run_service(
                name,
                build,
                max_records=max_records,
                max_inflight=max_inflight,
                settings=CommonSettings(),
                retries=retries,
                overflow=overflow,
            )
        )
    except Exception:
        log.exception("stage failed", extra={"stage": name})
        code = 1
    logging.shutdown()
    # Everything is released by now (offsets committed, group left, connections closed).
    # The interpreter's own finalisation of a process this size took 5-8 s on a busy
    # 2-core machine after a clean stop, long enough for an orchestrator to SIGKILL it.
    os._exit(code)
