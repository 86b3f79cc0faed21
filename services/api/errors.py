"""Error answers: always JSON `{"detail": ...}`, 503 for unavailable infrastructure.

Bad input is answered where it is found (4xx with a precise message); these handlers cover
what is left: a dependency that is down becomes a 503 with `Retry-After` (the request can
simply be repeated), anything unexpected a logged 500 that reveals nothing internal.
"""

from __future__ import annotations

import logging

import psycopg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .clients import KafkaUnavailable
from .ratelimit import LimiterUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = "5"


def _unavailable(what: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{what} is unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


async def _kafka_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("kafka unavailable", extra={"path": request.url.path, "error": str(exc)})
    return _unavailable("the event bus (Kafka)")


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError):
        return await _internal(request, exc)
    log.warning("database unavailable", extra={"path": request.url.path, "error": str(exc)})
    return _unavailable("the database")


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable", extra={"path": request.url.path, "error": str(exc)})
    return _unavailable("the cache (Redis)")


async def _limiter_down(request: Request, exc: Exception) -> JSONResponse:
    # Writes fail closed while the limiter cannot count them (see ratelimit.WhenDown).
    return _unavailable("the rate limiter (Redis)")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"path": request.url.path, "method": request.method},
    )
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(KafkaUnavailable, _kafka_down)
    app.add_exception_handler(KafkaError, _kafka_down)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(LimiterUnavailable, _limiter_down)
    app.add_exception_handler(Exception, _internal)
