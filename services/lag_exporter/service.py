"""The lag exporter's poll loop: snapshot -> rows, aggregates, stalls, rates -> metrics + Redis.

`LagExporter.poll_once()` is one cycle; `run()` repeats it every `interval_s` until stopped.
The Kafka source and the stage-rate publisher are ports, so tests can pass fakes. A failed
poll is logged and counted, and the previous figures stay on /metrics until the next
successful one (a broker blip must not look like "lag went to zero").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from services.lag_exporter import metrics as mx
from services.lag_exporter.core import (
    GroupFilter,
    RateTracker,
    ReviewsPerRecord,
    Snapshot,
    StageBacklog,
    StallTracker,
    lag_rows,
    stage_backlogs,
    summarise,
)
from shared.eta import StageRate, encode_stage_rates
from shared.metrics import Health
from shared.topics import STAGES

log = logging.getLogger(__name__)


class LagSource(Protocol):
    """Port: one consistent read of the cluster's consumer groups."""

    sampled_reviews: list[tuple[str, int]]

    async def snapshot(self, allow: Callable[[str], bool]) -> Snapshot:
        """Groups, offsets and the timestamps `lag_seconds` needs."""
        ...


class StageRatePublisher(Protocol):
    """Port: where per-stage backlog and speed go for the API's ETA."""

    async def publish(self, rates: Mapping[str, StageRate], updated_at: float) -> None:
        """Store the latest figures (replacing the previous ones)."""
        ...


class RedisStageRatePublisher:
    """Stores the stage rates as one JSON document with a TTL (shared.eta's format)."""

    def __init__(self, redis: object, key: str, ttl_s: int) -> None:
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s

    async def publish(self, rates: Mapping[str, StageRate], updated_at: float) -> None:
        await self.redis.set(  # type: ignore[attr-defined]
            self.key, encode_stage_rates(rates, updated_at), ex=self.ttl_s
        )


def to_stage_rates(backlogs: Sequence[StageBacklog]) -> dict[str, StageRate]:
    """Fold each stage's per-topic backlogs into one `StageRate` per stage."""
    out: dict[str, StageRate] = {}
    for b in backlogs:
        prev = out.get(b.stage)
        rps = b.reviews_per_s
        if prev is None:
            out[b.stage] = StageRate(
                stage=b.stage,
                lag=b.lag,
                lag_seconds=b.lag_seconds,
                rate_in=b.rate_in,
                rate_out=b.rate_out,
                reviews_per_s=None if rps is None else round(rps, 3),
                members=b.members,
            )
            continue
        out[b.stage] = StageRate(
            stage=b.stage,
            lag=prev.lag + b.lag,
            lag_seconds=max(prev.lag_seconds, b.lag_seconds),
            rate_in=_add(prev.rate_in, b.rate_in),
            rate_out=_add(prev.rate_out, b.rate_out),
            reviews_per_s=_add(prev.reviews_per_s, None if rps is None else round(rps, 3)),
            members=max(prev.members, b.members),
        )
    return out


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return round(a + b, 3)


class LagExporter:
    """Polls the cluster and keeps the metrics collector and the stage rates current."""

    def __init__(
        self,
        source: LagSource,
        collector: mx.LagCollector,
        *,
        cluster_name: str,
        topic_prefix: str,
        group_filter: Callable[[str], bool] | None = None,
        publisher: StageRatePublisher | None = None,
        stages: Sequence[str] = STAGES,
    ) -> None:
        self.source = source
        self.collector = collector
        self.cluster_name = cluster_name
        self.topic_prefix = topic_prefix
        self.group_filter = group_filter or GroupFilter()
        self.publisher = publisher
        self.stages = stages
        self.stalls = StallTracker()
        self.rates = RateTracker()
        self.reviews_per_record = ReviewsPerRecord()
        self.backlogs: list[StageBacklog] = []

    async def poll_once(self) -> mx.LagReport:
        """One poll: read the cluster, update metrics and publish stage rates."""
        started = time.perf_counter()
        snap = await self.source.snapshot(self.group_filter)
        poll_ms = (time.perf_counter() - started) * 1000
        rows = lag_rows(snap)
        summaries = summarise(snap, rows)
        stalled = self.stalls.update(rows, snap.taken_at)
        rates = self.rates.update(rows, snap.taken_at)
        for topic, reviews in self.source.sampled_reviews:
            self.reviews_per_record.observe(topic, reviews)
        report = mx.LagReport(
            cluster_name=self.cluster_name,
            rows=rows,
            summaries=summaries,
            partitions=snap.partitions,
            stalled=stalled,
            poll_ms=poll_ms,
        )
        self.collector.report = report
        mx.POLLS.labels("ok").inc()
        mx.LAST_POLL.set(snap.taken_at)
        self.backlogs = stage_backlogs(
            rows,
            summaries,
            rates,
            self.reviews_per_record.value,
            prefix=self.topic_prefix,
            stages=self.stages,
        )
        if self.publisher is not None:
            try:
                await self.publisher.publish(to_stage_rates(self.backlogs), snap.taken_at)
            except Exception as exc:  # Redis down: metrics still matter more than the ETA
                log.warning("publishing stage rates failed", extra={"error": repr(exc)})
        return report

    async def run(
        self, stopping: asyncio.Event, interval_s: float, health: Health | None = None
    ) -> None:
        """Poll every `interval_s` until `stopping` is set (beating `health` each time)."""
        while not stopping.is_set():
            if health is not None:
                health.beat()
            began = time.monotonic()
            try:
                report = await self.poll_once()
                log.debug(
                    "polled",
                    extra={"groups": len(report.summaries), "poll_ms": round(report.poll_ms, 1)},
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                mx.POLLS.labels("failed").inc()
                log.exception("poll failed; keeping the previous figures")
            wait = max(0.0, interval_s - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=wait)
