"""Helpers of the end-to-end tests: talk to the test stack's API like a client would."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

SAMPLE = Path(__file__).resolve().parents[2] / "voc" / "samples" / "earbuds_reviews.csv"
JOB_TIMEOUT_S = 600.0


def sample_rows(tag: str) -> list[dict[str, str]]:
    """The shipped sample, each text made unique to this run (so nothing is cached)."""
    with SAMPLE.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["text"] = f"{r['text']} #{tag}"
        r["review_id"] = f"{r['review_id']}-{tag}"
    return rows


def upload(api: httpx.Client, job_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    body = b"\n".join(orjson.dumps(r) for r in rows)
    resp = api.post(
        f"/v1/jobs/{job_id}/reviews",
        content=body,
        headers={"content-type": "application/x-ndjson"},
    )
    assert resp.status_code in (200, 201, 202), resp.text
    return dict(resp.json())


def create_job(api: httpx.Client, callback_url: str | None = None) -> str:
    body: dict[str, Any] = {"product": "Aurora wireless earbuds", "target_language": "en"}
    if callback_url:
        body["callback_url"] = callback_url
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def wait_completed(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = api.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job = resp.json()
        if job["status"] == "completed":
            return job
        assert job["status"] != "failed", job
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} not completed after {JOB_TIMEOUT_S}s: {job}")
