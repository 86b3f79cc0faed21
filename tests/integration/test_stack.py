"""The local test stack really works: Kafka, Postgres and Redis answer, stack.env is complete,
`voc status` agrees with reality, `up` is idempotent, a service survives SIGKILL + restart, and
the stack's Prometheus scrapes every service with the alert rules of deploy/prometheus/rules."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from voc import procs
from voc.stack import SERVICES, Stack
from voc.stackenv import metrics_env_key

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"

ALWAYS_KEYS = (
    "VOC_ENV", "VOC_PROFILE", "VOC_HOME", "VOC_API_URL", "VOC_API_KEY",
    "KAFKA_BOOTSTRAP_SERVERS", "VOC_TOPIC_PREFIX", "DATABASE_URL", "REDIS_URL",
    "VOC_API_PORT", "VOC_FAKE_LLM_PORT", "VOC_KAFKA_PORT", "VOC_KAFKA_CONTROLLER_PORT",
    "VOC_POSTGRES_PORT", "VOC_REDIS_PORT", "VOC_METRICS_PORT_BASE", "VOC_PROMETHEUS_URL",
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
    missing += [k for k in FAKE_LLM_KEYS if not stack.get(k)]
    assert stack["VOC_LLM_BASE_URL"] == stack["VOC_FAKE_LLM_URL"] + "/v1"
    for service in SERVICES:
        key = metrics_env_key(service)
        if key not in stack:
            missing.append(key)
    assert not missing, f"stack.env lacks {missing}"
    assert stack["VOC_ENV"] == "test"
    assert stack["VOC_API_KEY"].startswith("voc_")
    assert stack["VOC_PROMETHEUS_URL"] == stack_ctl.profile.prometheus_url
    ports = [int(stack[metrics_env_key(s)]) for s in SERVICES]
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
    assert {"kafka", "postgres", "redis", "prometheus"} <= rows.keys()
    assert rows["prometheus"]["url"] == stack["VOC_PROMETHEUS_URL"]
    assert rows["prometheus"]["port"] == stack_ctl.profile.prometheus_port
    # Services left out with $VOC_SERVICES may be down; everything else must run.
    skipped = set(SERVICES) - set(stack_ctl.selected_services())
    dead = [name for name, r in rows.items() if not r["alive"] and name not in skipped]
    assert not dead, f"not alive: {dead}"
    for r in rows.values():
        if r["alive"] and not r["external"]:
            assert procs.is_alive(r["pid"])


def test_up_again_reuses_everything(stack: dict[str, str], stack_ctl: Stack) -> None:
    before = _last_reload(stack["VOC_PROMETHEUS_URL"])
    while time.time() < before + 1.1:  # the reload timestamp has whole seconds
        time.sleep(0.1)
    result = Stack(profile="test").up()
    assert result.started == []
    assert result.env["VOC_API_KEY"] == stack["VOC_API_KEY"]
    assert {"kafka", "postgres", "redis"} <= set(result.reused) | set(result.external)
    # The running Prometheus is kept and re-reads the config `up` rewrote.
    assert "prometheus" in result.reused
    assert _last_reload(stack["VOC_PROMETHEUS_URL"]) > before


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200, url
        return json.loads(resp.read())


def _last_reload(prometheus: str) -> float:
    """When Prometheus last loaded its config successfully (unix seconds)."""
    with urllib.request.urlopen(f"{prometheus}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("prometheus_config_last_reload_success_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no prometheus_config_last_reload_success_timestamp_seconds")


def test_prometheus_scrapes_the_stack_with_the_deploy_rules(
    stack: dict[str, str], stack_ctl: Stack
) -> None:
    yaml = pytest.importorskip("yaml")
    prometheus = stack["VOC_PROMETHEUS_URL"]
    with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=10) as resp:
        assert resp.status == 200

    # Every service of the stack is a target with its `service` label; the running ones
    # are scraped successfully (the first scrape comes within one 5 s interval).
    running = {s for s in stack_ctl.selected_services() if stack_ctl.service_pid(s)}
    health: dict[str, str] = {}

    def scraped() -> bool:
        doc = _get_json(f"{prometheus}/api/v1/targets?state=active")
        health.clear()
        health.update({t["labels"]["service"]: t["health"] for t in doc["data"]["activeTargets"]})
        return all(health.get(s) == "up" for s in running)

    ok = procs.wait_until(scraped, timeout=30, interval=1)
    assert set(SERVICES) <= health.keys(), f"not scraped: {set(SERVICES) - health.keys()}"
    assert ok, f"running services not scraped: {health}"

    # The rule groups, and their rules, are those of deploy/prometheus/rules.
    expected = {
        group["name"]: sorted(r.get("alert") or r["record"] for r in group["rules"])
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    }
    doc = _get_json(f"{prometheus}/api/v1/rules")
    loaded = {g["name"]: sorted(r["name"] for r in g["rules"]) for g in doc["data"]["groups"]}
    assert expected, "no rule groups in deploy/prometheus/rules"
    assert loaded == expected
    files = {Path(g["file"]).resolve() for g in doc["data"]["groups"]}
    assert files == {p.resolve() for p in RULES.glob("*.yml")}


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
