"""The stages' connection pool after Postgres dropped its connections (a restart).

Every idle connection of the pool is dead then, and psycopg only finds out when one is
used. One failed use is the news; the pool must not hand out the other dead ones, or a
stage's retry loop spends all its tries on them and gives up on records while Postgres
works (found by `make chaos`: 40 reviews dead-lettered after a Postgres restart).
"""

from __future__ import annotations

import psycopg
import pytest
from ingest_kit import database_url, db

from shared.db.pool import ConnectionPool

pytestmark = pytest.mark.integration


async def _drop_backends(pids: list[int]) -> None:
    async with db() as conn:
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_after_postgres_dropped_every_connection_one_failure_then_fresh_ones(
    stack: object,
) -> None:
    pool = ConnectionPool(database_url(), size=4)
    await pool.open()
    try:
        pids = [c.info.backend_pid for c in pool._all]
        await _drop_backends(pids)
        failures = 0
        for _ in range(4):
            try:
                rows = await pool.fetch("SELECT 1")
            except psycopg.OperationalError:
                failures += 1
                continue
            assert rows == [(1,)]
        assert failures == 1, "the pool handed out connections it knew to be dead"
        assert not set(pids) & {c.info.backend_pid for c in pool._all if not c.closed}
    finally:
        await pool.close()
