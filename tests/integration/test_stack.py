"""The local test stack really works: Kafka, Postgres and Redis answer, stack.env is complete,
`voc status` agrees with reality, `up` is idempotent, and a service survives SIGKILL + restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from voc import procs
from voc.stack import SERVICES, Stack

ALWAYS_KEYS = (
    "VOC_ENV", "VOC_PROFILE", "VOC_HOME", "VOC_API_URL", "VOC_API_KEY",
    "KAFKA_BOOTSTRAP_SERVERS", "VOC_TOPIC_PREFIX", "DATABASE_URL", "REDIS_URL",
    "VOC_API_PORT", "VOC_FAKE_LLM_PORT", "VOC_KAFKA_PORT", "VOC_KAFKA_CONTROLLER_PORT",
    "VOC_POSTGRES_PORT", "VOC_REDIS_PORT", "VOC_METRICS_PORT_BASE",
)  # fmt: skip
FAKE_LLM_KEYS = ("VOC_FAKE_LLM_URL", "VOC_LLM_BASE_URL", "VOC_LLM_API_KEY")


async def test_kafka_create_produce_consume(stack: dict[str, str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"test.stack.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        assert (msg.key, msg.value) == (b"k", b"hello")
        assert topic in await admin.list_topics()
    finally:
        await admin.delete_topics([topic])
        await admin.close()


def test_postgres_select_1(stack: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(stack["DATABASE_URL"], connect_timeout=5) as conn:
        row = conn.execute("select 1, current_user, current_database()").fetchone()
    assert row is not None
    assert row[0] == 1
    if stack["DATABASE_URL"] == Stack(profile="test").profile.database_url:
        assert (row[1], row[2]) == ("voc", "voc")


def test_redis_ping(stack: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(stack["REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_stack_env_is_complete(stack: dict[str, str], stack_ctl: Stack) -> None:
    missing = [k for k in ALWAYS_KEYS if not stack.get(k)]
    if stack_ctl.fake_llm_available():
        missing += [k for k in FAKE_LLM_KEYS if not stack.get(k)]
        assert stack["VOC_LLM_BASE_URL"] == stack["VOC_FAKE_LLM_URL"] + "/v1"
    for service in SERVICES:
        key = "VOC_METRICS_PORT_" + service.upper()
        if key not in stack:
            missing.append(key)
    assert not missing, f"stack.env lacks {missing}"
    assert stack["VOC_ENV"] == "test"
    assert stack["VOC_API_KEY"].startswith("voc_")
    ports = [int(stack["VOC_METRICS_PORT_" + s.upper()]) for s in SERVICES]
    assert len(set(ports)) == len(ports)


def test_voc_status_shows_everything_alive(stack: dict[str, str], stack_ctl: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voc", "status", "--profile", "test", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert {"kafka", "postgres", "redis"} <= rows.keys()
    # Services left out with $VOC_SERVICES may be down; everything else must run.
    skipped = set(stack_ctl.available_services()) - set(stack_ctl.selected_services())
    dead = [name for name, r in rows.items() if not r["alive"] and name not in skipped]
    assert not dead, f"not alive: {dead}"
    for r in rows.values():
        if r["alive"] and not r["external"]:
            assert procs.is_alive(r["pid"])


def test_up_again_reuses_everything(stack: dict[str, str], stack_ctl: Stack) -> None:
    result = Stack(profile="test").up()
    assert result.started == []
    assert result.env["VOC_API_KEY"] == stack["VOC_API_KEY"]
    assert {"kafka", "postgres", "redis"} <= set(result.reused) | set(result.external)


def test_kill_and_restart_one_service(stack: dict[str, str], stack_ctl: Stack) -> None:
    available = [s for s in stack_ctl.selected_services() if stack_ctl.service_pid(s)]
    if not available:
        pytest.skip("no service is running (none has a __main__.py yet?)")
    # A worker rather than the API if there is one: the API is shared by other tests.
    name = next((s for s in available if s != "api"), available[0])
    others = {s: stack_ctl.service_pid(s) for s in available if s != name}
    old = stack_ctl.service_pid(name)
    assert old is not None

    stack_ctl.kill_service(name)
    assert not procs.is_alive(old)
    assert stack_ctl.service_pid(name) is None

    new = stack_ctl.start_service(name)  # waits until healthy
    try:
        assert new != old
        assert stack_ctl.service_pid(name) == new
        assert {s: stack_ctl.service_pid(s) for s in others} == others  # nothing else touched
        row = next(r for r in stack_ctl.status() if r.name == name)
        assert row.alive and row.pid == new
    finally:
        if stack_ctl.service_pid(name) is None:
            stack_ctl.start_service(name)
