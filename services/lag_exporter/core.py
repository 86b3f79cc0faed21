"""Consumer-lag figures from offsets: the pure core of the lag exporter and of `voc lag`.

Nothing here talks to Kafka. The adapter (`services.lag_exporter.kafka`) takes a `Snapshot`
of the cluster (groups, their members and committed offsets, every partition's earliest and
log-end offset, and the timestamps of the oldest unconsumed records) and these functions
turn it into rows and aggregates, the same numbers `kafka-consumer-groups --describe` prints.

Definitions (those of Kafka's `ConsumerGroupCommand` and of kafka-lag-exporter):

- a group's rows are the partitions assigned to one of its members plus the partitions it has
  committed offsets for (a row without a member is an "unassigned" partition);
- `current_offset` is the committed offset (the next record the group will read), `None` when
  the group has never committed on that partition;
- `lag = log_end_offset - current_offset` (the high watermark), `None` without a commit;
- `lag_seconds` is the age of the oldest unconsumed record, i.e. `taken_at - timestamp` of the
  record *at* the committed offset; `0` when the lag is `0`, `None` when that timestamp could
  not be read.

`StallTracker` adds what the usual exporters lack: for how long a partition's committed offset
has not moved while its lag stayed above zero (one hung call in a stage holds back its whole
partition). `RateTracker` derives produce/consume rates from successive snapshots and each
stage's capacity (its consume rate while it had a backlog), which the job ETA uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

TP = tuple[str, int]  # (topic, partition)
GTP = tuple[str, str, int]  # (group, topic, partition)
GT = tuple[str, str]  # (group, topic)


@dataclass(frozen=True)
class Member:
    """A member of a consumer group and the partitions assigned to it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[TP, ...] = ()


@dataclass(frozen=True)
class GroupState:
    """A consumer group as the coordinator describes it, with its committed offsets."""

    group: str
    state: str  # Stable, Empty, PreparingRebalance, CompletingRebalance, Dead
    protocol_type: str  # "consumer" for subscribing clients, "" for commit-only (simple) groups
    members: tuple[Member, ...]
    committed: Mapping[TP, int]

    @property
    def is_simple_consumer(self) -> bool:
        """True for a group that only commits offsets (kafka-lag-exporter's label)."""
        return self.protocol_type == ""


@dataclass(frozen=True)
class PartitionOffsets:
    """A partition's earliest available offset and its log-end offset (high watermark)."""

    earliest: int
    latest: int


@dataclass(frozen=True)
class Snapshot:
    """Everything read from the cluster in one poll.

    `record_ts` maps (topic, partition, offset) to the timestamp (unix seconds) of the record
    a group will read next at that committed offset - only for partitions with lag.
    """

    taken_at: float
    groups: tuple[GroupState, ...]
    partitions: Mapping[TP, PartitionOffsets]
    record_ts: Mapping[tuple[str, int, int], float] = field(default_factory=dict)


@dataclass(frozen=True)
class LagRow:
    """One group/topic/partition, as one line of `kafka-consumer-groups --describe`."""

    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None
    lag_seconds: float | None
    consumer_id: str = ""
    host: str = ""
    client_id: str = ""

    def as_json(self) -> dict[str, object]:
        """The object `voc lag --json` prints for this row."""
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "current_offset": self.current_offset,
            "log_end_offset": self.log_end_offset,
            "lag": self.lag,
            "lag_seconds": self.lag_seconds,
            "consumer_id": self.consumer_id or None,
            "host": self.host or None,
            "client_id": self.client_id or None,
        }


@dataclass(frozen=True)
class GroupSummary:
    """A group's aggregates, as kafka-lag-exporter exports them."""

    group: str
    state: str
    is_simple_consumer: bool
    members: int
    max_lag: int
    max_lag_seconds: float
    sum_lag: int
    topic_sum_lag: Mapping[str, int]


def lag_rows(snapshot: Snapshot) -> list[LagRow]:
    """Every group/topic/partition row of the snapshot, sorted by group, topic, partition."""
    rows: list[LagRow] = []
    for g in sorted(snapshot.groups, key=lambda g: g.group):
        owner: dict[TP, Member] = {tp: m for m in g.members for tp in m.partitions}
        for tp in sorted(set(owner) | set(g.committed)):
            topic, partition = tp
            current = g.committed.get(tp)
            offsets = snapshot.partitions.get(tp)
            log_end = offsets.latest if offsets is not None else None
            lag = log_end - current if log_end is not None and current is not None else None
            member = owner.get(tp)
            rows.append(
                LagRow(
                    group=g.group,
                    topic=topic,
                    partition=partition,
                    current_offset=current,
                    log_end_offset=log_end,
                    lag=lag,
                    lag_seconds=_lag_seconds(snapshot, topic, partition, current, lag),
                    consumer_id=member.member_id if member else "",
                    host=member.host if member else "",
                    client_id=member.client_id if member else "",
                )
            )
    return rows


def _lag_seconds(
    snapshot: Snapshot, topic: str, partition: int, current: int | None, lag: int | None
) -> float | None:
    if lag is None or current is None:
        return None
    if lag <= 0:
        return 0.0
    ts = snapshot.record_ts.get((topic, partition, current))
    if ts is None:
        return None
    # A producer clock slightly ahead of ours must not give a negative age.
    return round(max(0.0, snapshot.taken_at - ts), 3)


def partitions_to_sample(snapshot_rows: Iterable[LagRow]) -> set[tuple[str, int, int]]:
    """(topic, partition, committed offset) whose record timestamp `lag_seconds` needs."""
    return {
        (r.topic, r.partition, r.current_offset)
        for r in snapshot_rows
        if r.lag is not None and r.lag > 0 and r.current_offset is not None
    }


def summarise(snapshot: Snapshot, rows: Sequence[LagRow]) -> list[GroupSummary]:
    """Per-group max/sum lag, max lag seconds, per-topic sum lag and member count."""
    by_group: dict[str, list[LagRow]] = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    out = []
    for g in sorted(snapshot.groups, key=lambda g: g.group):
        grows = by_group.get(g.group, [])
        lags = [r.lag for r in grows if r.lag is not None]
        secs = [r.lag_seconds for r in grows if r.lag_seconds is not None]
        topic_sum: dict[str, int] = {}
        for r in grows:
            if r.lag is not None:
                topic_sum[r.topic] = topic_sum.get(r.topic, 0) + r.lag
        out.append(
            GroupSummary(
                group=g.group,
                state=g.state,
                is_simple_consumer=g.is_simple_consumer,
                members=len(g.members),
                max_lag=max(lags, default=0),
                max_lag_seconds=max(secs, default=0.0),
                sum_lag=sum(lags),
                topic_sum_lag=topic_sum,
            )
        )
    return out


class GroupFilter:
    """Which groups to report: matching `allow` and not matching `deny` (full matches)."""

    def __init__(self, allow: str = ".*", deny: str = "") -> None:
        self._allow = re.compile(allow or ".*")
        self._deny = re.compile(deny) if deny else None

    def __call__(self, group: str) -> bool:
        if not self._allow.fullmatch(group):
            return False
        return not (self._deny is not None and self._deny.fullmatch(group))


class StallTracker:
    """Seconds since each partition's committed offset last moved while its lag stayed > 0.

    A partition is "stalled since" the first poll at which it had lag with a given committed
    offset; the clock restarts when the offset moves or the lag drops to zero. A partition
    seen for the first time with lag counts from that first sight (the exporter cannot know
    what happened before it started).
    """

    def __init__(self) -> None:
        self._since: dict[GTP, tuple[int, float, bool]] = {}  # -> (offset, since, lagging)

    def update(self, rows: Iterable[LagRow], now: float) -> dict[GTP, float]:
        """Feed one poll's rows; returns stalled seconds per (group, topic, partition)."""
        out: dict[GTP, float] = {}
        seen: dict[GTP, tuple[int, float, bool]] = {}
        for r in rows:
            if r.current_offset is None:
                continue
            key = (r.group, r.topic, r.partition)
            lagging = r.lag is not None and r.lag > 0
            prev = self._since.get(key)
            if prev is None or prev[0] != r.current_offset or not (lagging and prev[2]):
                prev = (r.current_offset, now, lagging)
            seen[key] = prev
            out[key] = round(now - prev[1], 3) if lagging else 0.0
        self._since = seen  # forget partitions and groups that went away
        return out


@dataclass(frozen=True)
class TopicRates:
    """Records/s produced to a topic and consumed from it by one group, and its capacity."""

    rate_in: float  # log-end offset growth, records/s
    rate_out: float  # committed offset growth, records/s
    capacity: float | None  # consume rate measured while the group had a backlog (EWMA)


class RateTracker:
    """Produce/consume rates per (group, topic) from successive snapshots.

    Rates are summed per partition over partitions present in both snapshots, so a partition
    appearing or a group resetting its offsets backwards never gives a negative rate.
    `capacity` is an exponentially weighted average of the consume rate over intervals in
    which the group had lag at both ends - how fast the stage goes when it has work, which is
    what an ETA needs (an idle stage's consume rate is zero, not its speed).
    """

    def __init__(self, alpha: float = 0.3, seed: Mapping[GT, float] | None = None) -> None:
        self.alpha = alpha
        self._prev: dict[GTP, tuple[int, int, int]] = {}  # -> (committed, log_end, lag)
        self._prev_at: float | None = None
        self.capacity: dict[GT, float] = dict(seed or {})

    def update(self, rows: Iterable[LagRow], now: float) -> dict[GT, TopicRates]:
        """Feed one poll's rows; returns rates per (group, topic) (empty on the first poll)."""
        current: dict[GTP, tuple[int, int, int]] = {}
        for r in rows:
            if r.current_offset is not None and r.log_end_offset is not None and r.lag is not None:
                current[(r.group, r.topic, r.partition)] = (
                    r.current_offset,
                    r.log_end_offset,
                    r.lag,
                )
        out: dict[GT, TopicRates] = {}
        if self._prev_at is not None and now > self._prev_at:
            dt = now - self._prev_at
            produced: dict[GT, int] = {}
            consumed: dict[GT, int] = {}
            busy: dict[GT, bool] = {}
            for key, (committed, log_end, lag) in current.items():
                gt = (key[0], key[1])
                before = self._prev.get(key)
                if before is None:
                    continue
                produced[gt] = produced.get(gt, 0) + max(0, log_end - before[1])
                consumed[gt] = consumed.get(gt, 0) + max(0, committed - before[0])
                was_busy = before[2] > 0 and lag > 0
                busy[gt] = busy.get(gt, False) or was_busy
            for gt in produced:
                rate_out = consumed[gt] / dt
                if busy[gt] and rate_out > 0:
                    old = self.capacity.get(gt)
                    self.capacity[gt] = (
                        rate_out if old is None else (1 - self.alpha) * old + self.alpha * rate_out
                    )
                out[gt] = TopicRates(
                    rate_in=round(produced[gt] / dt, 3),
                    rate_out=round(rate_out, 3),
                    capacity=_round_opt(self.capacity.get(gt)),
                )
        self._prev = current
        self._prev_at = now
        return out


def _round_opt(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Fields of the review-carrying events (shared.events) that list one entry per review.
_REVIEW_LIST_FIELDS = ("reviews", "review_ids", "rows")


def reviews_in_record(value: bytes | None) -> int | None:
    """How many reviews a pipeline record carries (None for records that carry none)."""
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in _REVIEW_LIST_FIELDS:
        items = doc.get(name)
        if isinstance(items, list):
            return len(items)
    return None


class ReviewsPerRecord:
    """Average reviews per record per topic, from the records sampled for `lag_seconds`."""

    def __init__(self, alpha: float = 0.2, seed: Mapping[str, float] | None = None) -> None:
        self.alpha = alpha
        self.value: dict[str, float] = dict(seed or {})

    def observe(self, topic: str, reviews: int) -> None:
        """Fold one sampled record's review count into the topic's average."""
        old = self.value.get(topic)
        self.value[topic] = (
            reviews if old is None else (1 - self.alpha) * old + self.alpha * reviews
        )


@dataclass(frozen=True)
class StageBacklog:
    """A pipeline stage's backlog and speed, published for `voc lag` and the job ETA."""

    stage: str
    group: str
    topic: str
    partitions: int
    members: int
    lag: int
    lag_seconds: float
    rate_in: float | None
    rate_out: float | None
    capacity: float | None  # records/s while busy
    reviews_per_record: float | None

    @property
    def reviews_per_s(self) -> float | None:
        """The stage's throughput in reviews/s while it has work, if known."""
        if self.capacity is None or self.reviews_per_record is None:
            return None
        return self.capacity * self.reviews_per_record


def stage_of(group: str, prefix: str, stages: Sequence[str]) -> str | None:
    """The pipeline stage a consumer group belongs to (`<prefix><stage>`), else None."""
    if not group.startswith(prefix):
        return None
    name = group[len(prefix) :]
    return name if name in stages else None


def stage_backlogs(
    rows: Sequence[LagRow],
    summaries: Sequence[GroupSummary],
    rates: Mapping[GT, TopicRates],
    reviews_per_record: Mapping[str, float],
    *,
    prefix: str,
    stages: Sequence[str],
) -> list[StageBacklog]:
    """One `StageBacklog` per pipeline stage group and topic it consumes, in stage order."""
    members = {s.group: s.members for s in summaries}
    grouped: dict[GT, list[LagRow]] = {}
    for r in rows:
        if stage_of(r.group, prefix, stages) is not None:
            grouped.setdefault((r.group, r.topic), []).append(r)
    out = []
    for (group, topic), trows in grouped.items():
        stage = stage_of(group, prefix, stages)
        assert stage is not None
        tr = rates.get((group, topic))
        secs = [r.lag_seconds for r in trows if r.lag_seconds is not None]
        rpr = reviews_per_record.get(topic)
        out.append(
            StageBacklog(
                stage=stage,
                group=group,
                topic=topic,
                partitions=len(trows),
                members=members.get(group, 0),
                lag=sum(r.lag for r in trows if r.lag is not None),
                lag_seconds=max(secs, default=0.0),
                rate_in=tr.rate_in if tr else None,
                rate_out=tr.rate_out if tr else None,
                capacity=tr.capacity if tr else None,
                reviews_per_record=None if rpr is None else round(rpr, 3),
            )
        )
    order = {s: i for i, s in enumerate(stages)}
    out.sort(key=lambda b: (order[b.stage], b.topic))
    return out
