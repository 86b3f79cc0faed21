"""`make bench-e2e`: one N-review job through the whole pipeline against the LLM quota.

Sets the stack's fake LLM to a server-side limit of R requests/s and 300-1500 ms latency,
submits N reviews (the shared MARC samples when present, cycled with unique ids and a run
tag so the LLM cache cannot answer; else generated), seals the job and follows it to
`report_ready` and `completed`. The lower bound is what the quota allows: total LLM calls
/ R. The services' limiter must be set to the same R (`VOC_LLM_RPS`, default 200).

    python -m bench.e2e [-n 10000] [--rps 200] [--latency-ms 300-1500] [--file a.csv ...]
                        [--py-spy DIR] [--dump series.json]

The last line is `RESULT {json}` with report_ready_s, completed_s, bound_s, llm_calls,
ratio (completed_s / bound_s), provider_429s, cores, each process's peak RSS and CPU
seconds (`processes`) and `breakdown`: where the time above the bound goes, from the
fake LLM's arrival times and the job's per-stage progress -

- `fill_s`: from the first request until the provider saw its first call (upload, ingest,
  learn's sample barrier and its one call);
- `ramp_s`: from there until the first second in which the provider saw at least 90% of
  the quota (learn's answer, translate's first packs, insight's first batches);
- `short_s`: the quota left unused inside the busy span (calls the provider could have
  taken in seconds below the quota, divided by the quota; a call it refused with 429
  counts as unused), split by the stage that held the rest back (`short_by_stage_s`: the
  first of translate, insight, theme with reviews left that second); `refused_s` is
  the part the 429s took (their count divided by the quota);
- `drain_s`: from the provider's last call until `completed` (theme's and the report's
  writes, the 100% trigger).
"""

from __future__ import annotations

import argparse
import csv
import glob
import itertools
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.ingest import Profiler
from bench.stackwatch import Watch
from voc.stack import Stack

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "reviews"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def review_rows(n: int, files: list[str], tag: str) -> Iterator[dict[str, Any]]:
    """N rows: the files' text/rating/language cycled with unique ids, else generated."""
    paths = files or sorted(glob.glob(str(SHARED_DATA / "*.csv")))
    source: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                item: dict[str, Any] = {"text": row["text"], "rating": row.get("rating") or None}
                if row.get("language"):
                    item["language"] = row["language"]
                source.append(item)
    if not source:
        source = [
            {
                "text": f"Generated review {i}: the battery lasts long but the fit is loose.",
                "rating": 1 + i % 5,
                "language": "en",
            }
            for i in range(500)
        ]
    for i, row in enumerate(itertools.islice(itertools.cycle(source), n)):
        yield {**row, "review_id": f"{tag}-{i}", "text": f"{row['text']} [{tag}-{i}]"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--rps", type=float, default=200.0)
    p.add_argument("--latency-ms", default="300-1500")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="record py-spy profiles of insight and theme (the busiest stages) into DIR",
    )
    p.add_argument(
        "--dump", help="write the job's progress samples and the provider's arrivals here (JSON)"
    )
    args = p.parse_args(argv)

    stack = Stack(profile=os.environ.get("VOC_PROFILE", "dev"))
    env = stack.env()
    fake_url = env.get("VOC_FAKE_LLM_URL")
    if not fake_url:
        _say("bench-e2e needs the stack's fake LLM (VOC_FAKE_LLM_URL)")
        return 2
    tag = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {env['VOC_API_KEY']}"}
    with (
        httpx.Client(base_url=env["VOC_API_URL"], headers=headers, timeout=120) as api,
        httpx.Client(base_url=fake_url, timeout=10) as fake,
    ):
        previous = fake.get("/admin/config").json()
        fake.post(
            "/admin/config", json={"rate_limit_rps": args.rps, "latency_ms": args.latency_ms}
        ).raise_for_status()
        fake.post("/stats/reset").raise_for_status()
        try:
            spied = {n: stack.service_pid(n) for n in ("insight", "theme")}
            pids = {n: pid for n, pid in spied.items() if pid is not None}
            with Watch.stack(stack) as watch, Profiler(args.py_spy, stack, pids=pids):
                result = _run(api, fake, args, tag)
            # CPU seconds per process: on 2 cores, what the stack spends beside the LLM
            # calls decides how close to the quota's bound the job can get
            watch.print("bench-e2e")
            result["processes"] = watch.report()
            result["cores"] = os.cpu_count()
            _say("RESULT " + orjson.dumps(result).decode())
            return 0 if result["completed_s"] is not None else 1
        finally:
            keys = ("rate_limit_rps", "latency_min_ms", "latency_max_ms")
            fake.post("/admin/config", json={k: previous[k] for k in keys if k in previous})


def _run(
    api: httpx.Client, fake: httpx.Client, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    """Submit, seal and follow one job; print its figures and return the RESULT fields."""
    resp = api.post("/v1/jobs", json={"product": f"bench-e2e {tag}", "target_language": "en"})
    resp.raise_for_status()
    job_id = resp.json()["id"]
    started = time.monotonic()
    rows = review_rows(args.n, args.file, tag)
    accepted = 0
    while chunk := list(itertools.islice(rows, 1000)):
        body = b"\n".join(orjson.dumps(r) for r in chunk)
        r = api.post(
            f"/v1/jobs/{job_id}/reviews",
            content=body,
            headers={"content-type": "application/x-ndjson"},
        )
        r.raise_for_status()
        accepted += r.json()["accepted"]
    api.post(f"/v1/jobs/{job_id}/seal").raise_for_status()
    _say(f"job {job_id}: {accepted} reviews submitted in {time.monotonic() - started:.1f} s")
    ready_s = completed_s = None
    job: dict[str, Any] = {}
    # (seconds since start, per-stage reviews done), to tell which stage a slow second had
    progress: list[tuple[float, dict[str, int]]] = []
    while time.monotonic() - started < args.timeout:
        job = api.get(f"/v1/jobs/{job_id}").json()
        now = time.monotonic() - started
        progress.append(
            (now, {k: int(v.get("done", 0)) for k, v in (job.get("stages") or {}).items()})
        )
        if ready_s is None and job["status"] in ("report_ready", "completed"):
            ready_s = now
        if job["status"] == "completed":
            completed_s = now
            break
        c = job["counts"]
        sys.stdout.write(
            f"\r  {now:6.1f}s  ingested {c['ingested']}  translated {c['translated']}  "
            f"insights {c['insights']}  themed {c['themed']}  dead {c['dead_lettered']}   "
        )
        sys.stdout.flush()
        time.sleep(1.0)
    _say("")
    stats = fake.get("/stats", params={"arrivals": 1}).json()
    # The fake LLM stamps arrivals with this machine's monotonic clock, as `started` is.
    arrivals = sorted(a - started for a in stats.get("arrivals", []) if a >= started)
    refused = sorted(a - started for a in stats.get("rate_limited_at", []) if a >= started)
    by_stage = {k: int(v.get("requests", 0)) for k, v in (stats.get("by_stage") or {}).items()}
    calls = sum(by_stage.values())
    bound = calls / args.rps
    result = {
        "reviews": accepted,
        "report_ready_s": round(ready_s, 1) if ready_s is not None else None,
        "completed_s": round(completed_s, 1) if completed_s is not None else None,
        "bound_s": round(bound, 1),
        "ratio": round(completed_s / bound, 3) if completed_s and bound else None,
        "llm_calls": calls,
        "llm_calls_by_stage": by_stage,
        "provider_429s": int(stats.get("rate_limited", 0)),
        "limit_rps": args.rps,
        "dead_lettered": job.get("counts", {}).get("dead_lettered"),
        "breakdown": breakdown(arrivals, progress, completed_s, args.rps, accepted, refused),
    }
    _say(
        f"report_ready after {result['report_ready_s']} s, completed after "
        f"{result['completed_s']} s; lower bound {result['bound_s']} s "
        f"({calls} LLM calls at {args.rps:g}/s); ratio {result['ratio']}"
    )
    _say(
        f"LLM calls by stage: {by_stage}; provider 429s: {result['provider_429s']}; "
        f"cores: {os.cpu_count()}"
    )
    b = result["breakdown"]
    if b:
        _say(
            f"above the bound: fill {b['fill_s']} s, ramp {b['ramp_s']} s, "
            f"quota unused {b['short_s']} s {b['short_by_stage_s']} (of which refused with "
            f"429: {b['refused_s']} s), drain {b['drain_s']} s"
        )
    if args.dump:
        series = {
            "started": started,
            "progress": progress,
            "stage_arrivals": stats.get("stage_arrivals", []),
            "rate_limited_at": stats.get("rate_limited_at", []),
        }
        Path(args.dump).write_bytes(orjson.dumps(series))
    return result


def breakdown(
    arrivals: list[float],
    progress: list[tuple[float, dict[str, int]]],
    completed_s: float | None,
    rps: float,
    reviews: int,
    refused: list[float] | None = None,
) -> dict[str, Any]:
    """Where the time above the quota's bound went (see the module docstring); {} when the
    job did not complete or the provider saw no call. `refused` are the arrivals the
    provider answered with 429: they took quota without doing work."""
    if not arrivals or completed_s is None:
        return {}
    first, last = arrivals[0], arrivals[-1]
    per_second: dict[int, int] = {}
    for a in arrivals:
        per_second[int(a - first)] = per_second.get(int(a - first), 0) + 1
    for a in refused or []:
        if a >= first:
            per_second[int(a - first)] = per_second.get(int(a - first), 0) - 1
    span = int(last - first) + 1
    full = next((s for s in range(span) if per_second.get(s, 0) >= 0.9 * rps), span)
    short: dict[str, float] = {}
    for sec in range(full, span - 1):  # the last, partial second is the drain's
        missing = max(0.0, rps - per_second.get(sec, 0)) / rps
        if missing:
            stage = _behind(progress, first + sec, reviews)
            short[stage] = short.get(stage, 0.0) + missing
    return {
        "fill_s": round(first, 1),
        "ramp_s": float(full),
        "short_s": round(sum(short.values()), 1),
        "short_by_stage_s": {k: round(v, 1) for k, v in sorted(short.items())},
        "refused_s": round(len(refused or []) / rps, 1),
        "drain_s": round(completed_s - last, 1),
    }


def _behind(progress: list[tuple[float, dict[str, int]]], at: float, reviews: int) -> str:
    """The first LLM stage, in pipeline order, with reviews still to do at `at` (the last
    sample before it): the one whose calls could have filled the quota - the stages after
    it are behind only because it is."""
    done: dict[str, int] = {}
    for t, stages in progress:
        if t > at:
            break
        done = stages
    for stage in ("translate", "insight", "theme"):
        if stage in done and done[stage] < reviews:
            return stage
    return "none"


if __name__ == "__main__":
    sys.exit(main())
