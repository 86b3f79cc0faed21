"""Honest job states through the whole pipeline (issue 15, point 1).

The fake LLM fails every insight call of one job's reviews (503), so the insight stage
sends them round its retry tiers; the report service runs with a stall timeout of 3 s.
A job may be `completed` only once every review is analysed or dead-lettered: while the
reviews wait in retry tiers the job is `stalled`, with a reason and a since-when in
`GET /v1/jobs/{id}`, the report stage's stalled-jobs gauge counts it, and any report served
meanwhile says it is partial. Once the fault is gone the retries go through, the stall
clears and the job completes with every review accounted for.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_kit import create_job, sample_rows, upload

STALL_TIMEOUT_S = "3"
JOB_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def short_stall(stack: Any) -> Iterator[None]:
    """The stack's report service with a 3 s stall timeout, put back afterwards."""
    before = os.environ.get("VOC_REPORT_STALL_TIMEOUT_S")
    os.environ["VOC_REPORT_STALL_TIMEOUT_S"] = STALL_TIMEOUT_S
    stack.restart_service("report")
    yield
    if before is None:
        os.environ.pop("VOC_REPORT_STALL_TIMEOUT_S", None)
    else:
        os.environ["VOC_REPORT_STALL_TIMEOUT_S"] = before
    stack.restart_service("report")


def _stalled_gauge(stack: Any) -> float:
    """The report service's `vocstream_report_jobs_stalled` gauge (0 if it has none)."""
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port('report')}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("vocstream_report_jobs_stalled "):
            return float(line.split()[1])
    return 0.0


def _done(job: dict[str, Any]) -> int:
    c = job["counts"]
    return int(c["themed"]) + int(c["dead_lettered"])


def test_a_job_with_reviews_in_retry_tiers_is_stalled_not_completed(
    api: httpx.Client, fake_llm: httpx.Client, stack: Any, short_stall: None
) -> None:
    tag = uuid.uuid4().hex[:8]
    marker = f"QXSTALL{hashlib.sha1(tag.encode()).hexdigest()[:10]}"
    rows = [r for r in sample_rows(tag) if r["language"] == "en"][:12]
    held = {r["review_id"] for r in rows[:8]}
    for r in rows:
        if r["review_id"] in held:
            r["text"] = f"{r['text']} {marker}"
    n = len(rows)

    fault = {"error_rate": 1.0, "fault_match": marker, "fault_stages": ["insight"]}
    assert fake_llm.post("/admin/config", json=fault).status_code == 200
    faulty = True
    seen: list[str] = []
    stalled_doc: dict[str, Any] | None = None
    gauge = 0.0
    partial_report: dict[str, Any] | None = None
    try:
        job_id = create_job(api)
        assert upload(api, job_id, rows)["accepted"] == n
        assert api.post(f"/v1/jobs/{job_id}/seal").status_code == 200
        deadline = time.monotonic() + JOB_TIMEOUT_S
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = api.get(f"/v1/jobs/{job_id}").json()
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] == "completed":
                # The defect: completed at 0% coverage while insight still retried.
                assert _done(job) == job["counts"]["ingested"] == n, (seen, job["counts"])
                break
            if job["status"] == "stalled" and faulty:
                stalled_doc = job
                gauge = _stalled_gauge(stack)
                resp = api.get(f"/v1/jobs/{job_id}/report")
                if resp.status_code == 200:
                    partial_report = resp.json()
                # Take the fault away: the next retry of each held review goes through.
                clear = {"error_rate": 0.0, "fault_match": None, "fault_stages": None}
                assert fake_llm.post("/admin/config", json=clear).status_code == 200
                faulty = False
            time.sleep(0.5)
        else:
            raise AssertionError(f"job {job_id} not completed: {seen} {job}")
    finally:
        if faulty:
            fake_llm.post(
                "/admin/config", json={"error_rate": 0.0, "fault_match": None, "fault_stages": None}
            )

    assert stalled_doc is not None, f"the job never showed as stalled: {seen}"
    stall = stalled_doc["stall"]
    assert stall["since"] and "in progress" in stall["reason"], stall
    assert _done(stalled_doc) < n
    assert gauge >= 1
    assert seen.index("stalled") < seen.index("completed")
    if partial_report is not None:
        assert partial_report["partial"] is True and partial_report["status"] != "completed"
        assert "partial" in partial_report["notice"].lower()
    report = api.get(f"/v1/jobs/{job_id}/report").json()
    assert report["status"] == "completed" and report["partial"] is False
    assert report["coverage"]["pending"] == 0
    assert job["stall"] is None
