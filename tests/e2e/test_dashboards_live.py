"""Every Grafana panel returns data on the live stack, and every alert rule loads into a real
Prometheus.

A private Prometheus (Debian's binary, a free port, a temp data dir, stopped by PID) scrapes
the test stack's services - the ports in .voc-test/stack.env - and a lag exporter (the
stack's own if it runs one, else one started here, also stopped by PID), with the same rules
as deploy/prometheus. A small job then runs through the API, and every panel's PromQL (with
Grafana's variables set to "All") must return at least one series. The per-panel series
counts are printed (`pytest -s`) as the screenshot-free proof.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest

from voc import procs
from voc.prometheus import (
    ports_from_stack_env,
    query,
    ready,
    render_local_prometheus_config,
    start_prometheus,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "voc" / "samples" / "earbuds_reviews.csv"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SCRAPE = "2s"
JOB_TIMEOUT_S = 600.0
PANELS_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboards", ROOT / "tools" / "grafana_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lag_exporter(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(metrics port, pid) of a running lag exporter: the stack's, or one started here."""
    port = int(stack.get("VOC_METRICS_PORT_LAG_EXPORTER") or 0)
    pid = stack.service_pid("lag-exporter") if port else None
    if port and pid and procs.port_open(port):
        yield port, pid
        return
    port = _free_port()
    home = tmp_path_factory.mktemp("lag-exporter")
    env = {
        **os.environ,
        **stack,
        "VOC_METRICS_PORT": str(port),
        "VOC_LAG_INTERVAL_S": "1",
        "VOC_LAG_PUBLISH_REDIS": "false",
    }
    pid = procs.spawn(
        [sys.executable, "-m", "services.lag_exporter"], env=env, log_path=home / "log", cwd=ROOT
    )
    try:
        assert procs.wait_until(lambda: procs.port_open(port), timeout=30), procs.tail(home / "log")
        yield port, pid
    finally:
        procs.terminate(pid, timeout=10)


@pytest.fixture(scope="module")
def prometheus(
    stack: Any, lag_exporter: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of a private Prometheus scraping the test stack every 2 s."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    home = tmp_path_factory.mktemp("prometheus")
    ports = ports_from_stack_env(stack)
    ports["lag-exporter"] = lag_exporter[0]
    config = render_local_prometheus_config(ports, home / "prometheus.yml", scrape_interval=SCRAPE)
    port = _free_port()
    pid = start_prometheus(home, config, port=port)
    try:
        assert procs.wait_until(lambda: ready(port), timeout=60, interval=0.5), procs.tail(
            home / "prometheus.log"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.terminate(pid, timeout=15)


def _small_job(stack: Any, n: int = 40) -> str:
    """Run a job of `n` sample reviews (unique to this run) to completion; returns its id."""
    tag = uuid.uuid4().hex[:8]
    with SAMPLE.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    for r in rows:
        r["text"] = f"{r['text']} #{tag}"
        r["review_id"] = f"{r['review_id']}-{tag}"
    with httpx.Client(
        base_url=stack["VOC_API_URL"],
        headers={"Authorization": f"Bearer {stack['VOC_API_KEY']}"},
        timeout=60.0,
    ) as api:
        resp = api.post("/v1/jobs", json={"product": "Aurora earbuds", "target_language": "en"})
        assert resp.status_code == 201, resp.text
        job_id = str(resp.json()["id"])
        resp = api.post(
            f"/v1/jobs/{job_id}/reviews",
            content=b"\n".join(orjson.dumps(r) for r in rows),
            headers={"content-type": "application/x-ndjson"},
        )
        assert resp.status_code in (200, 201, 202), resp.text
        assert api.post(f"/v1/jobs/{job_id}/seal").status_code == 200
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job = api.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "completed":
                return job_id
            assert job["status"] != "failed", job
            time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not complete in {JOB_TIMEOUT_S}s")


def _panel_counts(prometheus: str) -> list[tuple[str, str, int]]:
    """(dashboard, panel title, series returned) for every panel query."""
    gen = _generator()
    counts: list[tuple[str, str, int]] = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for title, expr in gen.panel_queries(doc, rate_interval="5m"):
            counts.append((path.stem, title, len(query(prometheus, expr))))
    return counts


def test_every_dashboard_panel_returns_series(
    stack: Any, prometheus: str, lag_exporter: tuple[int, int]
) -> None:
    _small_job(stack)
    # A rate needs two successful scrapes of a target; on a loaded machine a scrape can
    # time out (a target's last scrape being up says nothing of the ones before), so wait
    # for the panels rather than a fixed number of scrape intervals.
    deadline = time.monotonic() + PANELS_TIMEOUT_S
    while True:
        counts = _panel_counts(prometheus)
        empty = [(d, t) for d, t, n in counts if n == 0]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2.0)

    targets = query(prometheus, "up")
    down = [t["metric"] for t in targets if t["value"][1] != "1"]
    assert targets and not down, f"targets down: {down}"
    width = max(len(t) for _, t, _ in counts)
    sys.stdout.write("\ndashboard  panel" + " " * (width - 5) + "  series\n")
    for dash, title, n in counts:
        sys.stdout.write(f"{dash:<10} {title:<{width}}  {n}\n")
    poll_ms = query(prometheus, "max(kafka_consumergroup_poll_time_ms)")
    rss_kb = _rss_kb(lag_exporter[1])
    sys.stdout.write(
        f"lag exporter: poll of all groups {poll_ms[0]['value'][1] if poll_ms else '?'} ms, "
        f"RSS {rss_kb / 1024:.1f} MiB\n"
    )
    scrapes = {
        t["metric"].get("job", "?"): (t["value"][1], o["value"][1])
        for t in query(prometheus, "count_over_time(up[5m])")
        for o in query(prometheus, "sum_over_time(up[5m])")
        if o["metric"] == t["metric"]
    }
    assert not empty, f"panels without data: {empty}; scrapes (all, up) by job: {scrapes}"


def test_alert_rules_load_and_evaluate(prometheus: str) -> None:
    with httpx.Client(timeout=10) as client:
        doc = client.get(f"{prometheus}/api/v1/rules").json()
    rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} >= {
        "VocConsumerLagGrowing",
        "VocConsumerLagSecondsHigh",
        "VocCommitStalled",
        "VocDeadLettersArriving",
        "VocLLMProviderRateLimited",
        "VocLLMQuotaSaturated",
        "VocServiceDown",
        "VocApiErrorRate",
    }
    deadline = time.monotonic() + 30
    while any(r.get("health") != "ok" for r in rules) and time.monotonic() < deadline:
        time.sleep(1)
        doc = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
        rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
    assert all(r.get("health") == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"
    ]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
