"""The translate handler with a fake `Translator`: packing across events, retries alone,
dead letters. No Kafka, Postgres or LLM: the handler only returns what the runner writes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.translate.core import PackLimits, ToTranslate
from services.translate.service import TRANSLATIONS, TranslateHandler, Validator
from shared.events import Review, ReviewsLearned, ReviewsTranslated
from shared.llm.errors import LLMMalformedOutput
from shared.prompts.translate import TranslatedItem, TranslateOutput
from shared.stage import Incoming


class FakeTranslator:
    """Answers `[src->tgt] text`; drops ids in `drop` from packed calls; items whose text
    contains POISON make every call that carries them fail as malformed."""

    def __init__(self, drop: frozenset[str] = frozenset()) -> None:
        self.drop = drop
        self.calls: list[list[str]] = []
        self.cached: list[bool] = []  # the `cache` flag of each call

    async def translate(
        self,
        job_id: str,
        target_language: str,
        items: Sequence[ToTranslate],
        validate: Validator | None = None,
        cache: bool = True,
    ) -> TranslateOutput:
        self.calls.append([i.review_id for i in items])
        self.cached.append(cache)
        if any("POISON" in i.text for i in items):
            raise LLMMalformedOutput("translate: malformed answer", stage="translate")
        out = TranslateOutput(
            items=[
                TranslatedItem(
                    id=i.review_id,
                    translation=f"[{i.source_language}->{target_language}] {i.text}",
                    source_language=i.source_language or "und",
                )
                for i in items
                if len(items) == 1 or i.review_id not in self.drop
            ]
        )
        if validate is not None:
            validate(out)
        return out


GERMAN = "Der Kopfhörer klingt gut, aber die Verarbeitung ist nicht sehr stabil."
ENGLISH = "The headphones sound good but the build is not very sturdy."


def _batch(n_events: int, per_event: int, job_id: str = "job-1") -> list[Incoming]:
    batch = []
    for e in range(n_events):
        reviews = [
            Review(id=f"r{e:02d}{k:02d}", text=GERMAN if k % 3 else ENGLISH, rating=3)
            for k in range(per_event)
        ]
        event = ReviewsLearned(job_id=job_id, target_language="en", reviews=reviews)
        batch.append(
            Incoming(event, "voc.reviews.learned", 0, e, event.to_bytes(), f"{job_id}:{e}".encode())
        )
    return batch


def _handler(fake: FakeTranslator, linger_s: float = 0.02) -> TranslateHandler:
    return TranslateHandler(
        fake, PackLimits(), concurrency=4, topic_prefix="voc.", linger_s=linger_s
    )


async def test_calls_pack_across_the_events_of_a_batch() -> None:
    fake = FakeTranslator()
    result = await _handler(fake).handle(_batch(n_events=6, per_event=15))
    # 90 reviews, 30 English skipped, 60 German in two full calls (not one per event).
    assert [len(c) for c in fake.calls] == [30, 30]
    ((spec, rows),) = result.upserts
    assert spec is TRANSLATIONS
    assert len(rows) == 90
    assert sum(r["translated"] for r in rows) == 60
    assert all(r["text"] == ENGLISH for r in rows if not r["translated"])
    assert all(r["text"].startswith("[de->en] ") for r in rows if r["translated"])
    assert len(result.events) == 6 and result.reviews_out == 90
    first = ReviewsTranslated.model_validate_json(result.events[0].value)
    assert [r.id for r in first.reviews] == [f"r00{k:02d}" for k in range(15)]
    assert result.events[0].key == b"job-1:0"
    assert result.events[0].topic == "voc.reviews.translated"
    assert not result.dead_letters


async def test_missing_items_are_retried_alone() -> None:
    fake = FakeTranslator(drop=frozenset({"r0001", "r0005"}))
    result = await _handler(fake).handle(_batch(n_events=1, per_event=12))
    assert fake.calls[0] == [f"r00{k:02d}" for k in range(12) if k % 3]
    assert sorted(fake.calls[1:]) == [["r0001"], ["r0005"]]
    assert len(result.upserts[0][1]) == 12
    assert not result.dead_letters


async def test_a_review_that_keeps_failing_is_dead_lettered_alone() -> None:
    batch = _batch(n_events=2, per_event=9)
    poisoned = batch[1].event.reviews[4]
    reviews = list(batch[1].event.reviews)
    reviews[4] = poisoned.model_copy(update={"text": GERMAN + " POISON"})
    event = ReviewsLearned(job_id="job-1", target_language="en", reviews=reviews)
    batch[1] = Incoming(event, "voc.reviews.learned", 0, 1, event.to_bytes(), b"job-1:1")
    fake = FakeTranslator()
    result = await _handler(fake).handle(batch)
    # One packed call of 12 fails as malformed; the packer splits it in halves, and the half
    # carrying the poison again, down to the poisoned review alone: 12, 6+6, 3+3, 1+2, 1+1.
    assert [len(c) for c in fake.calls] == [12, 6, 6, 3, 3, 1, 2, 1, 1]
    (dead,) = result.dead_letters
    assert dead.review_id == poisoned.id and dead.job_id == "job-1"
    assert dead.error_type == "LLMMalformedOutput"
    assert dead.source is batch[1] and dead.key == b"job-1:1"
    redrive = ReviewsLearned.model_validate_json(dead.value)
    assert [r.id for r in redrive.reviews] == [poisoned.id]
    assert len(result.upserts[0][1]) == 17
    second = ReviewsTranslated.model_validate_json(result.events[1].value)
    assert poisoned.id not in {r.id for r in second.reviews} and len(second.reviews) == 8


async def test_a_review_repeated_in_a_batch_is_translated_once() -> None:
    batch = _batch(n_events=1, per_event=6)
    again = Incoming(batch[0].event, "voc.reviews.learned", 0, 1, batch[0].raw, batch[0].key)
    fake = FakeTranslator()
    result = await _handler(fake).handle([batch[0], again])
    assert [len(c) for c in fake.calls] == [4]
    assert len(result.events) == 2 and result.reviews_out == 12


async def test_jobs_are_packed_separately() -> None:
    fake = FakeTranslator()
    await _handler(fake).handle(_batch(1, 6, "job-a") + _batch(1, 6, "job-b"))
    assert sorted(len(c) for c in fake.calls) == [4, 4]


async def test_batches_in_flight_together_share_calls() -> None:
    fake = FakeTranslator()
    handler = _handler(fake, linger_s=0.2)
    small = [_batch(1, 6, "job-1") for _ in range(3)]
    for i, b in enumerate(small):  # distinct reviews per batch
        ev = b[0].event
        reviews = [r.model_copy(update={"id": f"{r.id}-{i}"}) for r in ev.reviews]
        event = ReviewsLearned(job_id="job-1", target_language="en", reviews=reviews)
        small[i] = [Incoming(event, "voc.reviews.learned", 0, i, event.to_bytes(), b"k")]
    results = await asyncio.gather(*(handler.handle(b) for b in small))
    assert [len(c) for c in fake.calls] == [12]  # 3 x 4 German reviews, one call
    assert [r.reviews_out for r in results] == [6, 6, 6]


async def test_a_full_call_does_not_wait_for_the_linger() -> None:
    fake = FakeTranslator()
    handler = _handler(fake, linger_s=30.0)
    result = await asyncio.wait_for(handler.handle(_batch(1, 45)), timeout=5.0)
    assert [len(c) for c in fake.calls] == [30]
    assert result.reviews_out == 45


async def test_a_no_cache_replay_skips_the_cache_even_in_a_call_another_batch_opened() -> None:
    """A `--no-cache` replay's review may join a call a normal batch opened (the packer
    sends it from its own task): that call, and the retries of its items, skip the cache."""
    fake = FakeTranslator()
    handler = _handler(fake, linger_s=0.2)

    def one(rid: str, replay: bool) -> list[Incoming]:
        event = ReviewsLearned(
            job_id="job-1", target_language="en", reviews=[Review(id=rid, text=f"{GERMAN} {rid}")]
        )
        headers = (("voc-replay", b"r1"), ("voc-no-cache", b"1")) if replay else ()
        return [Incoming(event, "t", 0, 0, event.to_bytes(), b"k", headers)]

    normal = asyncio.create_task(handler.handle(one("a", replay=False)))
    await asyncio.sleep(0.05)  # the normal batch's call is open and lingering
    await asyncio.gather(normal, handler.handle(one("b", replay=True)))
    assert fake.calls == [["a", "b"]] and fake.cached == [False]
    await handler.handle(one("c", replay=False))  # the replay is through: cached again
    assert fake.cached == [False, True]
