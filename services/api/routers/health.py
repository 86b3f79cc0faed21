"""Probes and metrics: `/health` (alive), `/ready` (dependencies answer), `/metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import text

from .. import metrics
from ..clients import Clients
from ..deps import ClientsDep

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


async def _run(name: str, clients: Clients) -> tuple[str, str]:
    try:
        await asyncio.wait_for(CHECKS[name](clients), clients.settings.ready_timeout_s)
    except TimeoutError:
        return name, "timeout"
    except Exception as exc:
        return name, f"{type(exc).__name__}: {exc}"[:300]
    return name, "ok"


@router.get(
    "/ready",
    summary="Readiness: Kafka, Postgres and Redis answer",
    responses={503: {"description": "a dependency failed; `checks` says which"}},
)
async def ready(clients: ClientsDep) -> Response:
    """200 when every dependency answers, else 503 naming the ones that did not."""
    results = dict(await asyncio.gather(*(_run(name, clients) for name in CHECKS)))
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
