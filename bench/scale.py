"""`make bench-scale`: the same job on 1, 2 and 3 replicas per stage.

What partitions buy: with a slow model (the fake LLM answering in `--latency-ms`, as a
self-hosted server does) each replica's LLM concurrency is what bounds a stage, so adding
replicas should add throughput until the partitions (6 per topic) or the cores run out.
For each replica count the stack's stages are scaled (`Stack.scale`), `--jobs` jobs
sharing N reviews (the shared MARC samples when present, cycled with unique ids so no
cache answers) are submitted at once and followed to `completed`, and the reviews/s from
the first upload to the last job's completion are measured. Several jobs, because the
later topics (`insights.extracted`, `themes.extracted`) are keyed by job id, so one job
sits on one partition of those, and many jobs (tenants) are what replicas share there.

Each insight replica is given `--insight-concurrency` calls in flight (default 4, as a
replica of a slow self-hosted model is bounded by its own slots): that is what replicas
multiply. With the default 256 the stage is bound by the machine instead (2 cores: every
replica is one more process sharing them), and replicas add nothing; `--insight-concurrency
256` shows that too.

    python -m bench.scale [-n 600] [--jobs 6] [--replicas 1,2,3] [--latency-ms 400-600]
        [--insight-concurrency 4]

Prints one line per replica count and `RESULT {json}` with reviews/s per count, the
speed-up over one replica, and the core count. Compare the ratios, not the absolute
times: the machine is shared, and on 2 cores the CPU-bound parts stop scaling early.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

import httpx
import orjson

from bench.e2e import review_rows
from voc.stack import SCALABLE, Stack

UPLOAD_ROWS = 500


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_jobs(api: httpx.Client, jobs: list[list[dict[str, Any]]], timeout_s: float) -> float:
    """Seconds from the first upload to the last job's `completed`."""
    ids = []
    for _ in jobs:
        resp = api.post("/v1/jobs", json={"product": "bench-scale", "target_language": "en"})
        resp.raise_for_status()
        ids.append(resp.json()["id"])
    started = time.monotonic()
    for job_id, rows in zip(ids, jobs, strict=True):
        for i in range(0, len(rows), UPLOAD_ROWS):
            body = b"\n".join(orjson.dumps(r) for r in rows[i : i + UPLOAD_ROWS])
            api.post(
                f"/v1/jobs/{job_id}/reviews",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            ).raise_for_status()
        api.post(f"/v1/jobs/{job_id}/seal").raise_for_status()
    waiting = set(ids)
    while waiting and time.monotonic() - started < timeout_s:
        for job_id in sorted(waiting):
            status = api.get(f"/v1/jobs/{job_id}").json()["status"]
            if status == "completed":
                waiting.discard(job_id)
            elif status in ("failed", "cancelled"):
                raise RuntimeError(f"job {job_id} {status}")
        time.sleep(0.5)
    if waiting:
        raise TimeoutError(f"jobs {sorted(waiting)} not completed within {timeout_s}s")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.scale`: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=600, help="reviews in all")
    p.add_argument("--jobs", type=int, default=6, help="jobs at once (reviews split evenly)")
    p.add_argument("--replicas", default="1,2,3")
    p.add_argument("--latency-ms", default="400-600")
    p.add_argument("--insight-concurrency", type=int, default=4)
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--timeout", type=float, default=1200.0)
    args = p.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",") if x.strip()]

    stack = Stack(profile=os.environ.get("VOC_PROFILE", "dev"))
    env = stack.env()
    fake_url = env.get("VOC_FAKE_LLM_URL")
    if not fake_url:
        _say("bench-scale needs the stack's fake LLM (VOC_FAKE_LLM_URL)")
        return 2
    headers = {"Authorization": f"Bearer {env['VOC_API_KEY']}"}
    results: dict[str, float] = {}
    with (
        httpx.Client(base_url=env["VOC_API_URL"], headers=headers, timeout=120) as api,
        httpx.Client(base_url=fake_url, timeout=10) as fake,
    ):
        previous = fake.get("/admin/config").json()
        fake.post("/admin/config", json={"latency_ms": args.latency_ms}).raise_for_status()
        os.environ["VOC_INSIGHT_CONCURRENCY"] = str(args.insight_concurrency)
        stack.restart_service("insight")  # replica 1 with the bench's concurrency
        try:
            for n in counts:
                for stage in SCALABLE:
                    stack.scale(stage, n)
                time.sleep(5.0)  # let the groups settle on their new members
                rows = list(review_rows(args.n, args.file, uuid.uuid4().hex[:8]))
                jobs = [rows[j :: args.jobs] for j in range(args.jobs)]
                seconds = run_jobs(api, jobs, args.timeout)
                results[str(n)] = round(args.n / seconds, 1)
                _say(
                    f"{n} replica(s) per stage: {args.n} reviews in {args.jobs} jobs "
                    f"in {seconds:.1f}s "
                    f"= {results[str(n)]} reviews/s"
                )
        finally:
            for stage in SCALABLE:
                stack.scale(stage, 1)
            del os.environ["VOC_INSIGHT_CONCURRENCY"]
            stack.restart_service("insight")
            keys = ("latency_min_ms", "latency_max_ms")
            fake.post("/admin/config", json={k: previous[k] for k in keys if k in previous})
    base = results.get(str(counts[0])) or 0.0
    speedup = {k: round(v / base, 2) if base else None for k, v in results.items()}
    _say(
        "RESULT "
        + orjson.dumps(
            {
                "reviews": args.n,
                "jobs": args.jobs,
                "latency_ms": args.latency_ms,
                "insight_concurrency": args.insight_concurrency,
                "reviews_per_s": results,
                "speedup": speedup,
                "cores": os.cpu_count(),
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
