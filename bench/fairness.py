"""`make bench-fairness`: a small job of tenant B, alone and while tenant A's big job runs.

What a tenant with a small job must not notice is another tenant's big one. The fake LLM is
set to `--rps` requests/s (the services' limiter must use the same `VOC_LLM_RPS`) and
`--latency-ms`; then:

1. *alone*: tenant B submits an `--small`-review job (default 1,000), seals it and waits
   for `completed`;
2. *beside A*: tenant A submits a `--big`-review job (default 50,000) and seals it; once
   A's analysis is under way (its first insights are stored), B submits another
   `--small`-review job (fresh texts, so no cache answers) and waits for `completed`,
   while A keeps running; A's progress at that moment is printed, to show it was not done;
3. A's job is deleted (the stages drop its remaining records) and the stack drains.

Reviews are the shared MARC samples when present (cycled with unique ids and a run tag),
else generated. The goal is B's time beside A within 1.2x of its time alone.

    python -m bench.fairness [--small 1000] [--big 50000] [--rps 200] [--latency-ms 300-1500]

The last line is `RESULT {json}` with alone_s, beside_s, ratio, A's progress when B
completed, provider 429s, how busy the machine's CPU was during each of B's runs and the
core count.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import uuid
from typing import Any

import httpx
import orjson

from bench.e2e import review_rows
from voc.stack import Stack

GOAL = 1.2


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Tenant:
    """An API client with its own tenant's key."""

    def __init__(self, url: str, key: str, name: str) -> None:
        self.name = name
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def submit(self, n: int, tag: str) -> str:
        """Create a job of `n` reviews (texts tagged `tag`), upload it and seal it."""
        resp = self.http.post(
            "/v1/jobs", json={"product": f"bench-fairness {tag}", "target_language": "en"}
        )
        resp.raise_for_status()
        job_id = str(resp.json()["id"])
        rows = review_rows(n, [], tag)
        while chunk := list(itertools.islice(rows, 1000)):
            r = self.http.post(
                f"/v1/jobs/{job_id}/reviews",
                content=b"\n".join(orjson.dumps(r) for r in chunk),
                headers={"content-type": "application/x-ndjson"},
            )
            r.raise_for_status()
        self.http.post(f"/v1/jobs/{job_id}/seal").raise_for_status()
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/jobs/{job_id}")
        resp.raise_for_status()
        return dict(resp.json())

    def delete(self, job_id: str) -> None:
        self.http.delete(f"/v1/jobs/{job_id}")

    def close(self) -> None:
        self.http.close()


def _progress(job: dict[str, Any]) -> str:
    c = job.get("counts", {})
    return (
        f"{job.get('status')}: ingested {c.get('ingested')} translated {c.get('translated')} "
        f"insights {c.get('insights')} themed {c.get('themed')}"
    )


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat's `cpu` line."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time that was busy between two `cpu_times`."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else 0.0


def _marks(milestones: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in milestones.items())


def run_small(
    b: Tenant, n: int, timeout_s: float, watch: tuple[Tenant, str] | None
) -> tuple[float, dict[str, float]]:
    """Submit and follow one of B's jobs to `completed`: its time from the first request,
    and when (seconds from the first request) each stage had all of its reviews done and
    the job reached each status, to show where the time goes."""
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    job_id = b.submit(n, tag)
    milestones: dict[str, float] = {"submitted": round(time.monotonic() - started, 1)}
    while time.monotonic() - started < timeout_s:
        job = b.job(job_id)
        now = round(time.monotonic() - started, 1)
        for stage, doc in job.get("stages", {}).items():
            if stage not in milestones and int(doc.get("done", 0)) >= n:
                milestones[stage] = now
        milestones.setdefault(str(job["status"]), now)
        if job["status"] == "completed":
            return time.monotonic() - started, milestones
        if job["status"] in ("failed", "deleted"):
            raise RuntimeError(f"B's job {job_id} ended {job['status']}")
        line = f"\r  B {time.monotonic() - started:6.1f}s  {_progress(job)}"
        if watch is not None:
            line += f"  | A {_progress(watch[0].job(watch[1]))}"
        sys.stdout.write(line + "   ")
        sys.stdout.flush()
        time.sleep(0.5)
    raise TimeoutError(f"B's job {job_id} did not complete in {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=1_000, help="reviews of tenant B's job")
    p.add_argument("--big", type=int, default=50_000, help="reviews of tenant A's job")
    p.add_argument("--rps", type=float, default=200.0)
    p.add_argument("--latency-ms", default="300-1500")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--profile", default=os.environ.get("VOC_PROFILE", "dev"), help="local stack")
    args = p.parse_args(argv)

    stack = Stack(profile=args.profile)
    env = stack.env()
    fake_url = env.get("VOC_FAKE_LLM_URL")
    if not fake_url:
        _say("bench-fairness needs the stack's fake LLM (VOC_FAKE_LLM_URL)")
        return 2
    run = uuid.uuid4().hex[:8]
    a = Tenant(env["VOC_API_URL"], stack.create_api_key(f"bench-fair-a-{run}"), "A")
    b = Tenant(env["VOC_API_URL"], stack.create_api_key(f"bench-fair-b-{run}"), "B")
    fake = httpx.Client(base_url=fake_url, timeout=10)
    previous = fake.get("/admin/config").json()
    fake.post(
        "/admin/config", json={"rate_limit_rps": args.rps, "latency_ms": args.latency_ms}
    ).raise_for_status()
    fake.post("/stats/reset").raise_for_status()
    big: str | None = None
    try:
        _say(f"{os.cpu_count()} cores; LLM at {args.rps:g} req/s, {args.latency_ms} ms")
        _say(f"tenant B alone: {args.small:,} reviews")
        cpu0 = cpu_times()
        alone, alone_marks = run_small(b, args.small, args.timeout, None)
        cpu_alone = busy_share(cpu0, cpu_times())
        _say(f"\n  alone: completed in {alone:.1f} s; {_marks(alone_marks)}")

        _say(f"tenant A: {args.big:,} reviews")
        started = time.monotonic()
        big = a.submit(args.big, uuid.uuid4().hex[:8])
        _say(f"  A submitted and sealed in {time.monotonic() - started:.1f} s")
        while not a.job(big).get("counts", {}).get("insights"):
            if time.monotonic() - started > args.timeout:
                raise TimeoutError("A's analysis did not start")
            time.sleep(0.5)
        _say(f"  A under way after {time.monotonic() - started:.1f} s; tenant B again")
        cpu0 = cpu_times()
        beside, beside_marks = run_small(b, args.small, args.timeout, (a, big))
        cpu_beside = busy_share(cpu0, cpu_times())
        a_then = a.job(big)
        _say(f"\n  beside A: completed in {beside:.1f} s; A then {_progress(a_then)}")
        _say(f"  beside A: {_marks(beside_marks)}")
        stats = fake.get("/stats").json()
        result = {
            "small": args.small,
            "big": args.big,
            "alone_s": round(alone, 1),
            "beside_s": round(beside, 1),
            "ratio": round(beside / alone, 3),
            "milestones_alone_s": alone_marks,
            "milestones_beside_s": beside_marks,
            "goal": GOAL,
            "a_status_when_b_done": a_then.get("status"),
            "a_insights_when_b_done": a_then.get("counts", {}).get("insights"),
            "provider_429s": int(stats.get("rate_limited", 0)),
            "limit_rps": args.rps,
            # how busy the machine's cores were while B ran: beside A, B's stages share
            # them with A's, which no LLM-quota fairness can give back
            "cpu_busy_alone": cpu_alone,
            "cpu_busy_beside": cpu_beside,
            "cores": os.cpu_count(),
        }
        _say(
            f"machine CPU busy while B ran: alone {cpu_alone:.0%}, beside A {cpu_beside:.0%} "
            f"of {os.cpu_count()} cores"
        )
        _say(f"B beside A / B alone: {result['ratio']} (goal <= {GOAL})")
        _say("RESULT " + orjson.dumps(result).decode())
        return 0
    finally:
        if big is not None:
            a.delete(big)
        keys = ("rate_limit_rps", "latency_min_ms", "latency_max_ms")
        fake.post("/admin/config", json={k: previous[k] for k in keys if k in previous})
        fake.close()
        a.close()
        b.close()


if __name__ == "__main__":
    sys.exit(main())
