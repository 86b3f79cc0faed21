"""The stage runtime's parts on their own: failures, routing, faults, the sink's produce.

No Kafka or Postgres: `kafka_double.FakeProducer` stands in for the producer, and the
probe of `Faults` is a function the test controls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, OutOfOrderSequenceNumber
from kafka_double import FakeProducer

from shared.errors import Failure, PoisonRecord
from shared.llm.errors import LLMMalformedOutput, LLMRateLimited, LLMRequestRejected
from shared.metrics import Health
from shared.stage.contract import DeadLetterOut, Incoming, Outgoing
from shared.stage.deadletters import H_PAYLOAD_OMITTED, Origin, Router, route
from shared.stage.faults import Faults, KeepsFailing
from shared.stage.observer import StageObserver
from shared.stage.sink import ProducerSlot, Sink


def test_a_failure_carries_its_class_reason_and_retryability() -> None:
    assert Failure.of(LLMRateLimited("quota")) == Failure("LLMRateLimited", "quota", True)
    assert Failure.of(LLMRequestRejected("401")) == Failure("LLMRequestRejected", "401", False)
    malformed = LLMMalformedOutput("junk", reason="1 validation error for X")
    assert Failure.of(malformed) == Failure(
        "LLMMalformedOutput", "junk (1 validation error for X)", False
    )
    assert Failure.of(PoisonRecord("no job id")) == Failure("PoisonRecord", "no job id", False)
    assert Failure.of(ValueError("bad")) == Failure("ValueError", "bad", False)
    assert Failure.of(KeyError()) == Failure("KeyError", "KeyError", False)


def _origin(attempt: int) -> Origin:
    return Origin("voc.reviews.translated", 2, 40, attempt, None)


@pytest.mark.parametrize(
    ("retryable", "attempt", "topic", "tier"),
    [
        (True, 0, "voc.insight.retry.1", 1),
        (True, 1, "voc.insight.retry.2", 2),
        (True, 2, "voc.insight.dlq", 0),  # out of tiers
        (False, 0, "voc.insight.dlq", 0),
    ],
)
def test_retryability_alone_decides_the_next_hop(
    retryable: bool, attempt: int, topic: str, tier: int
) -> None:
    failure = Failure("AnyName", "why", retryable)
    r = route(
        stage="insight",
        prefix="voc.",
        origin=_origin(attempt),
        failure=failure,
        delays_s=(1.0, 2.0),
        job_id="j",
        review_id="r",
        now_ms=1_000,
    )
    headers = dict(r.headers)
    assert (r.topic, r.tier, r.attempt) == (topic, tier, attempt + 1)
    assert headers["voc-error-type"] == b"AnyName"
    assert headers["voc-error-retryable"] == (b"true" if retryable else b"false")
    assert ("voc-not-before" in headers) == bool(tier)


class Counting(StageObserver):
    def __init__(self) -> None:
        self.faults: list[str] = []
        self.produced = 0

    def on_infra_fault(self, component: str) -> None:
        self.faults.append(component)

    def on_produced(self, topic: str, records: int) -> None:
        self.produced += records


def _faults(up: dict[str, bool], health: Health, observer: StageObserver) -> Faults:
    async def probe(component: str) -> bool:
        ok = up[component]
        if ok:
            health.up(component)
        else:
            health.down(component, "probe failed")
        return ok

    return Faults("t", probe, health, observer, max_tries=3, backoff_base_s=0.001)


async def test_an_outage_is_waited_out_however_many_attempts_it_takes() -> None:
    health, observer = Health(), Counting()
    health.ready = True
    up = {"kafka": False}
    faults = _faults(up, health, observer)
    calls = 0
    seen_not_ready = False

    async def work() -> str:
        nonlocal calls, seen_not_ready
        calls += 1
        seen_not_ready = seen_not_ready or not health.is_ready()
        if calls == 8:
            up["kafka"] = True
            return "done"
        raise KafkaConnectionError("down")

    assert await faults.run(work, "produce") == "done"
    assert calls == 8 and seen_not_ready and health.is_ready()
    assert observer.faults == ["kafka"] * 7


async def test_work_that_keeps_failing_while_the_infrastructure_works_gives_up() -> None:
    health, observer = Health(), Counting()
    faults = _faults({"kafka": True}, health, observer)
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        raise MessageSizeTooLargeError()

    with pytest.raises(KeepsFailing) as info:
        await faults.run(work, "produce")
    assert calls == 3 and info.value.tries == 3
    assert isinstance(info.value.error, MessageSizeTooLargeError)


class Refusing(FakeProducer):
    """Refuses values over `limit` bytes as the broker does (the future fails), and then,
    like aiokafka's idempotent producer, every later send (OutOfOrderSequenceNumber)."""

    def __init__(self, limit: int, made: list[Refusing]) -> None:
        super().__init__()
        self.limit = limit
        self.broken = False
        made.append(self)

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broken:
            fut.set_exception(OutOfOrderSequenceNumber())
        elif len(value) > self.limit:
            self.broken = True
            fut.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, key, value, headers))
            fut.set_result(None)
        return fut


async def test_a_refused_record_renews_the_producer_and_only_the_rest_is_resent() -> None:
    made: list[Refusing] = []
    slot = ProducerSlot(lambda: Refusing(100, made))
    await slot.start()
    observer = Counting()
    sink = Sink("t", None, slot, Router("t", "voc.", ()), _faults({}, Health(), observer), observer)  # type: ignore[arg-type]
    big = Outgoing("voc.t.dlq", b"k", b"x" * 500, (("voc-stage", b"t"),))
    todo = [
        (Outgoing("voc.out", b"k", b"a"), False),
        (big, True),
        (Outgoing("voc.out", b"k", b"b"), False),
    ]
    await sink._produce(todo)
    assert len(made) == 2  # the first one broke on the refused record
    assert [v for _, _, v, _ in made[0].sent] == [b"a"]
    resent = made[1].sent
    assert sorted(v for _, _, v, _ in resent) == [b"", b"b"]  # not "a" again
    (omitted,) = [h for _, _, v, h in resent if v == b""]
    assert (H_PAYLOAD_OMITTED, b"too large") in omitted
    assert observer.produced == 3


async def test_an_event_the_broker_refuses_is_not_sent_without_its_payload() -> None:
    made: list[Refusing] = []
    slot = ProducerSlot(lambda: Refusing(100, made))
    await slot.start()
    observer = Counting()
    sink = Sink("t", None, slot, Router("t", "voc.", ()), _faults({}, Health(), observer), observer)  # type: ignore[arg-type]
    with pytest.raises(MessageSizeTooLargeError):
        await sink._produce([(Outgoing("voc.out", b"k", b"x" * 500), False)])


def test_a_dead_letter_names_its_failure() -> None:
    rec = Incoming(None, "voc.t", 0, 7, b"{}", None)
    d = DeadLetterOut(Failure("PoisonRecord", "not JSON"), b"{}", None, rec)
    assert (d.error_type, d.error) == ("PoisonRecord", "not JSON")
    rows = Router("ingest", "voc.", ()).rows(
        d,
        route(
            stage="ingest",
            prefix="voc.",
            origin=_origin(0),
            failure=d.failure,
            delays_s=(),
            job_id=None,
            review_id=None,
        ),
    )
    assert [(r["id"], r["error_type"], r["error"]) for r in rows] == [
        ("ingest:voc.t:0:7", "PoisonRecord", "not JSON")
    ]
