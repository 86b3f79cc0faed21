"""A small job is not queued behind a big job's backlog in the insight stage (issue 12),
on the real stack: Kafka, Postgres, Redis, the fake LLM and the insight service.

Tenant A's 2,000 reviews are produced onto `reviews.translated` first, tenant B's 100
right after them, so in every partition B's records sit behind A's. Without the overflow
lane (shared.stage.fair) insight reaches B only after most of A (checked: with
`VOC_JOB_FREE_REVIEWS` too high to defer anything, B finished after 1,300 of A's 2,000,
the fair slots alone reordering only what is already in flight); with it,
A's records beyond its first reviews go to `insight.overflow` while A holds its share,
and B is analysed while most of A still waits. A then completes on the lane with every
review analysed once and nothing dead-lettered. The insight service runs here with a
smaller free allowance and share (300 and 100 reviews) than its defaults, so the test
needs a smaller A.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from ingest_kit import end_offsets, prefix, wait_for
from test_insight_theme import counts, make_job, reviews, send, wait_done

from shared.topics import overflow_topic
from voc.stack import Stack

pytestmark = pytest.mark.integration

BIG, SMALL = 2000, 100
LANE_ENV = {"VOC_JOB_FREE_REVIEWS": "300", "VOC_JOB_SHARE_REVIEWS": "100"}


@pytest.fixture(scope="module")
async def insight(stack: dict[str, str], stack_ctl: Stack) -> AsyncIterator[Stack]:
    """The stack's insight restarted with `LANE_ENV`, and restarted as it was afterwards."""
    if not os.environ.get("VOC_FAKE_LLM_URL"):
        pytest.skip("the test stack runs without the fake LLM")
    saved = {k: os.environ.get(k) for k in LANE_ENV}
    os.environ.update(LANE_ENV)
    try:
        await asyncio.to_thread(stack_ctl.restart_service, "insight")
        yield stack_ctl
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        await asyncio.to_thread(stack_ctl.restart_service, "insight")


async def test_a_small_job_is_analysed_while_a_big_jobs_backlog_waits(insight: Stack) -> None:
    big, small = str(uuid.uuid4()), str(uuid.uuid4())
    await make_job(big, "it-fair-lane-a")
    await make_job(small, "it-fair-lane-b")
    lane = overflow_topic("insight").full_name(prefix())
    before = sum((await end_offsets(lane)).values())

    await send(big, reviews(big, BIG))
    await send(small, reviews(small, SMALL))

    async def small_done() -> bool:
        return (await counts(small))["review_insights"] == SMALL

    assert await wait_for(small_done, 300.0, interval=0.25), await counts(small)
    big_then = (await counts(big))["review_insights"]
    # Measured: 400 of A's 2,000 done with the lane; 1,300 without it (deferral off).
    assert big_then < 0.4 * BIG, f"B finished only after {big_then} of A's {BIG} reviews"
    assert sum((await end_offsets(lane)).values()) > before, "nothing went to the lane"

    done = await wait_done(big, BIG, timeout=300.0)
    assert done["review_insights"] == BIG and done["dead"] == 0
