"""The translate stage as the runner sees it: plan, pack, call the LLM, match, emit.

Per batch of `reviews.learned` events, reviews are grouped by job (across all events of
the batch), reviews already in the job's target language are skipped, and the rest are
packed into calls by `packer.CallPacker`, which also fills a job's calls across the
batches in flight at the same time (so a trickle of small events still makes full
calls); calls run concurrently, bounded by one semaphore per process. Each answer is
matched back to its reviews by id; a review whose item is missing or mangled, or whose
whole call failed, is retried in a call of its own; if that fails too the review alone
is dead-lettered (its own one-review event is the dead letter's value, so a redrive
reprocesses just it). Every other review gets one `translations` row and goes on in a
`reviews.translated` event that mirrors its input event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from services.translate import metrics
from services.translate.core import (
    PackLimits,
    ToTranslate,
    Translated,
    check_single,
    match_answer,
    plan_reviews,
    translated_event,
    translation_row,
)
from services.translate.item_cache import ItemCache
from services.translate.packer import CallPacker
from services.translate.settings import TranslateSettings
from shared import metrics as m
from shared.db.models import Translation
from shared.db.pool import ConnectionPool
from shared.db.tenants import JobTenants
from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.events import Review, ReviewsLearned
from shared.llm.client import LLM, build_llm
from shared.llm.errors import LLMError, LLMMalformedOutput
from shared.llm.settings import LLMSettings
from shared.prompts import translate as translate_prompt
from shared.prompts.translate import TranslatedItem, TranslateOutput
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import DeadLetterOut, Incoming, Outgoing, StageResult
from shared.stage.fair import FairSlots
from shared.topics import REVIEWS_LEARNED, REVIEWS_TRANSLATED, TopicSpec

log = logging.getLogger(__name__)

TRANSLATIONS = Upsert(Translation.__table__, key=("review_id",))  # type: ignore[arg-type]

Validator = Callable[[TranslateOutput], None]


class Translator(Protocol):
    """Port: one translate call for a list of items (raises the `shared.llm` errors)."""

    async def translate(
        self,
        job_id: str,
        target_language: str,
        items: Sequence[ToTranslate],
        validate: Validator | None = None,
        cache: bool = True,
    ) -> TranslateOutput:
        """The model's answer for `items` (`cache=False`: skip every cache)."""
        ...


class LLMTranslator:
    """`Translator` over the shared LLM client (rate limited, retried), with a per-item
    translation cache in front of it (`services.translate.item_cache`)."""

    def __init__(self, llm: LLM, redis: Redis | None = None, cache: ItemCache | None = None):
        self.llm = llm
        self.redis = redis
        self.cache = cache

    async def translate(
        self,
        job_id: str,
        target_language: str,
        items: Sequence[ToTranslate],
        validate: Validator | None = None,
        cache: bool = True,
    ) -> TranslateOutput:
        """One structured `translate` call for the items not in the cache. Packed calls
        pass no `validate`: a missing item is cheaper to retry alone than the whole call.
        `cache=False` (a `--no-cache` replay) asks the model again; the answers are still
        stored."""
        hits = {}
        if self.cache is not None and cache:
            hits = await self.cache.get_many(job_id, target_language, items)
        todo = [i for i in items if i.review_id not in hits]
        answers: list[TranslatedItem] = []
        if todo:
            payload = {"target_language": target_language, "items": [i.as_input() for i in todo]}
            out = await self.llm.complete(
                "translate",
                translate_prompt.PROMPT,
                payload,
                TranslateOutput,
                job_id=job_id,
                cache=cache,
                validate=validate,
            )
            answers = out.items
            if self.cache is not None:
                await self.cache.put_many(job_id, target_language, todo, answers)
        return TranslateOutput(items=[*hits.values(), *answers])

    async def close(self) -> None:
        """Close the LLM's HTTP clients and its Redis connection."""
        await self.llm.aclose()
        if self.redis is not None:
            await self.redis.aclose()


@dataclass
class _JobWork:
    """The reviews of one job in a batch, and the first input record of each review."""

    job_id: str
    target_language: str
    reviews: dict[str, Review]
    origin: dict[str, Incoming]
    no_cache: bool = False  # a record of a `--no-cache` replay is among them


@dataclass(frozen=True)
class _Failure:
    """A review that could not be translated, and the last error."""

    item: ToTranslate
    error: BaseException


class TranslateHandler:
    """The translate `StageHandler` (see the module docstring)."""

    name = "translate"
    input: TopicSpec = REVIEWS_LEARNED

    def __init__(
        self,
        translator: Translator,
        limits: PackLimits,
        concurrency: int,
        topic_prefix: str,
        linger_s: float = 0.5,
    ) -> None:
        self.translator = translator
        self.limits = limits
        self.sem = FairSlots(concurrency)  # handed out to the jobs waiting in turn
        self.output_topic = REVIEWS_TRANSLATED.full_name(topic_prefix)
        # A pack answered malformed is split by the packer (fewer items per call).
        self.packer: CallPacker[Translated | _Failure] = CallPacker(
            limits, linger_s, self._call, split_on=(LLMMalformedOutput,)
        )
        # Jobs with `--no-cache` records waiting for their calls: a call is made from the
        # packer's own task, possibly opened by another batch, so the flag is kept per job
        # for as long as such a batch waits, and every call of the job skips the cache.
        self._fresh: Counter[str] = Counter()

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Translate a batch of `reviews.learned` events (see the module docstring)."""
        jobs = _group(batch)
        outcomes = await asyncio.gather(*(self._job(w) for w in jobs.values()))
        result = StageResult()
        done: dict[str, dict[str, Translated]] = {}
        rows: list[dict[str, Any]] = []
        for work, (translated, failures) in zip(jobs.values(), outcomes, strict=True):
            done.setdefault(work.job_id, {}).update((t.review_id, t) for t in translated)
            rows.extend(translation_row(work.job_id, work.target_language, t) for t in translated)
            result.dead_letters.extend(_dead_letter(work, f) for f in failures)
        for rec in batch:
            ev: ReviewsLearned = rec.event
            out = translated_event(ev, done.get(ev.job_id, {}))
            if out is not None:
                key = rec.key or ev.job_id.encode()
                result.events.append(Outgoing(self.output_topic, key, out.to_bytes()))
                result.reviews_out += len(out.reviews)
        if rows:
            rows.sort(key=lambda r: r["review_id"])  # one lock order for concurrent batches
            result.upserts.append((TRANSLATIONS, rows))
        return result

    async def _job(self, work: _JobWork) -> tuple[list[Translated], list[_Failure]]:
        """All of one job's reviews: skipped ones as they are, the rest through the LLM."""
        skipped, todo = plan_reviews(work.reviews.values(), work.target_language)
        m.REVIEWS_IN.labels(self.name).inc(len(work.reviews))
        metrics.REVIEWS.labels("skipped").inc(len(skipped))
        if work.no_cache:
            self._fresh[work.job_id] += 1
        try:
            results = await self.packer.submit(work.job_id, work.target_language, todo)
        finally:
            if work.no_cache:
                self._fresh[work.job_id] -= 1
                if self._fresh[work.job_id] <= 0:
                    del self._fresh[work.job_id]
        translated = list(skipped)
        translated.extend(r for r in results if isinstance(r, Translated))
        failures = [r for r in results if isinstance(r, _Failure)]
        metrics.REVIEWS.labels("translated").inc(len(translated) - len(skipped))
        metrics.REVIEWS.labels("failed").inc(len(failures))
        return translated, failures

    async def _call(
        self, job_id: str, target_language: str, call: list[ToTranslate]
    ) -> dict[str, Translated | _Failure]:
        """One packed call; its missing or mangled items (or all, if it failed) alone."""
        if len(call) == 1:
            return {call[0].review_id: await self._single(job_id, target_language, call[0])}
        metrics.CALLS.labels("batch").inc()
        metrics.CALL_ITEMS.observe(len(call))
        out: dict[str, Translated | _Failure] = {}
        try:
            async with self.sem.slot(job_id):
                answer = await self.translator.translate(
                    job_id, target_language, call, cache=job_id not in self._fresh
                )
        except LLMMalformedOutput:
            raise  # the packer runs the pack again in halves
        except LLMError as exc:
            log.warning(
                "translate call failed, retrying its reviews alone",
                extra={
                    "stage": self.name,
                    "job_id": job_id,
                    "items": len(call),
                    "error_type": type(exc).__name__,
                    "error": str(exc)[:300],
                },
            )
            missing = list(call)
        else:
            translated, missing = match_answer(call, answer.items, target_language)
            out.update((t.review_id, t) for t in translated)
        if missing:
            metrics.RETRIED_ALONE.inc(len(missing))
            singles = await asyncio.gather(
                *(self._single(job_id, target_language, item) for item in missing)
            )
            out.update((item.review_id, r) for item, r in zip(missing, singles, strict=True))
        return out

    async def _single(
        self, job_id: str, target_language: str, item: ToTranslate
    ) -> Translated | _Failure:
        """One review in a call of its own, the answer validated to contain just it."""
        metrics.CALLS.labels("single").inc()
        try:
            async with self.sem.slot(job_id):
                answer = await self.translator.translate(
                    job_id,
                    target_language,
                    [item],
                    check_single(item.review_id),
                    cache=job_id not in self._fresh,
                )
        except LLMError as exc:
            return _Failure(item, exc)
        translated, missing = match_answer([item], answer.items, target_language)
        if missing:  # only if a Translator ignored `validate`
            return _Failure(item, ValueError("the answer has no usable translation"))
        return translated[0]

    async def close(self) -> None:
        """Cancel calls still open and close the translator's connections."""
        await self.packer.close()
        closer = getattr(self.translator, "close", None)
        if closer is not None:
            await closer()


def _group(batch: Sequence[Incoming]) -> dict[tuple[str, str], _JobWork]:
    """Reviews of the batch by (job, target language), each review once, in order."""
    jobs: dict[tuple[str, str], _JobWork] = {}
    for rec in batch:
        ev: ReviewsLearned = rec.event
        key = (ev.job_id, ev.target_language)
        work = jobs.get(key)
        if work is None:
            work = jobs[key] = _JobWork(ev.job_id, ev.target_language, {}, {})
        work.no_cache = work.no_cache or rec.no_cache
        for r in ev.reviews:
            if r.id not in work.reviews:
                work.reviews[r.id] = r
                work.origin[r.id] = rec
    return jobs


def _dead_letter(work: _JobWork, failure: _Failure) -> DeadLetterOut:
    """A review given up on: its own one-review event, so a redrive retries just it."""
    rid = failure.item.review_id
    rec = work.origin[rid]
    event = ReviewsLearned(
        job_id=work.job_id, target_language=work.target_language, reviews=[work.reviews[rid]]
    )
    return DeadLetterOut(
        failure=Failure.of(failure.error),
        value=event.to_bytes(),
        key=rec.key,
        source=rec,
        job_id=work.job_id if len(work.job_id) <= 36 else None,
        review_id=rid if len(rid) <= 36 else None,
    )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    translate_settings: TranslateSettings | None = None,
    translator: Translator | None = None,
) -> TranslateHandler:
    """Wire the translate handler from settings; tests may pass their own `translator`."""
    ts = translate_settings or TranslateSettings()
    if translator is None:
        redis = redis_client(settings.redis.url)
        llm_settings = LLMSettings()
        tenants = JobTenants(pool)
        cache = ItemCache(
            redis,
            llm_settings.for_stage("translate").model,
            llm_settings.cache_ttl_s,
            tenants,
            llm_settings.key_prefix,
        )
        llm = build_llm(llm_settings, redis, share_of=tenants.tenant_of)
        translator = LLMTranslator(llm, redis, cache)
    return TranslateHandler(
        translator,
        ts.limits(),
        ts.concurrency,
        settings.kafka.topic_prefix,
        linger_s=ts.linger_ms / 1000,
    )
