"""What a stage runner reports while it works, to one observer per stage.

The runner and the sink call these hooks at each step and know nothing about Prometheus
(the shape of faust's `sensors/base.py`): `StageObserver` does nothing,
`PrometheusObserver` (the default) feeds the stage metrics of `shared.metrics` under the
names and labels the dashboards and alert rules in deploy/ use.
"""

from __future__ import annotations

import time

from shared import metrics as m
from shared.errors import Failure


class StageObserver:
    """Every hook the runner calls; this base ignores them all."""

    def on_batch_start(self, topic: str, records: int) -> None:
        """A batch of `records` records of `topic` was taken on."""

    def on_batch_done(self, seconds: float) -> None:
        """A batch was written and its offsets handed to the committer."""

    def on_inflight(self, batches: int) -> None:
        """The number of batches in flight changed."""

    def on_rows_upserted(self, table: str, rows: int) -> None:
        """`rows` rows of `table` were upserted (and committed)."""

    def on_produced(self, topic: str, records: int) -> None:
        """`records` records to `topic` were acknowledged by the broker."""

    def on_reviews_out(self, reviews: int) -> None:
        """The stage passed `reviews` reviews on."""

    def on_retry(self, tier: int, failure: Failure) -> None:
        """A failed record (or review) went to retry tier `tier`."""

    def on_dead_letter(self, failure: Failure) -> None:
        """A failed record (or review) went to the dead-letter topic."""

    def on_gave_up(self, failure: Failure) -> None:
        """A record kept failing with an infrastructure error while the infrastructure
        worked, through every try: it is dead-lettered instead of stalling its partition."""

    def on_infra_fault(self, component: str) -> None:
        """Work failed because `component` (postgres, kafka, redis, io) is unavailable."""

    def on_commit(self, ok: bool) -> None:
        """An offset commit succeeded or failed."""


class PrometheusObserver(StageObserver):
    """The stage metrics of `shared.metrics`, labelled with the stage's name."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_batch_start(self, topic: str, records: int) -> None:
        m.EVENTS_IN.labels(self.stage, topic).inc(records)
        m.BATCH_SIZE.labels(self.stage).observe(records)

    def on_batch_done(self, seconds: float) -> None:
        m.BATCH_SECONDS.labels(self.stage).observe(seconds)

    def on_inflight(self, batches: int) -> None:
        m.INFLIGHT_BATCHES.labels(self.stage).set(batches)

    def on_rows_upserted(self, table: str, rows: int) -> None:
        m.ROWS_UPSERTED.labels(self.stage, table).inc(rows)

    def on_produced(self, topic: str, records: int) -> None:
        m.EVENTS_OUT.labels(self.stage, topic).inc(records)

    def on_reviews_out(self, reviews: int) -> None:
        m.REVIEWS_OUT.labels(self.stage).inc(reviews)

    def on_retry(self, tier: int, failure: Failure) -> None:
        m.RETRIES.labels(self.stage, str(tier)).inc()

    def on_dead_letter(self, failure: Failure) -> None:
        m.DEAD_LETTERS.labels(self.stage, failure.kind).inc()

    def on_gave_up(self, failure: Failure) -> None:
        m.GAVE_UP.labels(self.stage, failure.kind).inc()

    def on_infra_fault(self, component: str) -> None:
        m.INFRA_FAULTS.labels(self.stage, component).inc()

    def on_commit(self, ok: bool) -> None:
        m.COMMITS.labels(self.stage, "ok" if ok else "failed").inc()
        if ok:
            m.LAST_COMMIT.labels(self.stage).set(time.time())
