"""A tiny fixed-size pool of async psycopg connections for stage services.

Stages process a few batches concurrently and each batch writes in its own transaction,
so a handful of connections suffices. A broken connection is replaced on release, or, if
Postgres is down then, on its next borrow: a slot is never lost to an outage. A broken
connection also means the server dropped the others (a restart): the idle ones are closed
at once, so the next borrowers connect afresh instead of each finding a dead connection
(psycopg only notices on use), which would spend a stage's retries on nothing. A borrower
that leaves a transaction open gets it rolled back on release, which is what makes
`fetch` (one read, its snapshot ended with the borrow) a one-liner for the stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, overload

import psycopg
from psycopg.abc import Params, QueryNoTemplate
from psycopg.rows import AsyncRowFactory, Row


class ConnectionPool:
    """`size` connections handed out one task at a time."""

    def __init__(self, url: str, size: int = 4) -> None:
        self.url = url
        self.size = size
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        """Open every connection (fails fast if Postgres is unreachable)."""
        for _ in range(self.size):
            conn = await psycopg.AsyncConnection.connect(self.url)
            self._all.append(conn)
            self._free.put_nowait(conn)

    async def close(self) -> None:
        """Close every connection."""
        for conn in self._all:
            await conn.close()
        self._all.clear()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Borrow a connection; its transaction is rolled back if the block raises."""
        conn = await self._free.get()
        if conn.closed or conn.broken:
            try:
                conn = await self._replace(conn)
            except BaseException:
                self._free.put_nowait(conn)  # still down: the next borrower tries again
                raise
        try:
            yield conn
        except BaseException:
            await self._recycle(conn)
            raise
        else:
            if conn.closed or conn.broken:
                await self._recycle(conn)
                return
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                # A read-only borrower left its transaction open: end it, so no snapshot
                # or lock outlives the borrow (and a failing rollback loses no slot).
                await self._recycle(conn)
                return
            self._free.put_nowait(conn)

    @overload
    async def fetch(
        self, query: QueryNoTemplate, params: Params | None = None
    ) -> list[tuple[Any, ...]]: ...

    @overload
    async def fetch(
        self,
        query: QueryNoTemplate,
        params: Params | None = None,
        *,
        row_factory: AsyncRowFactory[Row],
    ) -> list[Row]: ...

    async def fetch(
        self,
        query: QueryNoTemplate,
        params: Params | None = None,
        *,
        row_factory: AsyncRowFactory[Any] | None = None,
    ) -> list[Any]:
        """Every row of one read (tuples, or what `row_factory` makes of them).

        The read's transaction ends with the borrow (rolled back on release), so no
        snapshot outlives it.
        """
        async with self.connection() as conn:
            if row_factory is None:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
            async with conn.cursor(row_factory=row_factory) as rcur:
                await rcur.execute(query, params)
                return await rcur.fetchall()

    async def _recycle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            if not conn.closed and not conn.broken:
                await conn.rollback()
                self._free.put_nowait(conn)
                return
        except psycopg.Error:
            pass
        await self._close_idle()
        with suppress(psycopg.Error, OSError):
            conn = await self._replace(conn)
        self._free.put_nowait(conn)  # replaced, or still broken: replaced on its next borrow

    async def _close_idle(self) -> None:
        """Close every idle connection: each is replaced on its next borrow."""
        idle = []
        while not self._free.empty():
            idle.append(self._free.get_nowait())
        for conn in idle:
            with suppress(psycopg.Error, OSError):
                await conn.close()
            self._free.put_nowait(conn)

    async def _replace(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
        """A new connection in the place of `conn` (which stays if connecting fails)."""
        with suppress(psycopg.Error):
            await conn.close()
        new = await psycopg.AsyncConnection.connect(self.url)
        self._all[self._all.index(conn)] = new
        return new
