"""In-memory doubles of the aiokafka consumer and producer, as the stage runner uses them.

`FakeConsumer` is one member of a consumer group over an in-memory log. It keeps the parts
of aiokafka's semantics the runner depends on (looked up in aiokafka 0.14's
`consumer/consumer.py`, `subscription_state.py`, `fetcher.py` and `group_coordinator.py`):

- the pause flag lives in the partition's assignment state, so a rebalance hands out
  fresh, unpaused states (aiokafka builds a new `Assignment`);
- `getmany` waits while a reassignment is in progress (`wait_for_assignment`) and returns
  records of assigned, unpaused partitions from their position, advancing it;
- `rebalance()` is what the group coordinator does: `on_partitions_revoked` is awaited
  first, with the old assignment still in place (commits of the old generation are still
  accepted then, as Kafka accepts them while the group is preparing a rebalance); then the
  new assignment is set, waiting `getmany` calls resume, and only after that is
  `on_partitions_assigned` awaited;
- a new assignment starts every partition at its committed offset;
- `commit` of a partition that is not assigned raises `IllegalStateError`; a commit of a
  generation older than the group's raises `CommitFailedError`.

Unlike aiokafka, fetching is instant: whatever the log holds for an assigned partition is
there for the very next `getmany`. aiokafka needs a round trip or two first, which is a
timing accident a runner must not rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition


@dataclass
class _State:
    position: int
    paused: bool = False


@dataclass
class Commit:
    """One accepted commit: the offsets and the generation it was made in."""

    offsets: dict[TopicPartition, int]
    generation: int


@dataclass
class FakeConsumer:
    """A consumer group member over `log` (partition -> record values, or (value,
    headers) pairs), see the module docstring."""

    topic: str
    log: dict[int, list[Any]]
    assigned: set[int] = field(default_factory=set)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    generation: int = 1
    # Called (once) when the runner first pauses: lets a test rebalance "while busy".
    on_first_pause: Any = None
    fail_commits: int = 0  # the next N commits raise a connection error

    def __post_init__(self) -> None:
        self.listener: ConsumerRebalanceListener | None = None
        self._states = {self.tp(p): _State(0) for p in self.assigned}
        self._stable = asyncio.Event()
        self._stable.set()
        self._paused_once = False
        self.closed = False
        self.getmany_calls = 0
        self.tasks: list[asyncio.Task[None]] = []

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    # -- the surface the runner uses -------------------------------------------------------

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.closed = True

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        assert topics == [self.topic]
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    def pause(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._state(tp).paused = True
        if partitions and not self._paused_once and self.on_first_pause is not None:
            self._paused_once = True
            self.tasks.append(asyncio.ensure_future(self.on_first_pause()))

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, s in self._states.items() if s.paused}

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._state(tp).paused = False

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.getmany_calls += 1
        await self._stable.wait()
        out = self._drain(max_records or 500)
        if not out and timeout_ms:
            await asyncio.sleep(min(timeout_ms, 10) / 1000)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaConnectionError("commit: connection lost")
        for tp in offsets:
            if tp not in self._states:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        self.committed.update(offsets)
        self.commits.append(Commit(dict(offsets), self.generation))

    # -- what the group coordinator does ---------------------------------------------------

    async def rebalance(self, partitions: Iterable[int]) -> None:
        """Revoke everything (eager protocol, as aiokafka), then assign `partitions`."""
        assert self.listener is not None
        self._stable.clear()
        await self.listener.on_partitions_revoked(set(self._states))
        self.generation += 1
        self._states = {
            self.tp(p): _State(self.committed.get(self.tp(p), 0)) for p in sorted(partitions)
        }
        self._stable.set()
        await asyncio.sleep(0)
        await self.listener.on_partitions_assigned(set(self._states))

    # -- helpers ---------------------------------------------------------------------------

    def _state(self, tp: TopicPartition) -> _State:
        state = self._states.get(tp)
        if state is None:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        return state

    def _drain(self, budget: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for tp, state in sorted(self._states.items()):
            if state.paused or budget <= 0:
                continue
            entries = self.log.get(tp.partition, [])[state.position : state.position + budget]
            if not entries:
                continue
            out[tp] = [
                _record(tp, state.position + i, *(e if isinstance(e, tuple) else (e, [])))
                for i, e in enumerate(entries)
            ]
            state.position += len(entries)
            budget -= len(entries)
        return out


def _record(
    tp: TopicPartition, offset: int, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=f"k{tp.partition}".encode(),
        value=value,
        checksum=None,
        serialized_key_size=2,
        serialized_value_size=len(value),
        headers=headers,
    )


class FakeProducer:
    """Acknowledges every send at once and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Any]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, headers))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut
