"""Error answers: always JSON `{"detail": ...}`, 503 for unavailable infrastructure.

Bad input is answered where it is found (4xx with a precise message); these handlers cover
what is left: a dependency that is down becomes a 503 with `Retry-After` (the request can
simply be repeated), anything unexpected a logged 500 that reveals nothing internal.

Validation errors (422) list where and why (`loc`, `msg`, `type`) but never echo the input:
the default handler does, which turns NaN, 1e999 or a lone surrogate into a 500 of its own
(they cannot be encoded as JSON) and reflects up to a whole request body back.
"""

from __future__ import annotations

import logging

import psycopg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .clients import KafkaUnavailable
from .ratelimit import LimiterUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = "5"
MAX_ERROR_TEXT = 200  # characters of a location part or message (keys come from the client)


def _printable(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)[:MAX_ERROR_TEXT]
    # A lone surrogate cannot be encoded as UTF-8: show its escape instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": [_printable(part) for part in err.get("loc", ())],
            "msg": _printable(err.get("msg", "")),
            "type": _printable(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


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
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(KafkaUnavailable, _kafka_down)
    app.add_exception_handler(KafkaError, _kafka_down)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(LimiterUnavailable, _limiter_down)
    app.add_exception_handler(Exception, _internal)
