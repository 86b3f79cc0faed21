"""`make bench-api`: one uvicorn API process under a compiled load generator.

    python -m bench.api [--seconds 10] [--rate 2000] [--py-spy DIR] [--profile dev|test]

Starts its own `python -m services.api` (one uvicorn process, uvloop) on a free port with
the local stack's Postgres, Redis and Kafka (`make up`), the per-key rate limit raised out of
the way (it is still charged on every request: one Redis call), and the analysis stages
stopped (they are not what is measured). On a machine of 2+ cores the API is pinned to
core 0 and the load generators to core 1 (`taskset`), so the generator never takes the
server's CPU; with one core they share it (said in the output).

Scenarios, each measured twice: `wrk` (closed loop, 32 connections: the most the process
serves) and `hey -q` (open loop at `--rate` requests/s: the latency at that rate):
- create: `POST /v1/jobs`;
- status, cached: `GET /v1/jobs/{id}` of one job (a Redis GET per request);
- status, uncached: `GET /v1/jobs/{id}` cycling over the jobs created above, each seen
  once per several cache TTLs (wrk only: hey cannot vary the URL);
- upload: `POST /v1/jobs/{id}/reviews` of 1,000 NDJSON MARC rows (wrk, 4 connections).

The goal (SPEC): >= 2,000 requests/s for create and cached status, p99 < 20 ms at that
rate. The jobs it created are deleted at the end. Prints the core count, per-process peak
RSS and CPU, and last `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import celery_baseline
from bench.ingest import Profiler, load_rows, ndjson
from bench.stackwatch import (
    Proc,
    Watch,
    cores,
    cpu_seconds,
    pending_records,
    print_table,
    purge_jobs,
    say,
    stop_stages,
)
from voc import sysdeps
from voc.stack import ROOT, Stack

WRK_CONNECTIONS = 32
HEY_WORKERS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def _load_cpus(pin: bool) -> tuple[list[str], str]:
    """(prefix for load generators, description): core 1 when there are two or more."""
    if not pin:
        return [], "not pinned (--no-pin)"
    if cores() >= 2:
        return ["taskset", "-c", "1"], "API pinned to core 0, load generator to core 1"
    return [], "one core: API and load generator share it"


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles and non-2xx count from `wrk --latency` output."""
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = round(float(m.group(1))) if m else 0
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\b", text, re.M)
        out[f"p{pct}_ms"] = round(_ms(m.group(1), m.group(2)), 2) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    return out


def parse_hey(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles and status codes from `hey` output."""
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = round(float(m.group(1))) if m else 0
    for pct in ("50", "90", "99"):
        m = re.search(rf"\b{pct}%+ in ([\d.]+) secs", text)
        out[f"p{pct}_ms"] = round(float(m.group(1)) * 1000, 2) if m else None
    out["status"] = {c: int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    return out


class ApiProcess:
    """`python -m services.api` on a free port with the dev stack's environment."""

    def __init__(self, stack: Stack) -> None:
        self.env = stack.env()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiProcess:
        env = {
            **os.environ,
            **self.env,
            "VOC_SERVICE_NAME": "api-bench",
            "VOC_API_HOST": "127.0.0.1",
            "VOC_API_PORT": str(self.port),
            "VOC_API_RATE_LIMIT_PER_S": "1000000",
            "VOC_API_RATE_LIMIT_BURST": "1000000",
            "VOC_LOG_LEVEL": "WARNING",
        }
        env.pop("VOC_METRICS_PORT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.api"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit("the API did not become ready")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Load:
    """Runs wrk and hey (pinned) against the API and parses their output."""

    def __init__(
        self, api: ApiProcess, key: str, seconds: float, rate: float, tmp: Path, pin: bool
    ) -> None:
        self.api = api
        self.auth = f"Bearer {key}"
        self.seconds = seconds
        self.rate = rate
        self.tmp = tmp
        self.prefix, self.pinning = _load_cpus(pin)
        self.wrk = sysdeps.require("wrk", "wrk")
        self.hey = sysdeps.require("hey", "hey")

    def _script(self, name: str, lua: str) -> Path:
        path = self.tmp / f"{name}.lua"
        path.write_text(lua)
        return path

    def _cpu_per_request(self, out: dict[str, Any], cpu0: float, requests: int) -> None:
        """The API process's CPU per request: its capacity on one core, whatever the load
        on the machine (`capacity_rps`)."""
        cpu = cpu_seconds([self.api.pid]) - cpu0
        out["api_cpu_s"] = round(cpu, 3)
        if requests:
            out["cpu_us_per_request"] = round(1e6 * cpu / requests)
            out["capacity_rps"] = round(requests / cpu) if cpu else None

    def wrk_run(self, path: str, lua: str, connections: int = WRK_CONNECTIONS) -> dict[str, Any]:
        script = self._script(f"wrk-{uuid.uuid4().hex[:6]}", lua)
        cpu0 = cpu_seconds([self.api.pid])
        argv = [*self.prefix, self.wrk, "-t1", f"-c{connections}", f"-d{self.seconds:g}s"]
        out = subprocess.run(
            [*argv, "--latency", "-s", str(script), self.api.url + path],
            capture_output=True,
            text=True,
            check=True,
        )
        result = parse_wrk(out.stdout)
        self._cpu_per_request(result, cpu0, result["requests"])
        return result

    def hey_run(self, path: str, method: str = "GET", body: str | None = None) -> dict[str, Any]:
        per_worker = max(1.0, self.rate / HEY_WORKERS)
        argv = [*self.prefix, self.hey, "-z", f"{self.seconds:g}s", "-c", str(HEY_WORKERS)]
        argv += ["-q", f"{per_worker:g}", "-m", method, "-H", f"Authorization: {self.auth}"]
        if body is not None:
            argv += ["-T", "application/json", "-d", body]
        cpu0 = cpu_seconds([self.api.pid])
        out = subprocess.run(
            [*argv, self.api.url + path], capture_output=True, text=True, check=True
        )
        result = parse_hey(out.stdout)
        self._cpu_per_request(result, cpu0, sum(result["status"].values()))
        return result


def _lua_headers(auth: str, content_type: str | None = None) -> str:
    lines = [f'wrk.headers["Authorization"] = "{auth}"']
    if content_type:
        lines.append(f'wrk.headers["Content-Type"] = "{content_type}"')
    return "\n".join(lines) + "\n"


def _create_lua(auth: str, body: str) -> str:
    return (
        _lua_headers(auth, "application/json")
        + 'wrk.method = "POST"\n'
        + f"wrk.body = [[{body}]]\n"
    )


def _cycle_lua(auth: str, ids: Sequence[str]) -> str:
    table = ",".join(f'"{i}"' for i in ids)
    return (
        _lua_headers(auth)
        + f"local ids = {{{table}}}\nlocal i = 0\n"
        + "request = function()\n  i = i % #ids + 1\n"
        + '  return wrk.format("GET", "/v1/jobs/" .. ids[i])\nend\n'
    )


def _upload_lua(auth: str, body_file: Path) -> str:
    return (
        _lua_headers(auth, "application/x-ndjson")
        + 'wrk.method = "POST"\n'
        + f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )


def _jobs_of(database_url: str, product: str) -> list[str]:
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id FROM jobs WHERE product = %s", (product,)).fetchall()
    return [r[0] for r in rows]


def _show(name: str, wrk: dict[str, Any] | None, hey: dict[str, Any] | None, rate: float) -> None:
    if wrk:
        say(
            f"{name:16s} wrk: {wrk['rps']:>6,} req/s  p50 {wrk['p50_ms']} ms  "
            f"p99 {wrk['p99_ms']} ms  non-2xx {wrk['non_2xx']}  API CPU "
            f"{wrk.get('cpu_us_per_request')} us/request (one core: {wrk.get('capacity_rps')}/s)"
        )
    if hey:
        say(
            f"{name:16s} hey at {rate:g}/s: {hey['rps']:>6,} req/s  p50 {hey['p50_ms']} ms  "
            f"p99 {hey['p99_ms']} ms  status {hey['status']}  API CPU "
            f"{hey.get('cpu_us_per_request')} us/request"
        )


def run(
    stack: Stack, seconds: float, rate: float, profile: Path | None, pin: bool = True
) -> dict[str, Any]:
    """Every scenario against one API process; the RESULT document."""
    env = stack.env()
    tag = uuid.uuid4().hex[:8]
    product = f"bench-api {tag}"
    body = orjson.dumps({"product": product, "target_language": "en"}).decode()
    key = env["VOC_API_KEY"]
    headers = {"Authorization": f"Bearer {key}"}
    results: dict[str, Any] = {}
    was_running = stop_stages(stack)
    created: list[str] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-api.") as tmp,
            ApiProcess(stack) as api,
        ):
            load = Load(api, key, seconds, rate, Path(tmp), pin)
            if pin and cores() >= 2:
                _pin(api.pid, "0")
            say(f"cores: {cores()}; {load.pinning}; {seconds:g} s per run")
            with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client:
                json_type = {"content-type": "application/json"}
                one = client.post("/v1/jobs", content=body, headers=json_type)
                one.raise_for_status()
                job = one.json()["id"]
                client.get(f"/v1/jobs/{job}").raise_for_status()  # warm the cache
            watch = Watch.stack(stack, extra=[Proc("api-bench", api.pid)])
            profiler = Profiler(profile, stack, pids={"api": api.pid})
            with watch, profiler:
                results["create"] = {
                    "wrk": load.wrk_run("/v1/jobs", _create_lua(load.auth, body)),
                    "hey": load.hey_run("/v1/jobs", "POST", body),
                }
                _show("create", results["create"]["wrk"], results["create"]["hey"], rate)
                results["status_cached"] = {
                    "wrk": load.wrk_run(f"/v1/jobs/{job}", _lua_headers(load.auth)),
                    "hey": load.hey_run(f"/v1/jobs/{job}"),
                }
                cached = results["status_cached"]
                _show("status cached", cached["wrk"], cached["hey"], rate)
                created = _jobs_of(env["DATABASE_URL"], product)
                results["status_uncached"] = {
                    "wrk": load.wrk_run("/v1/jobs/", _cycle_lua(load.auth, created)),
                    "jobs_cycled": len(created),
                }
                _show("status uncached", results["status_uncached"]["wrk"], None, rate)
                rows = load_rows(1000, celery_baseline.default_files())
                upload = Path(tmp) / "upload.ndjson"
                upload.write_bytes(ndjson(rows))
                results["upload_1000_rows"] = {
                    "wrk": load.wrk_run(
                        f"/v1/jobs/{job}/reviews", _upload_lua(load.auth, upload), connections=4
                    )
                }
                _show("upload 1000 rows", results["upload_1000_rows"]["wrk"], None, rate)
            results["pinning"] = load.pinning
            results["processes"] = watch.report()
    finally:
        jobs = created or _jobs_of(env["DATABASE_URL"], product)
        purge_jobs(stack, jobs, restart=was_running)
    goal = {
        name: bool(
            results[name]["wrk"]["rps"] >= rate
            and results[name]["hey"]["p99_ms"] is not None
            and results[name]["hey"]["p99_ms"] < 20
            and results[name]["hey"]["rps"] >= 0.95 * rate
        )
        for name in ("create", "status_cached")
    }
    return results | {"goal_met": goal, "rate": rate, "seconds": seconds, "cores": cores()}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run every scenario, print the summary and the RESULT line."""
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each run")
    p.add_argument("--rate", type=float, default=2000.0, help="hey's open-loop rate")
    p.add_argument("--py-spy", type=Path, default=None, help="py-spy output directory")
    p.add_argument("--profile", default=os.environ.get("VOC_PROFILE", "dev"), help="local stack")
    p.add_argument("--force", action="store_true", help="run even with unread stage records")
    p.add_argument("--no-pin", action="store_true", help="leave the API and generators unpinned")
    args = p.parse_args(argv)
    stack = Stack(profile=args.profile)
    pending = pending_records(stack)
    if pending and not args.force:
        raise SystemExit(f"the analysis stages have {pending} unread records; wait or --force")
    result = run(stack, args.seconds, args.rate, args.py_spy, pin=not args.no_pin)
    print_table("processes during the runs", result["processes"])
    say(f"goal (>= {args.rate:g} req/s, p99 < 20 ms at that rate): {result['goal_met']}")
    say(f"cores: {result['cores']}")
    say("RESULT " + orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
