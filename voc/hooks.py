"""Calls from `voc up` into `shared/` (migrations, topics, API keys), imported lazily.

`shared` is written alongside the stack manager; while a piece is missing the stack still comes
up, with a warning naming what was skipped.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("voc.stack")


def _optional(module: str, attr: str) -> Callable[..., Any] | None:
    """`module.attr` if it can be imported, else None with a warning."""
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        log.warning("skipping %s.%s: %s", module, attr, exc)
        return None
    return found


def migrate(database_url: str) -> None:
    """shared.db.migrate.upgrade(database_url): bring the schema to head (idempotent)."""
    upgrade = _optional("shared.db.migrate", "upgrade")
    if upgrade is not None:
        t0 = time.monotonic()
        upgrade(database_url)
        log.info("%-12s migrations applied (%.1fs)", "postgres", time.monotonic() - t0)


def ensure_topics(bootstrap_servers: str, prefix: str) -> None:
    """shared.topics.ensure_topics_sync(bootstrap_servers, prefix): create missing topics."""
    ensure = _optional("shared.topics", "ensure_topics_sync")
    if ensure is not None:
        created = ensure(bootstrap_servers, prefix)
        if created:
            log.info("%-12s created %d topics (%s*)", "kafka", len(created), prefix)


def create_api_key(database_url: str, tenant: str) -> str | None:
    """shared.auth.create_api_key_sync(database_url, tenant): a new key, or None if absent."""
    create = _optional("shared.auth", "create_api_key_sync")
    if create is None:
        return None
    key = str(create(database_url, tenant))
    log.info("%-12s created API key for tenant %r", "postgres", tenant)
    return key
