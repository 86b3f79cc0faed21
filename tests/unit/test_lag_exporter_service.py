"""The exporter's poll loop with a fake Kafka source: metrics text and published stage rates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.lag_exporter.core import GroupState, Member, PartitionOffsets, Snapshot
from services.lag_exporter.metrics import LagCollector
from services.lag_exporter.service import LagExporter
from shared.eta import StageRate

T = "voc.reviews.translated"


class FakeSource:
    """Serves scripted snapshots; `sampled_reviews` like the Kafka adapter."""

    def __init__(self, snapshots: list[Snapshot]) -> None:
        self.snapshots = snapshots
        self.sampled_reviews: list[tuple[str, int]] = []
        self.allowed: list[str] = []

    async def snapshot(self, allow: Callable[[str], bool]) -> Snapshot:
        snap = self.snapshots.pop(0)
        self.allowed = [g.group for g in snap.groups if allow(g.group)]
        self.sampled_reviews = [(T, 20)]
        return Snapshot(
            snap.taken_at,
            tuple(g for g in snap.groups if allow(g.group)),
            snap.partitions,
            snap.record_ts,
        )


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[Mapping[str, StageRate]] = []

    async def publish(self, rates: Mapping[str, StageRate], updated_at: float) -> None:
        self.published.append(rates)


def _snap(at: float, committed: int, end: int) -> Snapshot:
    member = Member("voc-insight-1", "voc-insight", "/127.0.0.1", ((T, 0),))
    return Snapshot(
        taken_at=at,
        groups=(
            GroupState("voc.insight", "Stable", "consumer", (member,), {(T, 0): committed}),
            GroupState("other", "Empty", "", (), {(T, 0): 0}),
        ),
        partitions={(T, 0): PartitionOffsets(0, end)},
        record_ts={(T, 0, committed): at - 7.5},
    )


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_poll_exports_kafka_lag_exporter_metrics_and_publishes_rates() -> None:
    registry = CollectorRegistry()
    collector = LagCollector()
    registry.register(collector)
    publisher = FakePublisher()
    exporter = LagExporter(
        FakeSource([_snap(100.0, 10, 50), _snap(110.0, 30, 60)]),
        collector,
        cluster_name="test",
        topic_prefix="voc.",
        group_filter=lambda g: g.startswith("voc."),
        publisher=publisher,
    )
    assert _samples(registry) == {}  # nothing before the first poll
    asyncio.run(exporter.poll_once())
    asyncio.run(exporter.poll_once())
    got = _samples(registry)
    part = (
        ("client_id", "voc-insight"),
        ("cluster_name", "test"),
        ("consumer_id", "voc-insight-1"),
        ("group", "voc.insight"),
        ("member_host", "/127.0.0.1"),
        ("partition", "0"),
        ("topic", T),
    )
    assert got[("kafka_consumergroup_group_offset", part)] == 30
    assert got[("kafka_consumergroup_group_lag", part)] == 30
    assert got[("kafka_consumergroup_group_lag_seconds", part)] == 7.5
    grp = (("cluster_name", "test"), ("group", "voc.insight"), ("is_simple_consumer", "false"))
    assert got[("kafka_consumergroup_group_max_lag", grp)] == 30
    assert got[("kafka_consumergroup_group_max_lag_seconds", grp)] == 7.5
    g2 = (("cluster_name", "test"), ("group", "voc.insight"))
    assert got[("kafka_consumergroup_group_sum_lag", g2)] == 30
    assert got[("kafka_consumergroup_group_topic_sum_lag", (*g2, ("topic", T)))] == 30
    assert got[("vocstream_consumergroup_members", (*g2, ("state", "Stable")))] == 1
    pt = (("cluster_name", "test"), ("partition", "0"), ("topic", T))
    assert got[("kafka_partition_latest_offset", pt)] == 60
    assert got[("kafka_partition_earliest_offset", pt)] == 0
    stall = (("group", "voc.insight"), ("partition", "0"), ("topic", T))
    assert got[("vocstream_commit_stalled_seconds", stall)] == 0.0  # offset moved
    assert ("kafka_consumergroup_poll_time_ms", (("cluster_name", "test"),)) in got
    assert not any(dict(k[1]).get("group") == "other" for k in got)  # denied group

    rates = publisher.published[-1]["insight"]
    assert rates.lag == 30 and rates.rate_out == 2.0 and rates.rate_in == 1.0
    assert rates.reviews_per_s == 2.0 * 20  # capacity 2 records/s x 20 reviews/record
    assert rates.members == 1


def test_failed_poll_keeps_previous_figures() -> None:
    class Boom(FakeSource):
        async def snapshot(self, allow: Callable[[str], bool]) -> Snapshot:
            if not self.snapshots:
                raise OSError("broker down")
            return await super().snapshot(allow)

    collector = LagCollector()
    exporter = LagExporter(
        Boom([_snap(100.0, 1, 2)]), collector, cluster_name="c", topic_prefix="voc."
    )

    async def run() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(exporter.run(stopping, 0.01))
        await asyncio.sleep(0.1)
        stopping.set()
        await task

    asyncio.run(run())
    assert collector.report is not None
    (row,) = [r for r in collector.report.rows if r.group == "voc.insight"]
    assert row.current_offset == 1
