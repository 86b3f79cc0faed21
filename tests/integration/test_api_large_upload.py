"""A 100k-row NDJSON upload streamed into a real `python -m services.api` process: every
row is accepted and the process's memory grows by far less than the body (it is streamed,
never held)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from api_kit import auth, create_submitted_topic, delete_topic, new_key, topic_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROWS = 100_000
PIECE_ROWS = 500  # rows per body piece sent
MAX_RSS_GROWTH_MB = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"apilarge{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="module")
def api_process(prefix: str) -> Iterator[tuple[str, int]]:
    """`python -m services.api` on a free port with its own topic prefix; (url, pid)."""
    asyncio.run(create_submitted_topic(prefix))
    port = _free_port()
    env = {
        **os.environ,
        "VOC_API_PORT": str(port),
        "VOC_API_HOST": "127.0.0.1",
        "VOC_TOPIC_PREFIX": prefix,
        "VOC_API_RATE_LIMIT_PER_S": "100000",
        "VOC_LOG_LEVEL": "WARNING",
    }
    env.pop("VOC_METRICS_PORT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.api"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"api exited with {proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("api did not become ready")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        asyncio.run(delete_topic(prefix + "reviews.submitted"))


async def _body() -> AsyncIterator[bytes]:
    """100k NDJSON rows, generated piece by piece (never one bytes object)."""
    for start in range(0, ROWS, PIECE_ROWS):
        yield b"".join(
            orjson.dumps(
                {
                    "review_id": f"r{i}",
                    "text": f"Review {i}: the battery lasts two days, the fit is a bit loose.",
                    "rating": 1 + i % 5,
                    "language": "en",
                }
            )
            + b"\n"
            for i in range(start, start + PIECE_ROWS)
        )


async def test_100k_row_ndjson_upload_is_streamed(
    api_process: tuple[str, int], prefix: str
) -> None:
    url, pid = api_process
    _, key = new_key()
    async with httpx.AsyncClient(base_url=url, headers=auth(key), timeout=300) as client:
        job = (await client.post("/v1/jobs", json={"product": "p", "target_language": "en"})).json()
        warm = await client.post(
            f"/v1/jobs/{job['id']}/reviews",
            content=b'{"text": "warm-up", "review_id": "w"}\n',
            headers={"content-type": "application/x-ndjson"},
        )
        assert warm.status_code == 202, warm.text
        baseline_kb = _rss_kb(pid)
        peak_kb = baseline_kb
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak_kb
            while not done.is_set():
                peak_kb = max(peak_kb, _rss_kb(pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        resp = await client.post(
            f"/v1/jobs/{job['id']}/reviews",
            content=_body(),
            headers={"content-type": "application/x-ndjson"},
        )
        seconds = time.perf_counter() - started
        done.set()
        await sampler
        peak_kb = max(peak_kb, _rss_kb(pid))
        assert resp.status_code == 202, resp.text
        answer = resp.json()
        assert answer["accepted"] == ROWS
        assert answer["duplicates"] == 0 and answer["rejected_count"] == 0
        status = (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert status["counts"]["submitted"] == ROWS + 1
    growth_mb = (peak_kb - baseline_kb) / 1024
    print(
        f"\n100k-row upload: {seconds:.1f}s ({ROWS / seconds:,.0f} rows/s), "
        f"RSS {baseline_kb / 1024:.0f} MB -> peak {peak_kb / 1024:.0f} MB (+{growth_mb:.1f} MB)"
    )
    assert growth_mb < MAX_RSS_GROWTH_MB
    # 1 warm-up chunk + 100k rows in chunks of 500.
    assert await topic_messages(prefix + "reviews.submitted") == 1 + ROWS // 500
