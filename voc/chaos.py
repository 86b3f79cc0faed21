"""`make chaos`: one job through the pipeline while its processes and infrastructure fail.

Runs against a stack that is up (`voc up`, any profile) and proves the delivery claim end
to end: with several replicas per stage, SIGKILL of stage processes at any moment, a
stage scaled up and down, and broker, Postgres and Redis restarts, every review of the job
is analysed exactly once and the job completes.

1. every stage is scaled to `--replicas` replicas, and the stack's fake LLM answers in
   `--latency-ms` (a slow model), so work is in flight when a fault lands;
2. a job of `--reviews` reviews (the shipped sample, or `--file` CSVs, cycled with unique
   ids and a run tag so no cache answers) is uploaded in one wave per fault; after each
   wave, while the stages work on it, the next fault is injected and then repaired as a
   supervisor (Kubernetes, KEDA) would:
   - `kill`: SIGKILL of a random stage replica, started again;
   - `scale`: one more replica of a random stage joins, then one leaves (SIGKILL);
   - `broker`, `redis`: SIGKILL of the broker or Redis, started again after `--outage`;
   - `postgres`: an immediate shutdown of Postgres, started again after `--outage`;
   the client retries what an outage refuses, as a real client would (uploads are
   idempotent by `review_id`); the job is sealed after the last wave;
3. once the job is `completed`, the checks run on Postgres and the broker: each review
   stored once and translated, analysed and themed exactly once; every insight in exactly
   one theme; no dead letters; a final report covering everything; no consumer lag left.

The stack is scaled back to one replica per stage at the end. Prints each fault as it
happens and a final `RESULT {json}` line (faults, durations, checks, cores); exits 1 if a
check fails.

    python -m voc.chaos [--profile test] [--reviews 2000] [--replicas 2]
        [--faults kill,scale,broker,postgres,redis,kill] [--outage 4] [--latency-ms 100-400]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from voc.fake_llm.admin import admin_headers
from voc.stack import SCALABLE, Stack

SAMPLE = Path(__file__).with_name("samples") / "earbuds_reviews.csv"
FAULTS = ("kill", "scale", "broker", "postgres", "redis")
DEFAULT_FAULTS = "kill,scale,broker,kill,postgres,redis,kill"
UPLOAD_ROWS = 500
# The analysis stages: their groups must have no lag left at the end.
GROUPS = ("ingest", "learn", "translate", "insight", "theme", "report")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def review_rows(n: int, files: Sequence[str], tag: str) -> list[dict[str, Any]]:
    """N rows cycled from the CSVs (default: the shipped sample) with unique ids."""
    source: list[dict[str, Any]] = []
    for path in files or [str(SAMPLE)]:
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                item: dict[str, Any] = {"text": row["text"]}
                if row.get("rating"):
                    item["rating"] = int(row["rating"])
                if row.get("language"):
                    item["language"] = row["language"]
                source.append(item)
    rows = []
    for i, item in zip(range(n), itertools.cycle(source), strict=False):
        rows.append({**item, "review_id": f"chaos-{tag}-{i}", "text": f"{item['text']} #{tag}{i}"})
    return rows


@dataclass
class Fault:
    """One injected fault: what, where, when (seconds into the run), how long it took."""

    kind: str
    target: str
    at_s: float
    took_s: float = 0.0


@dataclass
class ChaosRun:
    """What a run did and found."""

    job_id: str = ""
    reviews: int = 0
    faults: list[Fault] = field(default_factory=list)
    completed_s: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the job completed and every check held."""
        return self.completed_s is not None and bool(self.checks) and all(self.checks.values())

    def result(self) -> dict[str, Any]:
        """The `RESULT` document."""
        return {
            "job_id": self.job_id,
            "reviews": self.reviews,
            "faults": [f.__dict__ for f in self.faults],
            "completed_s": self.completed_s,
            "checks": self.checks,
            "details": self.details,
            "ok": self.ok,
            "cores": os.cpu_count(),
        }


class Client:
    """The API as a patient client sees it: every call retried through outages."""

    def __init__(self, url: str, key: str, deadline: float) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.deadline = deadline

    def call(self, method: str, path: str, ok: Sequence[int], **kw: Any) -> httpx.Response:
        """`method path` until it answers one of `ok` (5xx, 429 and refused connections
        are waited out; any other answer is an error)."""
        delay = 0.2
        while True:
            try:
                resp = self.http.request(method, path, **kw)
                if resp.status_code in ok:
                    return resp
                if resp.status_code < 500 and resp.status_code != 429:
                    raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
            except httpx.TransportError:
                pass
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{method} {path}: no answer before the deadline")
            time.sleep(delay)
            delay = min(delay * 2, 3.0)

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


def inject(stack: Stack, kind: str, replicas: int, outage_s: float, rng: random.Random) -> str:
    """Inject one fault and repair it (see the module docstring); what was hit."""
    if kind == "kill":
        stage = rng.choice(SCALABLE)
        victim = rng.choice(stack.replicas(stage) or [stage])
        stack.kill_service(victim)
        stack.start_service(victim)
        return victim
    if kind == "scale":
        stage = rng.choice(SCALABLE)
        stack.scale(stage, replicas + 1)
        time.sleep(outage_s)  # let it take partitions and work
        stack.scale(stage, replicas, sig=signal.SIGKILL)
        return f"{stage} {replicas}->{replicas + 1}->{replicas}"
    if kind in ("broker", "redis"):
        name = "kafka" if kind == "broker" else "redis"
        if stack.service_pid(name) is None:
            raise RuntimeError(f"{name} is not run by this stack: cannot inject {kind}")
        stack.kill_service(name)
        time.sleep(outage_s)
        stack.up(services=False)
        return name
    if kind == "postgres":
        stack.stop_service("postgres", sig=signal.SIGQUIT, timeout=30)  # immediate shutdown
        time.sleep(outage_s)
        stack.up(services=False)
        return "postgres"
    raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")


def _scalar(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check(
    database_url: str, job_id: str, reviews: int, lag: Callable[[], int]
) -> tuple[dict[str, bool], dict[str, Any]]:
    """The end-of-run checks (see the module docstring) and the counts behind them."""
    with psycopg.connect(database_url) as conn:
        counts: dict[str, Any] = {
            table: _scalar(conn, f"SELECT count(*) FROM {table} WHERE job_id = %s", job_id)
            for table in ("reviews", "translations", "review_insights", "review_themed", "insights")
        }
        counts["distinct_translated"] = _scalar(
            conn, "SELECT count(DISTINCT review_id) FROM translations WHERE job_id = %s", job_id
        )
        counts["theme_members"] = _scalar(
            conn,
            "SELECT count(*) FROM theme_members m JOIN insights i ON i.id = m.insight_id "
            "WHERE i.job_id = %s",
            job_id,
        )
        counts["insights_without_theme"] = _scalar(
            conn,
            "SELECT count(*) FROM insights i WHERE i.job_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM theme_members m WHERE m.insight_id = i.id)",
            job_id,
        )
        # Two insights of one review on one sentence span would be a doubled analysis
        # (a retry that got a different answer and kept both).
        counts["doubled_insights"] = _scalar(
            conn,
            "SELECT count(*) FROM (SELECT 1 FROM insights WHERE job_id = %s "
            "GROUP BY review_id, dimension, quote_start, quote_end HAVING count(*) > 1) d",
            job_id,
        )
        counts["dead_letters"] = _scalar(
            conn, "SELECT count(*) FROM dead_letters WHERE job_id = %s", job_id
        )
        row = conn.execute(
            "SELECT status, coverage FROM reports WHERE job_id = %s", (job_id,)
        ).fetchone()
    counts["report"] = list(row) if row else None
    counts["lag"] = lag()
    checks = {
        "every review stored once": counts["reviews"] == reviews,
        "every review translated once": counts["translations"]
        == counts["distinct_translated"]
        == reviews,
        "every review analysed once": counts["review_insights"] == reviews,
        "every review themed once": counts["review_themed"] == reviews,
        "every insight in exactly one theme": counts["theme_members"] == counts["insights"]
        and counts["insights_without_theme"] == 0,
        "no insight doubled": counts["doubled_insights"] == 0,
        "nothing dead-lettered": counts["dead_letters"] == 0,
        "final report covers the job": counts["report"] == ["completed", 1.0],
        "no consumer lag left": counts["lag"] == 0,
    }
    return checks, counts


def _total_lag(stack: Stack, settle_s: float = 60.0) -> int:
    """The stages' summed consumer lag, once it is zero (or after `settle_s`)."""
    import asyncio

    from services.lag_exporter.core import GroupFilter, lag_rows
    from services.lag_exporter.kafka import KafkaLagSource

    env = stack.env()
    prefix = env.get("VOC_TOPIC_PREFIX", "voc.")

    async def once() -> int:
        source = KafkaLagSource(env["KAFKA_BOOTSTRAP_SERVERS"], client_id="voc-chaos")
        await source.start()
        try:
            snap = await source.snapshot(GroupFilter())
        finally:
            await source.close()
        return sum(
            r.lag or 0
            for r in lag_rows(snap)
            if r.group.startswith(prefix) and r.group[len(prefix) :].split(".")[0] in GROUPS
        )

    deadline = time.monotonic() + settle_s
    while True:
        lag = asyncio.run(once())
        if lag == 0 or time.monotonic() > deadline:
            return lag
        time.sleep(2.0)


def run(
    stack: Stack,
    *,
    reviews: int,
    replicas: int,
    faults: Sequence[str],
    outage_s: float,
    timeout_s: float,
    latency_ms: str = "100-400",
    files: Sequence[str] = (),
    seed: int | None = None,
) -> ChaosRun:
    """One chaos run against `stack` (see the module docstring)."""
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown} (known: {', '.join(FAULTS)})")
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    env = stack.env()
    key = stack.create_api_key(f"chaos-{tag}")
    out = ChaosRun(reviews=reviews)
    _say(f"chaos: {replicas} replicas per stage, the model answers in {latency_ms} ms")
    for stage in SCALABLE:
        stack.scale(stage, replicas)
    fake = httpx.Client(base_url=env["VOC_FAKE_LLM_URL"], headers=admin_headers(), timeout=10)
    previous = fake.get("/admin/config").json()
    fake.post("/admin/config", json={"latency_ms": latency_ms}).raise_for_status()
    started = time.monotonic()
    api = Client(env["VOC_API_URL"], key, started + timeout_s)
    try:
        rows = review_rows(reviews, files, tag)
        job = api.call(
            "POST", "/v1/jobs", (201,), json={"product": f"chaos {tag}", "target_language": "en"}
        ).json()
        out.job_id = job["id"]
        _say(f"chaos: job {out.job_id}, {reviews} reviews, faults: {', '.join(faults)}")
        size = -(-len(rows) // (len(faults) + 1))
        waves = [rows[i : i + size] for i in range(0, len(rows), size)]
        for n, wave in enumerate(waves):
            _upload(api, out.job_id, wave)
            if n < len(faults):
                t0 = time.monotonic()
                target = inject(stack, faults[n], replicas, outage_s, rng)
                fault = Fault(
                    faults[n], target, round(t0 - started, 1), round(time.monotonic() - t0, 1)
                )
                out.faults.append(fault)
                _say(
                    f"  fault {n + 1}/{len(faults)} after wave {n + 1}/{len(waves)}: "
                    f"{fault.kind} {target} at {fault.at_s}s (repaired in {fault.took_s}s)"
                )
                _say(f"  {_progress(api, out.job_id)}")
        api.call("POST", f"/v1/jobs/{out.job_id}/seal", (200, 202))
        last = ""
        while time.monotonic() < started + timeout_s:
            status = api.call("GET", f"/v1/jobs/{out.job_id}", (200,)).json()
            line = f"{status['status']} {status.get('counts', {})}"
            if line != last:
                _say(f"  {time.monotonic() - started:6.1f}s  {line}")
                last = line
            if status["status"] == "completed":
                out.completed_s = round(time.monotonic() - started, 1)
                break
            if status["status"] in ("failed", "cancelled"):
                break
            time.sleep(1.0)
    finally:
        api.close()
        keys = ("latency_min_ms", "latency_max_ms")
        try:
            fake.post("/admin/config", json={k: previous[k] for k in keys if k in previous})
        finally:
            fake.close()
    if out.completed_s is not None:
        time.sleep(3.0)  # the last commits and the report's events
        out.checks, out.details = check(
            env["DATABASE_URL"], out.job_id, reviews, lambda: _total_lag(stack)
        )
    for stage in SCALABLE:
        stack.scale(stage, 1)
    return out


def _upload(api: Client, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
    for i in range(0, len(rows), UPLOAD_ROWS):
        body = b"\n".join(orjson.dumps(r) for r in rows[i : i + UPLOAD_ROWS])
        api.call(
            "POST",
            f"/v1/jobs/{job_id}/reviews",
            (200, 201, 202),
            content=body,
            headers={"content-type": "application/x-ndjson"},
        )


def _progress(api: Client, job_id: str) -> str:
    counts = api.call("GET", f"/v1/jobs/{job_id}", (200,)).json().get("counts", {})
    keys = ("ingested", "translated", "insights", "themed")
    return "progress: " + ", ".join(f"{k} {counts.get(k)}" for k in keys)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m voc.chaos`: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("VOC_PROFILE", "test"))
    p.add_argument("--reviews", type=int, default=2000)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--faults", default=DEFAULT_FAULTS)
    p.add_argument("--latency-ms", default="100-400", help="the fake model's answer time")
    p.add_argument("--outage", type=float, default=4.0, help="seconds an outage lasts")
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--file", action="append", default=[], help="CSV of reviews (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    stack = Stack(profile=args.profile)
    result = run(
        stack,
        reviews=args.reviews,
        replicas=args.replicas,
        faults=[f.strip() for f in args.faults.split(",") if f.strip()],
        latency_ms=args.latency_ms,
        outage_s=args.outage,
        timeout_s=args.timeout,
        files=args.file,
        seed=args.seed,
    )
    for name, held in result.checks.items():
        _say(f"  {'ok  ' if held else 'FAIL'} {name}")
    if result.completed_s is None:
        _say("chaos: the job did not complete")
    _say("RESULT " + orjson.dumps(result.result()).decode())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
