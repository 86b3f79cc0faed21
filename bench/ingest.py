"""Ingest benchmark: upload N reviews through the API and time until Postgres holds them all.

    python -m bench.ingest [-n 100000] [--file a.csv ...] [--env-file .voc/stack.env]

Runs against a running stack (`voc up`): the API URL and key, the database and the PID
files come from its `stack.env`. Same workload as `bench/celery_baseline` (the older design):
rows from the CSV files' `text,rating` columns cycled with unique review ids (else generated),
requests of 1,000 rows, 4 in flight; the clock stops when every accepted row is committed.
Prints reviews/s end to end, API latency p50/p99, the ingest and API processes' peak RSS
and CPU seconds, and a last line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
import random
import shlex
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

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


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a stack.env (values may be shell-quoted)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


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


@dataclass
class ProcWatch:
    """Peak RSS and CPU seconds of one process (by PID) during the run."""

    name: str
    pid: int | None
    peak_rss_kb: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def _cpu(self) -> float:
        if self.pid is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.cpu_start = self._cpu()

    def sample(self) -> None:
        if self.pid is None:
            return
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb = int(line.split()[1])
                    self.peak_rss_kb = max(self.peak_rss_kb, kb)
        except OSError:
            pass

    def stop(self) -> None:
        self.cpu_end = self._cpu()

    @property
    def cpu_s(self) -> float:
        return self.cpu_end - self.cpu_start


def _pid(home: Path, name: str) -> int | None:
    try:
        pid = int((home / "run" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


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
        event = ReviewsSubmitted(
            job_id=job,
            tenant_id="bench",
            upload_id="bench-direct",
            chunk_no=no,
            rows=[SubmittedRow(row=start + i + 1, **normalise_row(r)) for i, r in enumerate(part)],
        )
        out.append((f"{job}:bench-direct:{no}".encode(), event.to_bytes()))
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


async def run(
    n: int,
    files: Sequence[str],
    env: dict[str, str],
    direct: bool,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Upload, wait until Postgres holds every accepted row, measure; the RESULT document."""
    api, dsn = env.get("VOC_API_URL", ""), env["DATABASE_URL"]
    home = Path(env.get("VOC_HOME", ROOT / ".voc"))
    rows = load_rows(n, files)
    pids = pids or {}
    watches = [ProcWatch(name, pids.get(name) or _pid(home, name)) for name in ("ingest", "api")]
    headers = {"authorization": f"Bearer {env.get('VOC_API_KEY', '')}"}
    up = Uploads()
    limits = httpx.Limits(max_connections=IN_FLIGHT + 2)
    async with httpx.AsyncClient(timeout=120, headers=headers, limits=limits) as client:
        if direct:
            import uuid

            job = str(uuid.uuid4())
            chunks = _chunks(job, rows)  # built before the clock starts: only ingest is timed
            uploading = _direct(env, chunks, up)
        else:
            created = await client.post(
                f"{api}/v1/jobs", json={"product": "bench", "target_language": "en"}
            )
            if created.status_code != 201:
                raise RuntimeError(f"job not created: {created.status_code} {created.text[:500]}")
            job = created.json()["id"]
            uploading = _via_api(client, api, job, rows, up)
        for w in watches:
            w.start()
        t0 = time.perf_counter()
        uploads = asyncio.ensure_future(uploading)
        uploaded_at = 0.0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            stored = 0
            while True:
                await asyncio.sleep(0.05)
                for w in watches:
                    w.sample()
                if uploads.done() and not uploaded_at:
                    uploads.result()  # raises if an upload failed
                    uploaded_at = time.perf_counter() - t0
                cur = await conn.execute("SELECT count(*) FROM reviews WHERE job_id=%s", (job,))
                row = await cur.fetchone()
                stored = row[0] if row else 0
                if uploaded_at and stored >= up.accepted:
                    break
        seconds = time.perf_counter() - t0
    for w in watches:
        w.stop()
    lat = sorted(up.latencies_ms)
    return {
        "reviews_per_s": round(stored / seconds),
        "seconds": round(seconds, 2),
        "upload_s": round(uploaded_at, 2),
        "api_p50_ms": round(statistics.median(lat), 1) if not direct else None,
        "api_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 1) if not direct else None,
        "cores": os.cpu_count(),
        "n": n,
        "stored": stored,
        "mode": "direct-kafka" if direct else "api",
        "job_id": job,
        **{f"{w.name}_rss_mb": round(w.peak_rss_kb / 1024, 1) for w in watches if w.pid},
        **{f"{w.name}_cpu_s": round(w.cpu_s, 2) for w in watches if w.pid},
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
        "--direct",
        action="store_true",
        help="skip the API: produce ready-made chunks to Kafka (times ingest alone)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=ROOT / ".voc" / "stack.env",
        help="the running stack's stack.env (default: .voc/stack.env)",
    )
    parser.add_argument(
        "--ingest-pid",
        type=int,
        default=None,
        help="PID of an ingest process not started by the stack (default: its run/ingest.pid)",
    )
    args = parser.parse_args(argv)
    pids = {"ingest": args.ingest_pid} if args.ingest_pid else {}
    result = asyncio.run(run(args.n, args.file, parse_env_file(args.env_file), args.direct, pids))
    print(
        f"{result['stored']:,} reviews stored in {result['seconds']} s "
        f"(uploads done after {result['upload_s']} s): {result['reviews_per_s']:,} reviews/s"
    )
    if not args.direct:
        print(
            f"API latency per {PER_REQUEST:,}-row request ({IN_FLIGHT} in flight): "
            f"p50 {result['api_p50_ms']} ms, p99 {result['api_p99_ms']} ms"
        )
    for name in ("ingest", "api"):
        if f"{name}_rss_mb" in result:
            print(
                f"{name}: peak RSS {result[f'{name}_rss_mb']} MB, CPU {result[f'{name}_cpu_s']} s"
            )
    print(f"cores: {result['cores']}")
    print("RESULT " + orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
