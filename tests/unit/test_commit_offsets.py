"""Offsets are committed only up to the highest run of consecutively finished batches."""

from __future__ import annotations

from shared.stage.offsets import PartitionOffsets


def test_nothing_committable_until_the_first_batch_finishes() -> None:
    po = PartitionOffsets(pending=[0, 10, 20])
    po.done[10] = 20
    assert po.committable() is None
    po.done[0] = 10
    assert po.committable() == 20
    assert po.pending == [20]
    # not acknowledged yet: still committable (a failed commit is retried next time)
    assert po.committable() == 20
    po.committed = 20
    assert po.committable() is None


def test_out_of_order_completion_commits_in_order() -> None:
    po = PartitionOffsets(pending=[0, 5, 9])
    po.done[9] = 12
    po.done[5] = 9
    assert po.committable() is None
    po.done[0] = 5
    assert po.committable() == 12
    assert po.pending == []
    assert po.done == {}
