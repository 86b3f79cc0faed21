"""Which offsets may be committed: per partition, the contiguous run of finished batches.

Several batches of one partition may be in flight and finish in any order; the committed
offset only ever moves to the end of the longest run of finished batches from the start,
so a crash never skips an unfinished record.

Assignments change under the tracker: on a rebalance the runner `revoke`s the partitions
it gives up, which forgets their entries. A batch keeps the `Span`s it was given, and a
`Span` only counts for the `PartitionOffsets` it was cut from: when a partition comes back
after a revoke it gets a fresh one, and a batch of the old assignment finishing late can
never mark offsets of the new one as done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition


@dataclass(eq=False)
class PartitionOffsets:
    """Offsets handed out and finished for one partition (of one assignment)."""

    pending: list[int] = field(default_factory=list)  # batch start offsets, in order
    done: dict[int, int] = field(default_factory=dict)  # batch start -> next offset
    ready: int = -1  # next offset after the contiguous run of finished batches
    committed: int = -1  # what the broker has acknowledged

    def committable(self) -> int | None:
        """The offset to commit now, if it moved past the last acknowledged commit."""
        while self.pending and self.pending[0] in self.done:
            self.ready = self.done.pop(self.pending.pop(0))
        return self.ready if self.ready > self.committed else None


@dataclass(frozen=True, eq=False)
class Span:
    """The offsets [start, end) of one batch on one partition, tied to its tracker entry."""

    tp: TopicPartition
    start: int
    end: int
    owner: PartitionOffsets


class OffsetTracker:
    """Every assigned partition's `PartitionOffsets`."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionOffsets] = {}

    def begin(self, ranges: Mapping[TopicPartition, tuple[int, int]]) -> list[Span]:
        """Hand out one span per partition of a new batch (`tp -> (first, last + 1)`)."""
        spans = []
        for tp, (start, end) in ranges.items():
            po = self.partitions.setdefault(tp, PartitionOffsets())
            po.pending.append(start)
            spans.append(Span(tp, start, end, po))
        return spans

    def finish(self, spans: Iterable[Span]) -> None:
        """Mark a batch's spans done (spans of a revoked assignment are ignored)."""
        for s in spans:
            if self.partitions.get(s.tp) is s.owner and s.start in s.owner.pending:
                s.owner.done[s.start] = s.end

    def committable(self, assigned: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """What to commit now, for the partitions still assigned."""
        out = {}
        for tp in assigned:
            po = self.partitions.get(tp)
            nxt = po.committable() if po is not None else None
            if nxt is not None:
                out[tp] = nxt
        return out

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The broker acknowledged `offsets`."""
        for tp, nxt in offsets.items():
            po = self.partitions.get(tp)
            if po is not None:
                po.committed = max(po.committed, nxt)

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Forget partitions given up in a rebalance (a later assignment starts afresh)."""
        for tp in tps:
            self.partitions.pop(tp, None)
