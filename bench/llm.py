"""How much of the LLM quota the shared limiter uses, and whether the provider says 429.

    python -m bench.llm [-P 4] [-C 64] [--rps 200] [--seconds 60] [--latency-ms 300-1500]

Starts a redis-server and the fake LLM (server-side limit `--rps`, burst `--burst`, the
given latency) unless `REDIS_URL` / `VOC_FAKE_LLM_URL` point at running ones (then the
fake is reconfigured through /admin/config). P processes x C concurrent callers make real
`LLM.complete()` calls (insight prompt, cache off) through the shared Redis limiter set
to the same rate. After a warm-up, over `--seconds` of steady state, it reports requests/s
as a fraction of the limit (from the limiter's grants, cross-checked with the fake's
arrivals), provider 429s, the p50/p99 limiter wait and the core count. Last line:
`RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from voc.fake_llm import launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def _start_fake(args: argparse.Namespace) -> tuple[str, subprocess.Popen[bytes]]:
    extra = ["--rps", str(args.rps), "--latency-ms", args.latency_ms]
    if args.burst:
        extra += ["--burst", str(args.burst)]
    proc, url = launch.spawn(*extra)
    return url, proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def worker(
    index: int,
    redis_url: str,
    llm_kw: dict[str, Any],
    concurrency: int,
    barrier: Any,
    run_s: float,
) -> dict[str, Any]:
    """One process: once every process is ready (`barrier`), `concurrency` callers make
    insight calls for `run_s` seconds. Returns its start time, grants (go_at, waited_s),
    send lateness and error counts."""
    import uvloop
    from prometheus_client import CollectorRegistry
    from redis.asyncio import Redis

    from shared.llm.client import LLM
    from shared.llm.errors import LLMError
    from shared.llm.metrics import llm_metrics
    from shared.llm.ratelimit import RateLimiter, Reservation
    from shared.llm.settings import LLMSettings, StageConfig
    from shared.prompts import insight

    grants: list[tuple[float, float]] = []
    lateness: list[float] = []

    class RecordingLimiter(RateLimiter):
        async def acquire(
            self, cfg: StageConfig, cost: int, *, job_id: str | None = None, deadline: float
        ) -> Reservation:
            res = await super().acquire(cfg, cost, job_id=job_id, deadline=deadline)
            grants.append((res.go_at, res.waited_s))
            if res.go_at > 0:  # 0: granted by the local fallback, no Redis time
                lateness.append(time.time() - res.go_at)
            return res

    async def main() -> dict[str, Any]:
        redis = Redis.from_url(redis_url)
        settings = LLMSettings(**llm_kw)
        metrics = llm_metrics(CollectorRegistry())
        llm = LLM(
            settings, redis, metrics=metrics, limiter=RecordingLimiter(redis, settings, metrics)
        )
        errors: dict[str, int] = {}
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        started = time.time()
        cpu0 = time.process_time()
        stop_at = started + run_s

        async def caller(c: int) -> None:
            k = 0
            while time.time() < stop_at:
                k += 1
                text = (
                    f"Battery died after {k} days (caller {index}-{c}). The price was "
                    "great though! Delivery took a week."
                )
                inp = {
                    "review_id": f"{index}-{c}-{k}",
                    "text": text,
                    "rating": 2,
                    "dimensions": [
                        {"name": "Battery life", "description": ""},
                        {"name": "Price and value", "description": ""},
                        {"name": "Delivery and shipping", "description": ""},
                    ],
                    "five_w": {},
                }
                try:
                    await llm.complete(
                        "insight",
                        insight.PROMPT,
                        inp,
                        insight.InsightOutput,
                        cache=False,
                        validate=insight.check_quotes(text),
                    )
                except LLMError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        got_429 = (
            metrics.registry.get_sample_value(
                "voc_llm_errors_total",
                {"stage": "insight", "model": settings.model, "kind": "rate_limited"},
            )
            or 0.0
        )
        stale = (
            metrics.registry.get_sample_value(
                "voc_llm_ratelimit_stale_slots_total",
                {"stage": "insight", "model": settings.model},
            )
            or 0.0
        )
        await llm.aclose()
        await redis.aclose()
        return {
            "stale_slots": int(stale),
            "grants": grants,
            "errors": errors,
            "client_429s": int(got_429),
            "lateness": lateness,
            "started": started,
            "cpu_s": time.process_time() - cpu0,
            "wall_s": time.time() - started,
        }

    return uvloop.run(main())


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values` (0 when empty)."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-P", "--processes", type=int, default=4)
    ap.add_argument("-C", "--concurrency", type=int, default=64)
    ap.add_argument("--rps", type=float, default=200.0)
    ap.add_argument(
        "--burst",
        type=float,
        default=0.0,
        help="server-side bucket depth (default: the fake's, rps/10)",
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--latency-ms", default="300-1500")
    ap.add_argument(
        "--timeline", action="store_true", help="print grants, arrivals and waits per second"
    )
    args = ap.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    redis_url = os.environ.get("REDIS_URL")
    fake_url = os.environ.get("VOC_FAKE_LLM_URL")
    try:
        if not redis_url:
            redis_url, p = _start_redis()
            procs.append(p)
        if not fake_url:
            fake_url, p = _start_fake(args)
            procs.append(p)
        fake_url = fake_url.rstrip("/").removesuffix("/v1")
        conf: dict[str, Any] = {
            "rate_limit_rps": args.rps,
            "latency_ms": args.latency_ms,
            "rate_limit_burst": args.burst,
        }
        httpx.post(fake_url + "/admin/config", json=conf, timeout=10).raise_for_status()
        httpx.post(fake_url + "/stats/reset", timeout=10).raise_for_status()

        llm_kw = {
            "base_url": fake_url + "/v1",
            "api_key": "sk-bench",
            "model": "voc-fake-1",
            "rps": args.rps,
            "timeout_s": 10.0,
            "key_prefix": f"bench-{uuid.uuid4().hex[:8]}",
            "stages": {},
        }
        mono_offset = time.time() - time.monotonic()
        load_before = os.getloadavg()
        print(
            f"bench.llm: {args.processes} processes x {args.concurrency} callers, limit "
            f"{args.rps:g} req/s, latency {args.latency_ms} ms, warm-up {args.warmup:g} s, "
            f"measuring {args.seconds:g} s ...",
            flush=True,
        )
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager, ctx.Pool(args.processes) as pool:
            barrier = manager.Barrier(args.processes)
            run_s = args.warmup + args.seconds + 1.0
            results = pool.starmap(
                worker,
                [
                    (i, redis_url, llm_kw, args.concurrency, barrier, run_s)
                    for i in range(args.processes)
                ],
            )
        load_after = os.getloadavg()
        stats = httpx.get(fake_url + "/stats", params={"arrivals": 1}, timeout=30).json()
    finally:
        for p in procs:
            _stop(p)

    start_at = max(r["started"] for r in results)
    window = (start_at + args.warmup, start_at + args.warmup + args.seconds)
    grants = [g for r in results for g in r["grants"]]
    steady = [(go, w) for go, w in grants if window[0] <= go < window[1]]
    achieved = len(steady) / args.seconds
    waits_ms = [w * 1000 for _, w in steady]
    arrivals = [a + mono_offset for a in stats.get("arrivals", [])]
    server_rps = sum(window[0] <= a < window[1] for a in arrivals) / args.seconds
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    result = {
        "utilization": round(achieved / args.rps, 4),
        "achieved_rps": round(achieved, 2),
        "server_rps": round(server_rps, 2),
        "limit_rps": args.rps,
        "provider_429s": sum(
            window[0] <= t + mono_offset < window[1] for t in stats.get("rate_limited_at", [])
        ),
        "provider_429s_total": int(stats.get("rate_limited", 0)),
        "stale_slots": sum(r["stale_slots"] for r in results),
        "client_429s": sum(r["client_429s"] for r in results),
        "wait_p50_ms": round(percentile(waits_ms, 0.5), 1),
        "wait_p99_ms": round(percentile(waits_ms, 0.99), 1),
        "wait_mean_ms": round(statistics.fmean(waits_ms), 1) if waits_ms else 0.0,
        "errors": errors,
        "processes": args.processes,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "server_burst": args.burst or max(1.0, args.rps / 10),
        "cores": os.cpu_count(),
        "loadavg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    if args.timeline:
        print("  s  grants  arrivals  wait_p50_ms")
        for sec in range(int(window[0] - args.warmup) - 1, int(window[1]) + 1):
            g = [w for go, w in grants if sec <= go < sec + 1]
            n_arr = sum(sec <= a < sec + 1 for a in arrivals)
            print(
                f"{sec - int(start_at):3d}  {len(g):6d}  {n_arr:8d}  "
                f"{percentile([w * 1000 for w in g], 0.5):10.0f}"
            )
    print(
        f"achieved {achieved:.1f} req/s = {100 * achieved / args.rps:.1f}% of the "
        f"{args.rps:g} req/s limit (fake saw {server_rps:.1f} req/s)"
    )
    late = [x * 1000 for r in results for x in r["lateness"]]
    print(
        f"send lateness behind the granted time (CPU contention): p50 "
        f"{percentile(late, 0.5):.1f} ms, p99 {percentile(late, 0.99):.1f} ms, max "
        f"{max(late, default=0):.1f} ms"
    )
    cpu = [r["cpu_s"] / max(1e-9, r["wall_s"]) for r in results]
    print(f"client CPU per process: {', '.join(f'{100 * c:.0f}%' for c in cpu)} of a core")
    print(f"slots given up by late callers: {result['stale_slots']}")
    print(
        f"provider 429s: {result['provider_429s']} in steady state "
        f"({result['provider_429s_total']} including warm-up), errors: {errors or 'none'}"
    )
    print(
        f"limiter wait p50 {result['wait_p50_ms']} ms, p99 {result['wait_p99_ms']} ms; "
        f"cores: {result['cores']}"
    )
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
