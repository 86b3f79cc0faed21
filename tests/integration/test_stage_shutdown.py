"""SIGTERM while a stage's LLM calls hang: it exits promptly, and nothing is lost or doubled.

The stack's insight service gets a job whose every LLM call the fake LLM holds open for
ten minutes (`timeout_rate=1` for this job's texts only). Once the calls hang, insight gets
SIGTERM: it must abandon the calls (their records are not committed) and leave its group
well before `stop_service` would resort to SIGKILL. Restarted with the fake answering
again, insight analyses every review of the job, and each review leaves insight once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import httpx
import pytest
from ingest_kit import collect, end_offsets, prefix, wait_for
from test_insight_theme import counts, fake_llm_config, make_job, review_text, send

from shared.events import InsightsExtracted, TranslatedReview
from shared.topics import INSIGHTS_EXTRACTED
from voc import procs
from voc.stack import Stack

pytestmark = pytest.mark.integration

DEADLINE_S = 10.0  # far below the fake's 600 s hang and the LLM layer's 150 s deadline
N = 12


def _hung_calls() -> int:
    url = os.environ["VOC_FAKE_LLM_URL"].rstrip("/") + "/stats"
    stats = httpx.get(url, timeout=10).json()
    return int(
        ((stats.get("by_stage") or {}).get("insight") or {}).get("faults", {}).get("timeout", 0)
    )


async def test_sigterm_during_hung_llm_calls_exits_promptly_and_loses_nothing(
    stack: dict[str, str], stack_ctl: Stack
) -> None:
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    if stack_ctl.service_pid("insight") is None:
        await asyncio.to_thread(stack_ctl.start_service, "insight")
    job = str(uuid.uuid4())
    tag = f"hang-{job[:8]}"
    await make_job(job)
    revs = [
        TranslatedReview(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job}/{i}")),
            text=f"{review_text(i)} {tag}",
            source_language="en",
            translated=False,
            rating=3,
        )
        for i in range(N)
    ]
    since = await end_offsets(INSIGHTS_EXTRACTED.full_name(prefix()))
    before = await asyncio.to_thread(_hung_calls)
    await fake_llm_config(
        {"timeout_rate": 1.0, "hang_s": 600, "fault_match": tag, "fault_stages": ["insight"]}
    )
    try:
        await send(job, revs, per_event=4)

        async def hanging() -> bool:
            return await asyncio.to_thread(_hung_calls) > before

        assert await wait_for(hanging, 90), "insight never called the LLM"
        pid = stack_ctl.service_pid("insight")
        assert pid is not None
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        exited = await asyncio.to_thread(
            procs.wait_until, lambda: not procs.is_alive(pid), timeout=DEADLINE_S
        )
        seconds = time.monotonic() - started
        if not exited:
            os.kill(pid, signal.SIGKILL)
        assert exited, f"insight still running {DEADLINE_S:.0f} s after SIGTERM"
        print(f"insight exited {seconds:.1f} s after SIGTERM during hung LLM calls")
        log = stack_ctl.log_path("insight").read_text(errors="replace")
        assert '"stage stopped"' in log.rsplit('"stage started"', 1)[-1]
        assert (await counts(job))["review_insights"] == 0  # nothing of it was committed
    finally:
        await fake_llm_config({"timeout_rate": 0.0, "fault_match": None, "fault_stages": None})
        await asyncio.to_thread(stack_ctl.stop_service, "insight")  # forget the old pid
        await asyncio.to_thread(stack_ctl.start_service, "insight")

    async def analysed() -> bool:
        c = await counts(job)
        return c["review_insights"] == N

    assert await wait_for(analysed, 180), f"after the restart: {await counts(job)}"
    assert (await counts(job))["dead"] == 0
    wanted = {r.id for r in revs}
    # Read for a while past the last one, so a duplicate would be seen too.
    out = await collect(since, lambda rec: rec.key == job.encode(), lambda kept: False, 15.0)
    ids = [rid for r in out for rid in InsightsExtracted.model_validate_json(r.value).review_ids]
    assert sorted(ids) == sorted(wanted), "each review leaves insight exactly once"
