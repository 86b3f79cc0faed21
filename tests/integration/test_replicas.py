"""Replicas of a stage on the local stack: `voc scale` starts and stops them, `voc status`
shows them, each is a member of the stage's consumer group with its own metrics port, and
Prometheus scrapes it under its stage's `service` label."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request

from services.lag_exporter.kafka import KafkaLagSource
from voc import procs
from voc.prometheus import query
from voc.stack import Stack


async def _members(bootstrap: str, group: str) -> int:
    async with KafkaLagSource(bootstrap) as source:
        snap = await source.snapshot(allow=lambda g: g == group)
    return sum(len(g.members) for g in snap.groups if g.group == group)


async def _wait_members(bootstrap: str, group: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = await _members(bootstrap, group)
        if seen == n:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{group}: {seen} members, wanted {n}")


def _voc(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "voc", "--profile", "test", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


async def test_scale_a_stage_up_and_down(stack: dict[str, str], stack_ctl: Stack) -> None:
    group = f"{stack['VOC_TOPIC_PREFIX']}translate"
    bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
    try:
        done = _voc("scale", "translate=3")
        assert done.returncode == 0, done.stderr
        assert "translate, translate.2, translate.3" in done.stdout
        assert stack_ctl.replicas("translate") == ["translate", "translate.2", "translate.3"]
        await _wait_members(bootstrap, group, 3)

        status = _voc("status", "--json")
        rows = {r["name"]: r for r in json.loads(status.stdout)}
        ports = {rows[n]["port"] for n in ("translate", "translate.2", "translate.3")}
        assert len(ports) == 3 and all(rows[n]["alive"] for n in ("translate.2", "translate.3"))
        with urllib.request.urlopen(rows["translate.3"]["url"], timeout=10) as resp:
            assert b"voc_" in resp.read()

        # Prometheus scrapes the replicas under the stage's label, one instance each.
        deadline = time.monotonic() + 60
        instances: set[str] = set()
        while time.monotonic() < deadline and len(instances) < 3:
            found = query(stack["VOC_PROMETHEUS_URL"], 'up{service="translate"} == 1')
            instances = {r["metric"]["instance"] for r in found}
            await asyncio.sleep(1)
        assert len(instances) == 3, instances

        # Down to one: one replica crashes (SIGKILL), the other leaves (SIGTERM).
        pid3 = stack_ctl.service_pid("translate.3")
        stack_ctl.scale("translate", 2, sig=signal.SIGKILL)
        assert pid3 is not None and not procs.is_alive(pid3)
        done = _voc("scale", "translate=1")
        assert done.returncode == 0, done.stderr
        assert stack_ctl.replicas("translate") == ["translate"]
        # The killed member's session times out; the stopped one leaves at once.
        await _wait_members(bootstrap, group, 1)
    finally:
        stack_ctl.scale("translate", 1, sig=signal.SIGKILL)
