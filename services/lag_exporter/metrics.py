"""The lag exporter's Prometheus metrics, with kafka-lag-exporter's names and labels.

Lag figures are rendered from the latest poll by a custom collector rather than kept in
labelled gauges: a group, topic or member that disappears then disappears from /metrics
too, instead of lingering with its last value. Names and labels follow kafka-lag-exporter
(seglo/kafka-lag-exporter), so its dashboards and alerts work unchanged:

- per partition: `kafka_consumergroup_group_offset`, `kafka_consumergroup_group_lag`,
  `kafka_consumergroup_group_lag_seconds`
  {cluster_name, group, topic, partition, member_host, consumer_id, client_id}
- per group: `kafka_consumergroup_group_max_lag`, `kafka_consumergroup_group_max_lag_seconds`
  {cluster_name, group, is_simple_consumer}; `kafka_consumergroup_group_sum_lag`
  {cluster_name, group}; per group and topic `kafka_consumergroup_group_topic_sum_lag`
- per partition of a consumed topic: `kafka_partition_latest_offset`,
  `kafka_partition_earliest_offset` {cluster_name, topic, partition}
- `kafka_consumergroup_poll_time_ms` {cluster_name}: how long the last poll took

and vocstream's own: `vocstream_commit_stalled_seconds` {group, topic, partition},
`vocstream_consumergroup_members` {cluster_name, group, state}, and the exporter's health
(`vocstream_lag_exporter_polls_total{result}`,
`vocstream_lag_exporter_last_poll_timestamp_seconds`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.lag_exporter.core import GTP, TP, GroupSummary, LagRow, PartitionOffsets

POLLS = Counter(
    "vocstream_lag_exporter_polls", "Polls of the cluster's consumer groups", ["result"]
)
LAST_POLL = Gauge(
    "vocstream_lag_exporter_last_poll_timestamp_seconds", "Unix time of the last successful poll"
)

_PARTITION_LABELS = (
    "cluster_name",
    "group",
    "topic",
    "partition",
    "member_host",
    "consumer_id",
    "client_id",
)


@dataclass(frozen=True)
class LagReport:
    """One poll's figures, as the collector renders them."""

    cluster_name: str
    rows: Sequence[LagRow]
    summaries: Sequence[GroupSummary]
    partitions: Mapping[TP, PartitionOffsets]
    stalled: Mapping[GTP, float]
    poll_ms: float


class LagCollector(Collector):
    """Renders the latest `LagReport` (nothing before the first poll)."""

    def __init__(self) -> None:
        self.report: LagReport | None = None

    def describe(self) -> list[Metric]:
        # Describing nothing keeps registration from calling collect() before the first poll.
        return []

    def collect(self) -> Iterator[Metric]:
        report = self.report
        if report is None:
            return
        yield from render(report)


def render(report: LagReport) -> list[Metric]:
    """The metric families of one report."""
    c = report.cluster_name
    offset = GaugeMetricFamily(
        "kafka_consumergroup_group_offset",
        "Last committed offset of a consumer group on a partition",
        labels=_PARTITION_LABELS,
    )
    lag = GaugeMetricFamily(
        "kafka_consumergroup_group_lag",
        "Records between a group's committed offset and the partition's log-end offset",
        labels=_PARTITION_LABELS,
    )
    lag_s = GaugeMetricFamily(
        "kafka_consumergroup_group_lag_seconds",
        "Age in seconds of the oldest record a group has not consumed on a partition",
        labels=_PARTITION_LABELS,
    )
    for r in report.rows:
        labels = [c, r.group, r.topic, str(r.partition), r.host, r.consumer_id, r.client_id]
        if r.current_offset is not None:
            offset.add_metric(labels, r.current_offset)
        if r.lag is not None:
            lag.add_metric(labels, r.lag)
        if r.lag_seconds is not None:
            lag_s.add_metric(labels, r.lag_seconds)

    max_lag = GaugeMetricFamily(
        "kafka_consumergroup_group_max_lag",
        "Largest partition lag of a consumer group",
        labels=("cluster_name", "group", "is_simple_consumer"),
    )
    max_lag_s = GaugeMetricFamily(
        "kafka_consumergroup_group_max_lag_seconds",
        "Largest partition lag in seconds of a consumer group",
        labels=("cluster_name", "group", "is_simple_consumer"),
    )
    sum_lag = GaugeMetricFamily(
        "kafka_consumergroup_group_sum_lag",
        "Sum of a consumer group's partition lags",
        labels=("cluster_name", "group"),
    )
    topic_sum = GaugeMetricFamily(
        "kafka_consumergroup_group_topic_sum_lag",
        "Sum of a consumer group's partition lags on one topic",
        labels=("cluster_name", "group", "topic"),
    )
    members = GaugeMetricFamily(
        "vocstream_consumergroup_members",
        "Members (consumers) of a consumer group",
        labels=("cluster_name", "group", "state"),
    )
    for s in report.summaries:
        simple = "true" if s.is_simple_consumer else "false"
        max_lag.add_metric([c, s.group, simple], s.max_lag)
        max_lag_s.add_metric([c, s.group, simple], s.max_lag_seconds)
        sum_lag.add_metric([c, s.group], s.sum_lag)
        for topic, value in sorted(s.topic_sum_lag.items()):
            topic_sum.add_metric([c, s.group, topic], value)
        members.add_metric([c, s.group, s.state], s.members)

    latest = GaugeMetricFamily(
        "kafka_partition_latest_offset",
        "Log-end offset (high watermark) of a partition",
        labels=("cluster_name", "topic", "partition"),
    )
    earliest = GaugeMetricFamily(
        "kafka_partition_earliest_offset",
        "Earliest available offset of a partition",
        labels=("cluster_name", "topic", "partition"),
    )
    for (topic, partition), po in sorted(report.partitions.items()):
        latest.add_metric([c, topic, str(partition)], po.latest)
        earliest.add_metric([c, topic, str(partition)], po.earliest)

    stalled = GaugeMetricFamily(
        "vocstream_commit_stalled_seconds",
        "Seconds a partition's committed offset has not moved while its lag is above zero",
        labels=("group", "topic", "partition"),
    )
    for (group, topic, partition), secs in sorted(report.stalled.items()):
        stalled.add_metric([group, topic, str(partition)], secs)

    poll = GaugeMetricFamily(
        "kafka_consumergroup_poll_time_ms",
        "Time the last poll of all consumer groups took, in milliseconds",
        labels=("cluster_name",),
    )
    poll.add_metric([c], round(report.poll_ms, 1))
    return [
        offset,
        lag,
        lag_s,
        max_lag,
        max_lag_s,
        sum_lag,
        topic_sum,
        members,
        latest,
        earliest,
        stalled,
        poll,
    ]
