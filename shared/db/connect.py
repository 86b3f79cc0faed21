"""Postgres connections for the services (psycopg 3, async)."""

from __future__ import annotations

from typing import Any

import psycopg

from shared.settings import DatabaseSettings


async def connect(settings: DatabaseSettings) -> psycopg.AsyncConnection[Any]:
    """Open one async connection (not autocommit: callers commit each batch)."""
    return await psycopg.AsyncConnection.connect(settings.libpq_url())
