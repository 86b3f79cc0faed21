"""The stage runner against infrastructure faults, on the real broker and Postgres.

Two kinds of trouble must not be confused. Work that keeps failing with an infrastructure
error while the infrastructure works (a record too large for the broker, a statement that
always fails) is tried `VOC_STAGE_MAX_TRIES` times, then the record goes to the stage's
dead-letter topic and `dead_letters` with the reason, the rest of its batch goes on, and
`vocstream_records_gave_up_total` counts it. An outage (Postgres stopped) is waited out,
however long, with `/ready` false meanwhile, and afterwards every record is written.

Each test runs a `StageRunner` in this process on topics of its own (a prefix per test).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ingest_kit import bootstrap, database_url, db, producer, scalar, wait_for
from prometheus_client import REGISTRY

from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.events import Review, ReviewsIngested
from shared.settings import CommonSettings
from shared.stage import Incoming, Outgoing, StageResult, StageRunner
from shared.topics import REVIEWS_INGESTED, TopicSpec, dlq
from voc.stack import Stack

pytestmark = pytest.mark.integration

BIG = "BIG"  # the text of the review whose record keeps failing


async def create_topics(*topics: tuple[str, int, dict[str, str]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, n, 1, topic_configs=cfg) for name, n, cfg in topics]
        )
    finally:
        await admin.close()


async def send(topic: str, texts: Sequence[str]) -> list[str]:
    """One `ReviewsIngested` record per text, all on partition 0; returns the review ids."""
    ids = [str(uuid.uuid4()) for _ in texts]
    async with producer() as p:
        for rid, text in zip(ids, texts, strict=True):
            event = ReviewsIngested(job_id=rid, reviews=[Review(id=rid, text=text)])
            await p.send(topic, event.to_bytes(), key=rid.encode(), partition=0)
        await p.flush()
    return ids


async def read_all(topic: str, n: int, timeout: float = 30.0) -> list[Any]:
    """The first `n` records of `topic` (partition order), or fewer after `timeout`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(recs)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return out


async def committed(group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic)


def settings(prefix: str) -> CommonSettings:
    """The stack's settings with topics of this test and few tries (never set through the
    environment: `voc up` would write it into the stack's env for every service)."""
    s = CommonSettings()
    s.kafka.topic_prefix = prefix
    s.runtime.max_tries = 2
    return s


@asynccontextmanager
async def running(handler: Any, pool: ConnectionPool, prefix: str) -> AsyncIterator[StageRunner]:
    runner = StageRunner(handler, settings(prefix), pool, max_records=10)
    await runner.start()
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stopping.set()
        await asyncio.wait_for(task, 30)
        await runner.stop()


@pytest.fixture
def prefix() -> str:
    return f"rf{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def pool(stack: dict[str, str]) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(database_url(), size=2)
    await pool.open()
    yield pool
    await pool.close()


def gave_up(stage: str, error_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "vocstream_records_gave_up_total", {"stage": stage, "error_type": error_type}
    )
    return value or 0.0


class Echo:
    """Passes each record on to `out`; the BIG one as a value the topic refuses."""

    name = "faults-echo"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(self, out: str) -> None:
        self.out = out

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        result = StageResult()
        for rec in batch:
            big = rec.event.reviews[0].text == BIG
            value = rec.raw + b" " * 50_000 if big else rec.raw
            result.events.append(Outgoing(self.out, rec.key, value))
        return result


async def test_a_record_too_large_for_the_broker_is_dead_lettered_not_retried_forever(
    prefix: str, pool: ConnectionPool
) -> None:
    topic = REVIEWS_INGESTED.full_name(prefix)
    out = f"{prefix}faults.out"
    handler = Echo(out)
    await create_topics(
        (topic, 1, {}),
        (out, 1, {"max.message.bytes": "20000"}),
        (dlq(handler.name).full_name(prefix), 1, {}),
    )
    ids = await send(topic, ["fine", "fine too", BIG, "fine again"])
    before = gave_up(handler.name, "MessageSizeTooLargeError")
    async with running(handler, pool, prefix) as runner:

        async def all_committed() -> bool:
            return await committed(runner.group_id, topic) == len(ids)

        assert await wait_for(all_committed, 60), "the partition is stuck on the big record"
        assert runner.health.is_ready()  # the broker works: this is the record's fault

    (dead,) = await read_all(dlq(handler.name).full_name(prefix), 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["voc-error-type"] == "MessageSizeTooLargeError"
    assert "failed 2 times while kafka worked" in headers["voc-error-message"]
    assert headers["voc-error-retryable"] == "false"
    assert headers["voc-original-offset"] == "2"
    assert ReviewsIngested.model_validate_json(dead.value).reviews[0].id == ids[2]
    async with db() as conn:
        row = await scalar(
            conn, "SELECT error_type FROM dead_letters WHERE id = %s", f"{handler.name}:{ids[2]}"
        )
    assert row == "MessageSizeTooLargeError"
    # The batch's first try had produced the others' events already: they may come twice
    # (at least once; their consumers' writes are idempotent), the big one never.
    passed = await read_all(out, 100, timeout=10)
    assert {ReviewsIngested.model_validate_json(r.value).job_id for r in passed} == set(
        ids[:2] + ids[3:]
    )
    assert gave_up(handler.name, "MessageSizeTooLargeError") == before + 1


class Store:
    """Writes each record's review into a table with a unique index on its text."""

    name = "faults-store"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(self, table: str) -> None:
        self.spec = Upsert(
            sa.Table(
                table,
                sa.MetaData(),
                sa.Column("id", sa.Text, primary_key=True),
                sa.Column("body", sa.Text),
            ),
            key=("id",),
        )

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        rows = []
        for rec in batch:
            review = rec.event.reviews[0]
            # An index entry must fit in a third of a page: this one never will.
            body = secrets.token_hex(10_000) if review.text == BIG else review.text
            rows.append({"id": review.id, "body": body})
        return StageResult(upserts=[(self.spec, rows)])


@pytest.fixture
async def table() -> AsyncIterator[str]:
    name = f"rf_{uuid.uuid4().hex[:10]}"
    async with db() as conn:
        await conn.execute(f"CREATE TABLE {name} (id text PRIMARY KEY, body text)")
        await conn.execute(f"CREATE UNIQUE INDEX ON {name} (body)")
    yield name
    async with db() as conn:
        await conn.execute(f"DROP TABLE {name}")


async def test_a_statement_that_always_fails_dead_letters_its_record(
    prefix: str, pool: ConnectionPool, table: str
) -> None:
    topic = REVIEWS_INGESTED.full_name(prefix)
    handler = Store(table)
    await create_topics((topic, 1, {}), (dlq(handler.name).full_name(prefix), 1, {}))
    ids = await send(topic, ["one", BIG, "three"])
    async with running(handler, pool, prefix) as runner:

        async def all_committed() -> bool:
            return await committed(runner.group_id, topic) == len(ids)

        assert await wait_for(all_committed, 60), "the partition is stuck on the bad statement"
    async with db() as conn:
        stored = await conn.execute(f"SELECT id FROM {table} ORDER BY id")
        assert {r[0] for r in await stored.fetchall()} == {ids[0], ids[2]}
        kind = await scalar(
            conn, "SELECT error_type FROM dead_letters WHERE id = %s", f"{handler.name}:{ids[1]}"
        )
    assert kind == "ProgramLimitExceeded"  # an OperationalError, though Postgres is fine
    assert gave_up(handler.name, "ProgramLimitExceeded") >= 1


async def test_a_postgres_outage_is_waited_out_not_ready_meanwhile(
    prefix: str, pool: ConnectionPool, table: str, stack_ctl: Stack
) -> None:
    topic = REVIEWS_INGESTED.full_name(prefix)
    handler = Store(table)
    handler.name = "faults-outage"
    await create_topics((topic, 1, {}), (dlq(handler.name).full_name(prefix), 1, {}))
    first = await send(topic, [f"before {i}" for i in range(5)])

    async def stored() -> int:
        async with db() as conn:
            return int(await scalar(conn, f"SELECT count(*) FROM {table}"))

    async with running(handler, pool, prefix) as runner:

        async def first_stored() -> bool:
            return await stored() == len(first)

        assert await wait_for(first_stored, 60)
        await asyncio.to_thread(stack_ctl.stop_service, "postgres", signal.SIGINT, 30.0)
        try:
            later = await send(topic, [f"during {i}" for i in range(20)])
            assert await wait_for(lambda: _not_ready(runner), 60), "still ready without Postgres"
            await asyncio.sleep(15)  # an outage that outlasts every backoff step
        finally:
            await asyncio.to_thread(stack_ctl.up, False)

        async def all_stored() -> bool:
            return await stored() == len(first) + len(later)

        assert await wait_for(all_stored, 90), "not everything written after the outage"
        assert await wait_for(lambda: _ready(runner), 30)
        assert await committed(runner.group_id, topic) == len(first) + len(later)
    async with db() as conn:
        dead = await scalar(
            conn, "SELECT count(*) FROM dead_letters WHERE stage = %s", handler.name
        )
    assert dead == 0  # an outage is nobody's record's fault


async def _ready(runner: StageRunner) -> bool:
    return runner.health.is_ready()


async def _not_ready(runner: StageRunner) -> bool:
    return not runner.health.is_ready()
