"""The lag exporter's pure core: rows, aggregates, stalls, rates, stage backlogs."""

from __future__ import annotations

import orjson
import pytest

from services.lag_exporter.core import (
    GroupFilter,
    GroupState,
    LagRow,
    Member,
    PartitionOffsets,
    RateTracker,
    ReviewsPerRecord,
    Snapshot,
    StallTracker,
    lag_rows,
    partitions_to_sample,
    reviews_in_record,
    stage_backlogs,
    stage_of,
    summarise,
)

T = "voc.reviews.ingested"


def _snap(
    committed: dict[tuple[str, int], int],
    latest: dict[int, int],
    *,
    members: tuple[Member, ...] = (),
    record_ts: dict[tuple[str, int, int], float] | None = None,
    taken_at: float = 1000.0,
    group: str = "voc.learn",
    protocol_type: str = "consumer",
) -> Snapshot:
    return Snapshot(
        taken_at=taken_at,
        groups=(GroupState(group, "Stable", protocol_type, members, committed),),
        partitions={(T, p): PartitionOffsets(0, end) for p, end in latest.items()},
        record_ts=record_ts or {},
    )


def test_rows_are_assigned_plus_committed_partitions_with_kafka_lag_definition() -> None:
    member = Member("m-1", "voc-learn", "/10.0.0.1", ((T, 0), (T, 1)))
    snap = _snap(
        {(T, 0): 5, (T, 2): 7},
        {0: 10, 1: 4, 2: 7},
        members=(member,),
        record_ts={(T, 0, 5): 990.0},
    )
    rows = lag_rows(snap)
    assert [(r.partition, r.current_offset, r.log_end_offset, r.lag) for r in rows] == [
        (0, 5, 10, 5),  # assigned and committed
        (1, None, 4, None),  # assigned, never committed: "-" like kafka-consumer-groups
        (2, 7, 7, 0),  # committed, no member any more
    ]
    assert rows[0].consumer_id == "m-1" and rows[0].host == "/10.0.0.1"
    assert rows[2].consumer_id == "" and rows[2].client_id == ""
    assert rows[0].lag_seconds == 10.0  # taken_at - timestamp of the record at offset 5
    assert rows[1].lag_seconds is None
    assert rows[2].lag_seconds == 0.0  # no lag: zero seconds


def test_lag_seconds_unknown_when_timestamp_missing_and_never_negative() -> None:
    snap = _snap({(T, 0): 1, (T, 1): 1}, {0: 3, 1: 3}, record_ts={(T, 1, 1): 1005.0})
    rows = lag_rows(snap)
    assert rows[0].lag_seconds is None
    assert rows[1].lag_seconds == 0.0  # producer clock ahead of ours


def test_partitions_to_sample_are_the_lagging_committed_ones() -> None:
    rows = lag_rows(_snap({(T, 0): 1, (T, 1): 3}, {0: 3, 1: 3, 2: 9}))
    assert partitions_to_sample(rows) == {(T, 0, 1)}


def test_summary_matches_kafka_lag_exporter_aggregates() -> None:
    snap = _snap(
        {(T, 0): 0, (T, 1): 6, ("other", 0): 1},
        {0: 4, 1: 9},
        record_ts={(T, 0, 0): 970.0, (T, 1, 6): 995.0},
    )
    snap = Snapshot(
        snap.taken_at,
        snap.groups,
        {**snap.partitions, ("other", 0): PartitionOffsets(0, 2)},
        snap.record_ts,
    )
    (s,) = summarise(snap, lag_rows(snap))
    assert (s.max_lag, s.sum_lag, s.max_lag_seconds) == (4, 8, 30.0)
    assert s.topic_sum_lag == {T: 7, "other": 1}
    assert s.members == 0 and s.is_simple_consumer is False


def test_simple_consumer_group_and_empty_group() -> None:
    snap = _snap({}, {0: 5}, protocol_type="")
    (s,) = summarise(snap, lag_rows(snap))
    assert s.is_simple_consumer and s.max_lag == 0 and s.sum_lag == 0 and s.topic_sum_lag == {}


def test_group_filter_full_match_allow_then_deny() -> None:
    f = GroupFilter(allow=r"voc\..*", deny=r"voc\.tmp-.*")
    assert f("voc.learn")
    assert not f("voc.tmp-1")
    assert not f("xvoc.learn")
    assert GroupFilter()("anything")


def _row(offset: int, lag: int, partition: int = 0) -> LagRow:
    return LagRow("g", T, partition, offset, offset + lag, lag, None)


def test_stall_counts_while_offset_frozen_with_lag_and_resets() -> None:
    st = StallTracker()
    assert st.update([_row(5, 3)], 100.0) == {("g", T, 0): 0.0}
    assert st.update([_row(5, 4)], 130.0) == {("g", T, 0): 30.0}
    assert st.update([_row(6, 4)], 140.0) == {("g", T, 0): 0.0}  # moved
    assert st.update([_row(6, 0)], 150.0) == {("g", T, 0): 0.0}  # caught up
    assert st.update([_row(6, 2)], 160.0) == {("g", T, 0): 0.0}  # new data arrives
    assert st.update([_row(6, 2)], 175.0) == {("g", T, 0): 15.0}


def test_stall_forgets_vanished_partitions_and_skips_uncommitted() -> None:
    st = StallTracker()
    st.update([_row(5, 3), _row(1, 1, partition=1)], 100.0)
    assert st.update([_row(5, 3)], 110.0) == {("g", T, 0): 10.0}
    assert st.update([LagRow("g", T, 2, None, 9, None, None)], 120.0) == {}


def test_rates_and_capacity_only_while_busy() -> None:
    rt = RateTracker(alpha=0.5)
    assert rt.update([_row(0, 100)], 0.0) == {}
    r = rt.update([_row(50, 100)], 10.0)  # consumed 50, produced 50 in 10 s, lag at both ends
    assert r[("g", T)].rate_out == 5.0 and r[("g", T)].rate_in == 5.0
    assert r[("g", T)].capacity == 5.0
    r = rt.update([_row(150, 0)], 20.0)  # caught up: not busy at the end, capacity unchanged
    assert r[("g", T)].rate_out == 10.0 and r[("g", T)].capacity == 5.0
    r = rt.update([_row(150, 10)], 30.0)
    assert r[("g", T)].rate_out == 0.0 and r[("g", T)].capacity == 5.0


def test_rates_ignore_offsets_reset_backwards() -> None:
    rt = RateTracker()
    rt.update([_row(100, 5)], 0.0)
    r = rt.update([_row(0, 105)], 1.0)  # a replay reset the group to earliest
    assert r[("g", T)].rate_out == 0.0


def test_reviews_in_record_reads_the_review_lists() -> None:
    assert reviews_in_record(orjson.dumps({"reviews": [1, 2, 3]})) == 3
    assert reviews_in_record(orjson.dumps({"review_ids": ["a"], "insights": []})) == 1
    assert reviews_in_record(orjson.dumps({"rows": [{}, {}]})) == 2
    assert reviews_in_record(orjson.dumps({"job_id": "x"})) is None
    assert reviews_in_record(b"not json") is None
    assert reviews_in_record(None) is None


def test_reviews_per_record_average() -> None:
    rpr = ReviewsPerRecord(alpha=0.5)
    rpr.observe(T, 100)
    rpr.observe(T, 200)
    assert rpr.value[T] == 150.0


def test_stage_of() -> None:
    stages = ("ingest", "learn")
    assert stage_of("voc.learn", "voc.", stages) == "learn"
    assert stage_of("voc.other", "voc.", stages) is None
    assert stage_of("x.learn", "voc.", stages) is None


def test_stage_backlogs_sum_per_stage_group_topic_in_stage_order() -> None:
    snap = Snapshot(
        100.0,
        (
            GroupState(
                "voc.learn",
                "Stable",
                "consumer",
                (Member("m", "c", "h", ((T, 0),)),),
                {(T, 0): 1, (T, 1): 2},
            ),
            GroupState("voc.ingest", "Empty", "consumer", (), {("voc.reviews.submitted", 0): 3}),
            GroupState("adhoc", "Empty", "consumer", (), {(T, 0): 0}),
        ),
        {
            (T, 0): PartitionOffsets(0, 4),
            (T, 1): PartitionOffsets(0, 2),
            ("voc.reviews.submitted", 0): PartitionOffsets(0, 3),
        },
        {(T, 0, 1): 90.0},
    )
    rows = lag_rows(snap)
    backlogs = stage_backlogs(
        rows, summarise(snap, rows), {}, {T: 100.0}, prefix="voc.", stages=("ingest", "learn")
    )
    assert [(b.stage, b.lag, b.partitions, b.members) for b in backlogs] == [
        ("ingest", 0, 1, 0),
        ("learn", 3, 2, 1),
    ]
    learn = backlogs[1]
    assert learn.lag_seconds == 10.0 and learn.reviews_per_record == 100.0
    assert learn.reviews_per_s is None  # no capacity measured yet


@pytest.mark.parametrize("lag,expected", [(0, 0.0), (None, None)])
def test_as_json_fields(lag: int | None, expected: float | None) -> None:
    row = LagRow("g", T, 0, 1 if lag is not None else None, 1, lag, expected)
    doc = row.as_json()
    assert set(doc) >= {
        "group",
        "topic",
        "partition",
        "current_offset",
        "log_end_offset",
        "lag",
        "lag_seconds",
    }
    assert doc["lag_seconds"] == expected
