"""The app factory: `create_app(settings)` wires routers, middleware and the lifespan.

Nothing is created at import time. The lifespan opens the clients (Postgres engine, Redis,
Kafka producer) and closes them on shutdown; tests build an app from their own settings
and run its lifespan in-process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .clients import Clients
from .deletion import Sweeper
from .errors import install_error_handlers
from .metrics import MetricsMiddleware
from .middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from .routers import ROUTERS
from .routers.health import ReadyProbe
from .settings import ApiSettings

log = logging.getLogger(__name__)

DESCRIPTION = """
Submit customer reviews for analysis and follow them through the pipeline.

1. `POST /v1/jobs` creates a job (product, target language, optional callback URL).
2. `POST /v1/jobs/{job_id}/reviews` uploads reviews (JSON array, NDJSON or CSV; any size,
   streamed). Send an `Idempotency-Key` to make retries safe.
3. `POST /v1/jobs/{job_id}/seal` says no more reviews will come.
4. `GET /v1/jobs/{job_id}` shows progress per stage.

5. `DELETE /v1/jobs/{job_id}` deletes the job and everything derived from it.

Authenticate with `Authorization: Bearer <api key>`. Errors are `{"detail": ...}`.
Request bodies other than uploads are limited to a few tens of KB (413 beyond).
"""


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the API for `settings` (clients are opened when the app starts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = Clients.open(settings)
        app.state.clients = clients
        app.state.ready = ReadyProbe(clients)
        sweeper = Sweeper(clients.engine, clients.status_cache, settings)
        sweeper.start()
        log.info(
            "api started",
            extra={
                "kafka": settings.kafka.bootstrap_servers,
                "topic_prefix": settings.kafka.topic_prefix,
                "rate_limit_per_s": settings.rate_limit_per_s,
            },
        )
        try:
            yield
        finally:
            await sweeper.stop()
            await clients.close()
            log.info("api stopped")

    app = FastAPI(
        title="vocstream API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (`metrics.MetricsMiddleware`) and logs are our JSON lines;
        # FastAPI's OpenTelemetry hooks would only look for a provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    # Outermost last: metrics see every answer, including a 413 before routing.
    app.add_middleware(
        BodyLimitMiddleware,
        routes=[route for router in ROUTERS for route in router.routes],
        default_limit=settings.max_body_bytes,
        streamed={"upload_reviews": settings.max_upload_bytes},
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)
    return app
