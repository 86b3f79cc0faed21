"""Per-stage backlog and speed, and the ETA of a job: the contract between the lag exporter
(writer) and the API (reader).

The lag exporter measures, for every pipeline stage, its Kafka backlog and its speed while it
has work (records/s consumed while lagging, times the reviews a record carries) and publishes
them as one JSON document in Redis under `STAGE_RATES_KEY`, refreshed every poll and expiring
after a few polls (so a dead exporter gives "unknown", never a stale ETA).

The API knows, for a job, how many reviews each stage still has to process (`pending`, from
its per-stage counts). A stage's ETA is `pending / reviews_per_s`; the stages run
concurrently on a stream, so the job finishes with its slowest stage: the job's ETA is the
largest stage ETA (unknown if any stage with pending work has no measured speed yet).

`job_eta` and `stage_eta` are pure; `read_stage_rates` is the one Redis read.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

STAGE_RATES_KEY = "voc:ops:stage_rates"


@dataclass(frozen=True)
class StageRate:
    """A stage's backlog and speed as the lag exporter last measured them."""

    stage: str
    lag: int  # records waiting in the stage's input topic
    lag_seconds: float  # age of the oldest of them
    rate_in: float | None  # records/s arriving
    rate_out: float | None  # records/s consumed (committed)
    reviews_per_s: float | None  # speed while the stage has work, in reviews/s
    members: int  # consumers in the stage's group (replicas running)


@dataclass(frozen=True)
class StageEta:
    """What `GET /v1/jobs/{id}` shows for one stage."""

    stage: str
    pending: int
    eta_s: float | None


@dataclass(frozen=True)
class JobEta:
    """A job's per-stage ETAs and its own."""

    stages: dict[str, StageEta]
    eta_s: float | None


def stage_eta(pending: int, reviews_per_s: float | None) -> float | None:
    """Seconds to process `pending` reviews at `reviews_per_s` (0 if none pending)."""
    if pending <= 0:
        return 0.0
    if reviews_per_s is None or not math.isfinite(reviews_per_s) or reviews_per_s <= 0:
        return None
    return round(pending / reviews_per_s, 1)


def job_eta(pending: Mapping[str, int], rates: Mapping[str, StageRate]) -> JobEta:
    """Per-stage ETAs for a job's `pending` reviews per stage, and the job's ETA.

    `pending` maps a stage name to the reviews of the job that stage has not finished yet
    (expected minus done minus dead-lettered, never negative). A stage without a measured
    speed gets `eta_s=None`. The job's ETA is the largest known stage ETA; it is unknown if a
    stage with pending work has no measured speed *and* a backlog (or no published figures at
    all): that stage may be the bottleneck. A stage without a backlog keeps up with what
    reaches it, so it cannot be the one that decides when the job ends.
    """
    stages: dict[str, StageEta] = {}
    unknown_bottleneck = False
    for stage, count in pending.items():
        rate = rates.get(stage)
        n = max(0, int(count))
        eta = stage_eta(n, rate.reviews_per_s if rate else None)
        stages[stage] = StageEta(stage, n, eta)
        if eta is None and (rate is None or rate.lag > 0):
            unknown_bottleneck = True
    known = [s.eta_s for s in stages.values() if s.eta_s is not None]
    overall = None if unknown_bottleneck else max(known, default=0.0)
    return JobEta(stages=stages, eta_s=overall)


def pending_by_stage(expected: int, done: Mapping[str, int]) -> dict[str, int]:
    """Reviews each stage still has to finish: `expected - done[stage]`, floored at 0.

    `done[stage]` must count the reviews the stage passed on *and* those it (or an earlier
    stage) dead-lettered, so a job with failures still reaches zero pending.
    """
    return {stage: max(0, expected - n) for stage, n in done.items()}


def encode_stage_rates(rates: Mapping[str, StageRate], updated_at: float) -> bytes:
    """The JSON document the exporter stores under `STAGE_RATES_KEY`."""
    return orjson.dumps(
        {"updated_at": updated_at, "stages": {k: asdict(v) for k, v in rates.items()}}
    )


def decode_stage_rates(raw: bytes | str | None) -> dict[str, StageRate]:
    """Parse `encode_stage_rates` output; empty for None or a document of another shape."""
    if not raw:
        return {}
    try:
        doc = orjson.loads(raw)
        stages: dict[str, Any] = doc["stages"]
        return {k: StageRate(**v) for k, v in stages.items()}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}


class AsyncRedisGet(Protocol):
    """The one Redis call the reader needs (redis.asyncio.Redis satisfies it)."""

    def get(self, name: str) -> Awaitable[Any]:
        """Value of `name` or None."""
        ...


async def read_stage_rates(
    redis: AsyncRedisGet, key: str = STAGE_RATES_KEY
) -> dict[str, StageRate]:
    """The stage rates the lag exporter last published (empty if none or expired)."""
    return decode_stage_rates(await redis.get(key))
