"""Ingest benchmark: upload N reviews through the API and time until Postgres holds them all.

    python -m bench.ingest [-n 100000] [--file a.csv ...] [--vs-baseline [--rounds 2]]
                           [--with-stages] [--direct] [--profile DIR]

Runs against the local dev stack (`make up`; with `VOC_PORT_OFFSET` exported, your own).
Same workload as `../shared/bench/celery_baseline` (the older design): the MARC samples'
`text,rating` columns cycled with unique review ids, requests of 1,000 rows, 4 in flight;
the clock stops when every accepted row is committed. By default the analysis stages are
stopped during the run (ingest alone, as the older design is) and started again after;
`--with-stages` keeps them running. `--vs-baseline` alternates the older design and
vocstream (ingest alone) `--rounds` times in one window, then runs vocstream once more
with the stages running, and reports the median ratio and how much the stages cost.
`--profile DIR` records the API and ingest processes with py-spy during vocstream runs.

Every run's job is removed afterwards (`bench.stackwatch.purge_jobs`), so nothing is left
for learn to pick up and hold the LLM quota with. Prints per process peak RSS, VmHWM and
CPU seconds, the core count and last a line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import random
import shutil
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench import celery_baseline
from bench.stackwatch import (
    ANALYSIS_STAGES,
    Watch,
    cores,
    pending_records,
    print_table,
    purge_jobs,
    say,
    start_stages,
    stop_stages,
)
from voc.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
PER_REQUEST = 1000
IN_FLIGHT = 4
CHUNK_ROWS = 500  # rows per ReviewsSubmitted chunk, as the API cuts them (--direct)
WORDS = [
    "battery",
    "screen",
    "fast",
    "slow",
    "broken",
    "great",
    "price",
    "delivery",
    "quality",
    "size",
    "fits",
    "love",
    "hate",
]
VOC_CPU = ("api", "ingest", "postgres", "kafka", "redis")  # what the older design's CPU compares to


def load_rows(n: int, files: Sequence[str], seed: int = 7) -> list[dict[str, Any]]:
    """N rows: the files' text and rating cycled with unique ids, else generated text."""
    if files:
        source: list[dict[str, Any]] = []
        for name in files:
            with open(name, encoding="utf-8", newline="") as fh:
                source.extend(
                    {"text": r["text"], "rating": int(r["rating"])} for r in csv.DictReader(fh)
                )
        return [
            {"review_id": f"r{i}", **r}
            for i, r in zip(range(n), itertools.cycle(source), strict=False)
        ]
    rng = random.Random(seed)
    return [
        {
            "review_id": f"r{i}",
            "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 60))),
            "rating": rng.randint(1, 5),
        }
        for i in range(n)
    ]


def ndjson(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows as newline-delimited JSON."""
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def _requests(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for i in range(0, len(rows), PER_REQUEST):
        yield rows[i : i + PER_REQUEST]


class Uploads:
    """The upload side of a run: API requests (or direct Kafka chunks) and their latencies."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.accepted = 0


async def _via_api(
    client: httpx.AsyncClient, api: str, job: str, rows: Sequence[dict[str, Any]], up: Uploads
) -> None:
    url = f"{api}/v1/jobs/{job}/reviews"
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def send(part: Sequence[dict[str, Any]]) -> None:
        async with sem:
            t = time.perf_counter()
            r = await client.post(
                url, content=ndjson(part), headers={"content-type": "application/x-ndjson"}
            )
            up.latencies_ms.append((time.perf_counter() - t) * 1000)
            if r.status_code != 202:
                raise RuntimeError(f"upload failed: {r.status_code} {r.text[:500]}")
            up.accepted += r.json()["accepted"]

    await asyncio.gather(*(send(part) for part in _requests(rows)))


def _chunks(job: str, rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """(key, value) of ReviewsSubmitted chunks of 500, as the API would produce them."""
    from shared.events import ReviewsSubmitted, SubmittedRow
    from shared.reviews import normalise_row

    out = []
    for no, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
        part = rows[start : start + CHUNK_ROWS]
        value = ReviewsSubmitted.encode(
            job_id=job,
            tenant_id="bench",
            upload_id="bench-direct",
            chunk_no=no,
            rows=[SubmittedRow(**normalise_row(r), row=start + i + 1) for i, r in enumerate(part)],
        )
        out.append((ReviewsSubmitted.key(job, "bench-direct", no), value))
    return out


async def _direct(env: dict[str, str], chunks: Sequence[tuple[bytes, bytes]], up: Uploads) -> None:
    from aiokafka import AIOKafkaProducer

    topic = env.get("VOC_TOPIC_PREFIX", "voc.") + "reviews.submitted"
    producer = AIOKafkaProducer(
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=8 << 20,
    )
    await producer.start()
    try:
        t = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in chunks]
        await asyncio.gather(*futures)
        up.latencies_ms.append((time.perf_counter() - t) * 1000)
        up.accepted = sum(len(orjson.loads(v)["rows"]) for _, v in chunks)
    finally:
        await producer.stop()


async def _run(
    rows: Sequence[dict[str, Any]], env: dict[str, str], direct: bool
) -> tuple[dict[str, Any], str]:
    api, dsn = env.get("VOC_API_URL", ""), env["DATABASE_URL"].replace("+psycopg", "")
    headers = {"authorization": f"Bearer {env.get('VOC_API_KEY', '')}"}
    up = Uploads()
    limits = httpx.Limits(max_connections=IN_FLIGHT + 2)
    async with httpx.AsyncClient(timeout=300, headers=headers, limits=limits) as client:
        if direct:
            job = str(uuid.uuid4())
            chunks = _chunks(job, rows)  # built before the clock starts: only ingest is timed
            uploading = _direct(env, chunks, up)
        else:
            created = await client.post(
                f"{api}/v1/jobs", json={"product": "bench-ingest", "target_language": "en"}
            )
            if created.status_code != 201:
                raise RuntimeError(f"job not created: {created.status_code} {created.text[:500]}")
            job = created.json()["id"]
            uploading = _via_api(client, api, job, rows, up)
        t0 = time.perf_counter()
        uploads = asyncio.ensure_future(uploading)
        uploaded_at = 0.0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            stored = 0
            while True:
                await asyncio.sleep(0.05)
                if uploads.done() and not uploaded_at:
                    uploads.result()  # raises if an upload failed
                    uploaded_at = time.perf_counter() - t0
                cur = await conn.execute("SELECT count(*) FROM reviews WHERE job_id=%s", (job,))
                row = await cur.fetchone()
                stored = row[0] if row else 0
                if uploaded_at and stored >= up.accepted:
                    break
        seconds = time.perf_counter() - t0
    lat = sorted(up.latencies_ms)
    return {
        "reviews_per_s": round(stored / seconds),
        "seconds": round(seconds, 2),
        "upload_s": round(uploaded_at, 2),
        "api_p50_ms": round(statistics.median(lat), 1) if not direct else None,
        "api_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 1) if not direct else None,
        "n": len(rows),
        "stored": stored,
        "mode": "direct-kafka" if direct else "api",
    }, job


class Profiler:
    """py-spy recordings of the API and ingest processes during a run (`--profile DIR`)."""

    def __init__(
        self, out_dir: Path | None, stack: Stack, pids: dict[str, int] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.stack = stack
        self.pids = pids
        self._procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def __enter__(self) -> Profiler:
        if self.out_dir is None:
            return self
        spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%H%M%S")
        pids = self.pids
        if pids is None:
            found = {n: self.stack.service_pid(n) for n in ("api", "ingest")}
            pids = {n: p for n, p in found.items() if p is not None}
        for name, pid in pids.items():
            path = self.out_dir / f"{name}-{stamp}.txt"
            self.files.append(path)
            self._procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--rate",
                        "100",
                        "--output",
                        str(path),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # let py-spy attach
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for proc in self._procs:
            proc.wait(timeout=60)
        for path in self.files:
            if path.exists():
                say(f"profile {path.name} (share of samples, own frame; top 12):")
                for share, frame in top_frames(path, 12):
                    say(f"  {share:5.1f}%  {frame}")


def top_frames(path: Path, n: int) -> list[tuple[float, str]]:
    """The frames a py-spy raw profile spends most samples in (idle polls left out)."""
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frame = stack.split(";")[-1]
        if "select" in frame or "_run_once" in frame or "serve_forever" in stack:
            continue
        own[frame] += int(count)
    total = sum(own.values()) or 1
    return [(100 * c / total, f) for f, c in own.most_common(n)]


def vocstream_run(
    stack: Stack,
    rows: Sequence[dict[str, Any]],
    *,
    with_stages: bool,
    direct: bool = False,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One measured vocstream run, its job removed afterwards."""
    env = stack.env()
    was_running = [s for s in ANALYSIS_STAGES if stack.service_pid(s) is not None]
    if with_stages:
        start_stages(stack, ANALYSIS_STAGES)
    else:
        stop_stages(stack)
    job = None
    try:
        with Watch.stack(stack) as watch, Profiler(profile, stack):
            result, job = asyncio.run(_run(rows, env, direct))
    finally:
        restart = ANALYSIS_STAGES if (with_stages or was_running) else ()
        purge_jobs(stack, [job] if job else [], restart=restart)
    procs = watch.report()
    result["stages"] = "running" if with_stages else "stopped"
    result["processes"] = procs
    result["cpu_s_total"] = round(sum(procs[p]["cpu_s"] for p in VOC_CPU if p in procs), 2)
    result["cpu_s_stages"] = round(sum(procs[s]["cpu_s"] for s in ANALYSIS_STAGES if s in procs), 2)
    return result


def _show(label: str, r: dict[str, Any]) -> None:
    lat = f", API p50 {r['api_p50_ms']} ms p99 {r['api_p99_ms']} ms" if r.get("api_p99_ms") else ""
    say(
        f"{label}: {r['n']:,} reviews in {r['seconds']} s = {r['reviews_per_s']:,} reviews/s{lat}; "
        f"CPU {r['cpu_s_total']} s"
    )


def vs_baseline(stack: Stack, n: int, files: Sequence[str], rounds: int) -> dict[str, Any]:
    """Alternate the older design and vocstream (ingest alone), then vocstream with stages."""
    rows = load_rows(n, files)
    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        base = celery_baseline.run(n, files)
        _show(f"round {i + 1} older design", base)
        ours = vocstream_run(stack, rows, with_stages=False)
        _show(f"round {i + 1} vocstream (ingest alone)", ours)
        runs.append({"baseline": base, "vocstream": ours})
    staged = vocstream_run(stack, rows, with_stages=True)
    _show("vocstream with the analysis stages running", staged)
    ratios = [r["vocstream"]["reviews_per_s"] / r["baseline"]["reviews_per_s"] for r in runs]
    cpu = [r["baseline"]["cpu_s_total"] / r["vocstream"]["cpu_s_total"] for r in runs]
    alone = statistics.median(r["vocstream"]["reviews_per_s"] for r in runs)
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
        "cpu_efficiency_ratio": round(statistics.median(cpu), 3),
        "vocstream_reviews_per_s": alone,
        "baseline_reviews_per_s": statistics.median(r["baseline"]["reviews_per_s"] for r in runs),
        "with_stages_reviews_per_s": staged["reviews_per_s"],
        "with_stages_slowdown": round(alone / staged["reviews_per_s"], 3),
        "with_stages_cpu_s_stages": staged["cpu_s_stages"],
        "with_stages": staged,
        "runs": runs,
        "cores": cores(),
        "n": n,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print a summary and the RESULT line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", type=int, default=100_000, help="reviews to upload")
    parser.add_argument(
        "--file", nargs="+", action="extend", default=[], help="CSV files with text,rating"
    )
    parser.add_argument(
        "--vs-baseline", action="store_true", help="alternate with the older design"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations with --vs-baseline")
    parser.add_argument("--with-stages", action="store_true", help="keep the analysis stages up")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="skip the API: produce ready-made chunks to Kafka (times ingest alone)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    parser.add_argument(
        "--force", action="store_true", help="run even if the stages have unread records"
    )
    args = parser.parse_args(argv)
    stack = Stack("dev")
    files = args.file or celery_baseline.default_files()
    pending = pending_records(stack)
    if pending and not args.force:
        raise SystemExit(
            f"the analysis stages have {pending} unread records: the cleanup after the run "
            "would skip them too. Let them finish (or pass --force)."
        )
    if args.vs_baseline:
        result = vs_baseline(stack, args.n, files, args.rounds)
        say(
            f"vocstream / older design, ingest alone: {result['ratio']}x (rounds: "
            f"{result['ratios']}); CPU efficiency {result['cpu_efficiency_ratio']}x; with the "
            f"analysis stages running {result['with_stages_reviews_per_s']:,} reviews/s "
            f"({result['with_stages_slowdown']}x slower; the stages used "
            f"{result['with_stages_cpu_s_stages']} CPU s)"
        )
    else:
        rows = load_rows(args.n, files)
        result = vocstream_run(
            stack, rows, with_stages=args.with_stages, direct=args.direct, profile=args.profile
        )
        result["cores"] = cores()
        _show("vocstream", result)
    for label, doc in _process_tables(result):
        print_table(label, doc)
    say(f"cores: {cores()}")
    say("RESULT " + orjson.dumps(result).decode())


def _process_tables(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "runs" not in result:
        return [("vocstream", result["processes"])]
    out = []
    for i, r in enumerate(result["runs"]):
        out.append((f"round {i + 1} older design", r["baseline"]["processes"]))
        out.append((f"round {i + 1} vocstream", r["vocstream"]["processes"]))
    out.append(("vocstream with stages", result["with_stages"]["processes"]))
    return out


if __name__ == "__main__":
    main()
