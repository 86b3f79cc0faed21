"""Structured JSON logs, one object per line on stderr, for every service.

`extra={...}` fields of a log call become top-level keys. Known secret-bearing keys are
masked, so a settings dump or a URL with a password never reaches the log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_HINTS = ("password", "secret", "api_key", "apikey", "token", "authorization")


def _mask(key: str, value: Any) -> Any:
    if any(h in key.lower() for h in _SECRET_HINTS):
        return "***"
    return value


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, service, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                doc[key] = _mask(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route all logging to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "aiokafka",
        "kafka",
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "openai",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
