"""Group commit (`services.api.coalesce.Coalescer`): concurrent submits share batches, and
a batch refused for one item's data fails that item alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from services.api.coalesce import Coalescer


async def test_concurrent_submits_share_a_few_writes() -> None:
    batches: list[int] = []

    async def write(items: Sequence[int]) -> list[int]:
        batches.append(len(items))
        await asyncio.sleep(0.01)  # a statement's round trip
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer("t", write, max_batch=30)
    results = await asyncio.gather(*(c.submit(i) for i in range(100)))
    assert results == [i * 10 for i in range(100)]
    # What arrived before the first write started shares it; nothing waits for company.
    assert batches == [30, 30, 30, 10], batches


async def test_a_lone_submit_is_written_at_once() -> None:
    async def write(items: Sequence[int]) -> list[int]:
        return list(items)

    c: Coalescer[int, int] = Coalescer("t", write)
    assert await asyncio.wait_for(c.submit(7), 0.5) == 7


async def test_a_refused_batch_fails_only_the_item_at_fault() -> None:
    async def write(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        if 13 in items:
            raise IntegrityError("INSERT", {}, Exception("fk violation"))
        return list(items)

    c: Coalescer[int, int] = Coalescer("t", write)
    results = await asyncio.gather(*(c.submit(i) for i in range(20)), return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)] == [results[13]]
    assert isinstance(results[13], IntegrityError)
    assert [r for i, r in enumerate(results) if i != 13] == [i for i in range(20) if i != 13]


async def test_a_database_error_reaches_every_caller_of_its_batch() -> None:
    async def write(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    c: Coalescer[int, int] = Coalescer("t", write)
    results = await asyncio.gather(*(c.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, OperationalError) for r in results)
    with pytest.raises(OperationalError):  # and the next submit is written again
        await c.submit(99)
