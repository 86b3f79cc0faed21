"""Probes and metrics: `/health` (alive), `/ready` (dependencies answer), `/metrics`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text

from .. import metrics
from ..clients import Clients

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process is up")
async def health() -> dict[str, str]:
    """Always ok while the event loop runs."""
    return {"status": "ok"}


async def _postgres(clients: Clients) -> None:
    async with clients.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _redis(clients: Clients) -> None:
    await clients.redis.ping()


async def _kafka(clients: Clients) -> None:
    await clients.kafka.check()


CHECKS: dict[str, Callable[[Clients], Awaitable[None]]] = {
    "kafka": _kafka,
    "postgres": _postgres,
    "redis": _redis,
}


class ReadyProbe:
    """The dependency checks behind `/ready`, run at most once per `ready_cache_s`.

    Concurrent callers share one run (probes and scanners hitting `/ready` cost Postgres,
    Kafka and Redis one check each per period, whatever their number). Answers carry only
    ok / failed / timeout per dependency; what failed and why is logged, never sent.
    """

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self._checked_at = -float("inf")
        self._results: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def results(self) -> dict[str, str]:
        """The latest check results, refreshed if older than the cache period."""
        ttl = self.clients.settings.ready_cache_s
        if time.monotonic() - self._checked_at < ttl:
            return self._results
        async with self._lock:
            if time.monotonic() - self._checked_at >= ttl:  # nobody refreshed meanwhile
                self._results = dict(await asyncio.gather(*(self._run(n) for n in CHECKS)))
                self._checked_at = time.monotonic()
        return self._results

    async def _run(self, name: str) -> tuple[str, str]:
        try:
            await asyncio.wait_for(
                CHECKS[name](self.clients), self.clients.settings.ready_timeout_s
            )
        except TimeoutError:
            result = "timeout"
        except Exception as exc:  # any failure means "not ready"; its text stays in the log
            log.warning(
                "readiness check failed",
                extra={"check": name, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            result = "failed"
        else:
            result = "ok"
        metrics.READY_CHECKS.labels(name, result).inc()
        return name, result


@router.get(
    "/ready",
    summary="Readiness: Kafka, Postgres and Redis answer",
    responses={503: {"description": "a dependency failed; `checks` says which"}},
)
async def ready(request: Request) -> Response:
    """200 when every dependency answers, else 503 naming the ones that did not."""
    probe: ReadyProbe = request.app.state.ready
    results = await probe.results()
    failed = [name for name, result in results.items() if result != "ok"]
    body: dict[str, Any] = {"status": "ready" if not failed else "not ready", "checks": results}
    if failed:
        body["detail"] = f"not ready: {', '.join(failed)} failed"
    return Response(
        orjson.dumps(body), status_code=503 if failed else 200, media_type="application/json"
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """The process's metrics in the Prometheus text format."""
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)
