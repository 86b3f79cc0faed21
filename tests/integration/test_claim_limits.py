"""A claim of "at most N rows" takes at most N rows, whatever plan Postgres picks.

`UPDATE t FROM (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) c WHERE t.id = c.id` looks
like it updates n rows, but when the planner puts the subquery on the inner side of a
nested loop it is rescanned for every outer row; each rescan skips the rows this very
statement already updated and returns the next n, so every row of the table ends up
claimed. CI caught it once: a learn leader told to release 50 held batches per tick
released all 301. The planner chooses that plan on small or unanalysed tables, so each
claim is run here both as planned and with the planner's costs flattened so it may take
that plan, on 300 planted rows in a transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from ingest_kit import database_url
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.api import deletion
from services.learn import store as learn_store
from services.report import store as report_store
from shared.settings import DatabaseSettings

ROWS, LIMIT = 300, 50
# Every scan and join free, merge joins off: the planner's choice among equally cheap
# plans includes the rescanning nested loop, as when statistics say a table is empty.
RESCANNED = (
    *(
        f"SET LOCAL {cost} = 0"
        for cost in (
            "seq_page_cost",
            "random_page_cost",
            "cpu_tuple_cost",
            "cpu_index_tuple_cost",
            "cpu_operator_cost",
        )
    ),
    "SET LOCAL enable_mergejoin = off",
)
PLANS = {"as planned": (), "rescanned subquery": RESCANNED}

pytestmark = pytest.mark.parametrize("settings", PLANS.values(), ids=PLANS.keys())


@pytest.fixture
async def tx(stack: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection inside a transaction that is rolled back at the end."""
    conn = await psycopg.AsyncConnection.connect(database_url())
    try:
        yield conn
    finally:
        await conn.rollback()
        await conn.close()


async def _job(conn: psycopg.AsyncConnection[Any]) -> str:
    job = str(uuid.uuid4())
    await conn.execute("INSERT INTO tenants (id) VALUES ('it-claim') ON CONFLICT DO NOTHING")
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, product, target_language, status)"
        " VALUES (%s, 'it-claim', 'p', 'en', 'sealed')",
        (job,),
    )
    return job


async def test_learn_claims_at_most_its_limit_of_held_batches(
    tx: psycopg.AsyncConnection[Any], settings: tuple[str, ...]
) -> None:
    job = await _job(tx)
    await tx.execute(
        "INSERT INTO learn_pending (job_id, batch_key, reviews)"
        " SELECT %s, 'it:' || lpad(i::text, 5, '0'), '[]' FROM generate_series(1, %s) i",
        (job, ROWS),
    )
    for sql in settings:
        await tx.execute(sql)
    cur = await tx.execute(learn_store._CLAIM_SQL, {"job": job, "limit": LIMIT, "lease_s": 60.0})
    assert len(await cur.fetchall()) == LIMIT


async def test_report_claims_at_most_its_limit_of_job_events(
    tx: psycopg.AsyncConnection[Any], settings: tuple[str, ...]
) -> None:
    job = await _job(tx)
    await tx.execute(
        "INSERT INTO job_events (id, job_id, value)"
        " SELECT %s || ':it' || i, %s, '\\x00' FROM generate_series(1, %s) i",
        (job, job, ROWS),
    )
    for sql in settings:
        await tx.execute(sql)
    cur = await tx.execute(report_store.Q_CLAIM_EVENTS, {"limit": LIMIT, "lease_s": 60.0})
    assert len(await cur.fetchall()) == LIMIT


async def test_retention_expires_at_most_its_limit_of_jobs(
    stack: Any, settings: tuple[str, ...]
) -> None:
    engine = create_async_engine(DatabaseSettings().sqlalchemy_url())
    try:
        async with engine.connect() as conn:
            await conn.execute(
                text("INSERT INTO tenants (id) VALUES ('it-claim') ON CONFLICT DO NOTHING")
            )
            await conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, product, target_language, status,"
                    " created_at) SELECT gen_random_uuid()::text, 'it-claim', 'p', 'en',"
                    " 'sealed', now() - interval '400 days' FROM generate_series(1, :n)"
                ),
                {"n": ROWS},
            )
            for sql in settings:
                await conn.execute(text(sql))
            rows = (
                await conn.execute(deletion._EXPIRE, {"age_s": 365 * 86400.0, "limit": LIMIT})
            ).all()
            assert len(rows) == LIMIT
            await conn.rollback()
    finally:
        await engine.dispose()
