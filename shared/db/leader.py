"""Postgres advisory locks: one leader among a stage's replicas, and per-job locks.

`AdvisoryLeader` is the replica that does a stage's singular work (learn's ticks, the
report stage's callback and event deliveries): whoever holds a session-level advisory lock
on a dedicated autocommit connection. If that connection breaks or the process dies, the
lock goes with it and another replica's next `check` takes it; a replica that starts next
to a living leader finds the lock taken and stays a follower.

Leadership is a hint, not a fence: a leader whose connection breaks may still be finishing
work it started, so what must never happen twice is guarded by the data as well (claimed
rows, conditional status transitions); see the stages' stores.

`try_xact_lock` takes a transaction-level advisory lock without waiting: per-job work
(learning a job, building its report) is done by whoever gets it, and the lock ends with
the transaction or the connection.

Keys are text (the topic prefix plus a name), hashed by Postgres into the 64-bit key
space, so two deployments sharing a database under different prefixes never share a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

log = logging.getLogger(__name__)

DB_TIMEOUT_S = 10.0
_TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
_TRY_XACT_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))"


class AdvisoryLeader:
    """Leadership of one role (`key`) among the replicas sharing a Postgres database."""

    def __init__(self, url: str, key: str, *, role: str) -> None:
        self.url = url
        self.key = key
        self.role = role  # for log lines: "learn ticks", "report deliveries"
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.leader = False

    async def check(self) -> bool:
        """Whether this process leads now, taking the lock if it is free.

        Never raises: trouble with Postgres means "not the leader" until it clears.
        """
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.leader = False
                    self.conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=int(DB_TIMEOUT_S)
                    )
                if self.leader:
                    await self.conn.execute("SELECT 1")  # still connected = still holding
                else:
                    cur = await self.conn.execute(_TRY_LOCK_SQL, (self.key,))
                    row = await cur.fetchone()
                    self.leader = bool(row and row[0])
                    if self.leader:
                        log.info("leadership taken", extra={"role": self.role})
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if self.leader:
                log.warning("leadership lost", extra={"role": self.role, "error": str(exc)})
            self.leader = False
            await self.close()
        return self.leader

    async def close(self) -> None:
        """Drop the connection, and with it the lock."""
        conn, self.conn, self.leader = self.conn, None, False
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


async def try_xact_lock(conn: psycopg.AsyncConnection[Any], key: str) -> bool:
    """Take the transaction-level advisory lock `key` on `conn` if it is free (no wait).

    Held until `conn`'s transaction ends (commit or rollback) or the connection closes.
    """
    cur = await conn.execute(_TRY_XACT_LOCK_SQL, (key,))
    row = await cur.fetchone()
    return bool(row and row[0])
