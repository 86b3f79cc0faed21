"""Group commit: concurrent requests' writes of one kind go to Postgres as one statement.

Job creation is one INSERT per request; at a few thousand requests a second the statement
round trips, a pooled connection per request in flight, and SQLAlchemy's per-execute work
cost more than everything else the request does. A `Coalescer` lets the first caller
write at once (no added latency when it is alone) and collects whoever arrives while that
write is in flight into the next one, up to `max_batch` items: as many writes in flight as
there are batches, not requests, and one connection busy at a time.

Isolation: if a batch fails on its data (a constraint, a value Postgres refuses), its items
are written again one at a time, so only the item at fault fails; an error of the database
itself (unreachable, timed out) fails the batch's callers, each with that error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DataError, IntegrityError

from . import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Writes submitted items in batches with `write(items) -> results` (same order)."""

    def __init__(
        self, name: str, write: Callable[[Sequence[T]], Awaitable[list[R]]], max_batch: int = 100
    ) -> None:
        self.name = name
        self._write = write
        self.max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._flushing = False

    async def submit(self, item: T) -> R:
        """Write `item` (in the next batch) and return its result; raises its error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush(), name=f"coalesce-{self.name}")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                metrics.WRITE_BATCH.labels(self.name).observe(len(batch))
                await self._write_batch(batch)
        finally:
            self._flushing = False

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except (IntegrityError, DataError) as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            log.warning(
                "batched write refused, writing its items one at a time",
                extra={"write": self.name, "items": len(batch), "error": type(exc).__name__},
            )
            for one in batch:
                await self._write_batch([one])
            return
        except Exception as exc:  # the database itself: every caller gets its error
            for _, future in batch:
                _settle(future, exc=exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[R], result: R | None = None, exc: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled: nothing to hand over
        return
    if exc is not None:
        future.set_exception(exc)
        future.exception()  # retrieved: a caller cancelled meanwhile must not log it
    else:
        future.set_result(result)  # type: ignore[arg-type]
