"""Throughput of the fake LLM server itself.

    python -m bench.fake_llm [--seconds 10] [--connections 64] [--stage insight] [--url URL]

Starts the fake (no latency, no limit) unless `--url`/`VOC_FAKE_LLM_URL` is given, and
hammers `POST /v1/chat/completions` from one process over keep-alive connections with a
minimal raw-socket HTTP/1.1 client (so the client is not the bottleneck), then prints
requests/s. Last line: `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import uvloop

from voc.fake_llm import launch

BODIES = {
    "insight": {
        "review_id": "r1",
        "text": "Battery died after two days. The price was great though! Delivery was slow.",
        "rating": 2,
        "dimensions": [
            {"name": "Battery life", "description": ""},
            {"name": "Price and value", "description": ""},
            {"name": "Delivery and shipping", "description": ""},
        ],
        "five_w": {},
    },
    "translate": {
        "target_language": "en",
        "items": [{"id": str(i), "text": f"Der Akku hält nicht lange {i}."} for i in range(30)],
    },
}


def request_bytes(host: str, port: int, stage: str) -> bytes:
    """One complete HTTP/1.1 request (`health`: a GET, to measure the HTTP floor)."""
    if stage == "health":
        return f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    payload = json.dumps(
        {
            "model": "voc-fake-1",
            "messages": [
                {"role": "system", "content": "bench"},
                {"role": "user", "content": json.dumps(BODIES[stage])},
            ],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nX-Voc-Stage: {stage}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload


async def worker(host: str, port: int, req: bytes, stop_at: float, counts: list[int]) -> None:
    """One keep-alive connection sending requests back to back."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                counts[0] += 1
            else:
                counts[1] += 1
    finally:
        writer.close()


async def run(url: str, seconds: float, connections: int, stage: str) -> dict[str, object]:
    """Warm up 1 s, then measure for `seconds`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    req = request_bytes(host, port, stage)
    warm = [0, 0]
    await asyncio.gather(
        *(worker(host, port, req, time.monotonic() + 1.0, warm) for _ in range(connections))
    )
    counts = [0, 0]
    t0 = time.monotonic()
    await asyncio.gather(
        *(worker(host, port, req, t0 + seconds, counts) for _ in range(connections))
    )
    elapsed = time.monotonic() - t0
    return {
        "requests_per_s": round(counts[0] / elapsed, 1),
        "errors": counts[1],
        "connections": connections,
        "stage": stage,
        "seconds": round(elapsed, 2),
        "cores": os.cpu_count(),
    }


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--stage", choices=[*sorted(BODIES), "health"], default="insight")
    ap.add_argument("--url", default=os.environ.get("VOC_FAKE_LLM_URL"))
    args = ap.parse_args()
    proc = None
    url = args.url
    if not url:
        proc, url = launch.spawn()
    try:
        result = uvloop.run(
            run(url.rstrip("/").removesuffix("/v1"), args.seconds, args.connections, args.stage)
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"fake llm: {result['requests_per_s']} requests/s ({args.stage}, "
        f"{args.connections} connections, {result['errors']} errors, "
        f"{result['cores']} cores)"
    )
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
