"""`voc replay offsets`: reset a consumer group's offsets, with Kafka's own semantics.

The new offsets are those `kafka-consumer-groups --reset-offsets` computes for the same
arguments (ConsumerGroupCommand): every requested offset is clamped into
[log start, log end]; `--to-datetime`/`--by-duration` take the first offset whose record
timestamp is >= the time, or the log end when there is none; `--shift-by` moves the
committed offset and refuses partitions that have none. A dry run (the default) prints the
plan; `--execute` commits it, and only while the group has no active members, like Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


class ResetError(ValueError):
    """The reset cannot be planned or applied (bad argument, active group, no offset)."""


@dataclass(frozen=True)
class PartitionOffsets:
    """What the cluster knows about one partition for the group."""

    partition: int
    log_start: int
    log_end: int
    committed: int | None
    at_time: int | None = None  # first offset with timestamp >= the requested time


@dataclass(frozen=True)
class PlannedReset:
    """One partition's current and new offset, and the lag before and after."""

    partition: int
    current: int | None
    new: int
    log_end: int

    @property
    def lag_before(self) -> int | None:
        """Lag at the committed offset (None when nothing is committed)."""
        return None if self.current is None else self.log_end - self.current

    @property
    def lag_after(self) -> int:
        """Lag once the new offset is committed."""
        return self.log_end - self.new


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration as Kafka accepts it (`PT1H`, `P1DT30M`, `PT0.5S`)."""
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT"):
        raise ResetError(f"not an ISO 8601 duration: {text!r} (e.g. PT1H, P1DT30M)")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def parse_datetime_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 date-time (UTC when no zone is given)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ResetError(f"not an ISO 8601 date-time: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _clamp(offset: int, p: PartitionOffsets) -> int:
    return min(max(offset, p.log_start), p.log_end)


def plan(method: str, value: Any, partitions: Iterable[PartitionOffsets]) -> list[PlannedReset]:
    """New offsets for `method` (earliest, latest, datetime, duration, offset, shift)."""
    out = []
    for p in sorted(partitions, key=lambda x: x.partition):
        if method == "earliest":
            new = p.log_start
        elif method == "latest":
            new = p.log_end
        elif method in ("datetime", "duration"):
            new = p.log_end if p.at_time is None else _clamp(p.at_time, p)
        elif method == "offset":
            new = _clamp(int(value), p)
        elif method == "shift":
            if p.committed is None:
                raise ResetError(
                    f"cannot shift partition {p.partition}: it has no committed offset"
                )
            new = _clamp(p.committed + int(value), p)
        else:
            raise ResetError(f"unknown reset method {method!r}")
        out.append(PlannedReset(p.partition, p.committed, new, p.log_end))
    return out


def render_plan(group: str, topic: str, rows: list[PlannedReset]) -> str:
    """The dry-run table."""
    lines = [
        f"group {group}  topic {topic}",
        f"{'PARTITION':>9}  {'CURRENT':>10}  {'NEW':>10}  {'LAG':>8}  {'NEW-LAG':>8}"
        f"  {'CHANGE':>8}",
    ]
    for r in rows:
        cur = "-" if r.current is None else str(r.current)
        before = "-" if r.lag_before is None else str(r.lag_before)
        change = "-" if r.lag_before is None else f"{r.lag_after - r.lag_before:+d}"
        lines.append(
            f"{r.partition:>9}  {cur:>10}  {r.new:>10}  {before:>8}  {r.lag_after:>8}  {change:>8}"
        )
    return "\n".join(lines)


async def read_offsets(
    bootstrap: str, group: str, topic: str, at_ms: int | None, only: set[int] | None
) -> list[PartitionOffsets]:
    """Log start/end, the group's committed offset and (optionally) the offset at a time."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics([topic])
        parts = {p["partition"] for d in described if d["topic"] == topic for p in d["partitions"]}
        if not parts:
            raise ResetError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(parts) if only is None or p in only]
        if only is not None and len(tps) != len(only):
            raise ResetError(f"topic {topic!r} has no partition(s) {sorted(only - parts)}")
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        times = await consumer.offsets_for_times({tp: at_ms for tp in tps}) if at_ms else {}
        out = []
        for tp in tps:
            meta = committed.get(tp)
            cur = meta.offset if meta is not None and meta.offset >= 0 else None
            found = times.get(tp)
            out.append(
                PartitionOffsets(
                    tp.partition, starts[tp], ends[tp], cur, found.offset if found else None
                )
            )
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def active_members(bootstrap: str, group: str) -> int:
    """How many members the group has right now (a reset needs zero)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    total = 0
    for resp in responses:
        for g in getattr(resp, "groups", []):
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if g[1] == group:
                total += len(g[5])
    return total


async def commit_offsets(bootstrap: str, group: str, topic: str, rows: list[PlannedReset]) -> None:
    """Commit the planned offsets for an empty group (as a standalone, unsubscribed member)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, r.partition) for r in rows]
        consumer.assign(tps)
        await consumer.commit({TopicPartition(topic, r.partition): r.new for r in rows})
    finally:
        await consumer.stop()
