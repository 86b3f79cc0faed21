"""The insight stage as the runner sees it: job models, one LLM call per review, results.

`InsightHandler.handle` looks up the learned model of every job in the batch (cached in
memory: a job's model never changes once written), runs one LLM extraction per review -
all reviews of the batch at once, bounded by a replica-wide semaphore shared with the
other in-flight batches - and returns per input record the `insights` and
`review_insights` rows and one `InsightsExtracted` event. A review whose answer stays
malformed or whose calls keep failing becomes a `DeadLetterOut` of its own (value: a
`ReviewsTranslated` event holding just that review, so a redrive re-feeds it as is);
the rest of its record goes on.

Error policy: `LLMError`s and answers that cannot be turned into insights dead-letter the
review; infrastructure errors (Postgres, Kafka, OS) propagate so the runner retries the
batch (finished reviews then come from the LLM result cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from typing import Any, Protocol

from pydantic import ValidationError

from services.insight import metrics
from services.insight.core import (
    JobModel,
    QuoteNotFound,
    ReviewOutcome,
    answer_validator,
    assemble,
    build_insights,
    llm_input,
    storable_id,
)
from services.insight.settings import InsightSettings
from shared.db.models import InsightRow, ReviewInsightState
from shared.db.models import JobModel as JobModelRow
from shared.db.pool import ConnectionPool
from shared.db.tenants import JobTenants
from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.events import ReviewsTranslated, TranslatedReview
from shared.llm.client import build_llm
from shared.llm.errors import LLMError
from shared.llm.port import CompletesLLM
from shared.llm.settings import LLMSettings
from shared.prompts.insight import PROMPT, InsightOutput
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import INFRA_ERRORS, DeadLetterOut, Incoming, Outgoing, StageResult
from shared.stage.fair import FairSlots
from shared.topics import INSIGHTS_EXTRACTED, REVIEWS_TRANSLATED, TopicSpec

log = logging.getLogger(__name__)


INSIGHTS = Upsert(InsightRow.__table__, key=("id",))  # type: ignore[arg-type]
REVIEW_INSIGHTS = Upsert(ReviewInsightState.__table__, key=("review_id",))  # type: ignore[arg-type]

_MODELS_SQL = (
    f"SELECT job_id, dimensions, five_w FROM {JobModelRow.__tablename__} WHERE job_id = ANY(%s)"
)


class JobModels(Protocol):
    """Port: the learned models of jobs."""

    async def get(self, job_ids: Collection[str]) -> dict[str, JobModel]:
        """Map each job among `job_ids` that has a learned model to it."""
        ...


class PgJobModels:
    """`JobModels` read from `job_models`, kept in an LRU cache (models never change)."""

    def __init__(self, pool: ConnectionPool, cache_jobs: int = 1024) -> None:
        self.pool = pool
        self.cache_jobs = cache_jobs
        self._cache: OrderedDict[str, JobModel] = OrderedDict()

    async def get(self, job_ids: Collection[str]) -> dict[str, JobModel]:
        """Cached models, the missing ones read in one statement (absent ones not cached,
        so a model written later is found then)."""
        found: dict[str, JobModel] = {}
        missing: list[str] = []
        for job in job_ids:
            model = self._cache.get(job)
            if model is None:
                missing.append(job)
            else:
                self._cache.move_to_end(job)
                found[job] = model
        if missing:
            async with self.pool.connection() as conn:
                cur = await conn.execute(_MODELS_SQL, (missing,))
                rows = await cur.fetchall()
                # End the read transaction: the pool hands the connection on as it is.
                await conn.rollback()
            for job, dimensions, five_w in rows:
                model = JobModel.from_row(dimensions, five_w)
                found[job] = self._cache[job] = model
            while len(self._cache) > self.cache_jobs:
                self._cache.popitem(last=False)
        return found


class InsightHandler:
    """The insight `StageHandler`: `reviews.translated` in, `insights.extracted` out."""

    name = "insight"
    input: TopicSpec = REVIEWS_TRANSLATED

    def __init__(
        self,
        models: JobModels,
        llm: CompletesLLM,
        topic_prefix: str,
        *,
        concurrency: int = 256,
        closers: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.models = models
        self.llm = llm
        self.output_topic = INSIGHTS_EXTRACTED.full_name(topic_prefix)
        # One semaphore for every batch in flight: FIFO, so older batches go first.
        self.slots = FairSlots(concurrency)  # handed out to the jobs waiting in turn
        self._closers = list(closers)

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Extract the insights of every review of the batch (see the module docstring)."""
        events: list[ReviewsTranslated] = [rec.event for rec in batch]
        models = await self.models.get({e.job_id for e in events})
        per_record = [
            [self._extract(e, r, models.get(e.job_id), not rec.no_cache) for r in e.reviews]
            for rec, e in zip(batch, events, strict=True)
        ]
        flat = await asyncio.gather(
            *(c for coros in per_record for c in coros), return_exceptions=True
        )
        outcomes_all: list[ReviewOutcome] = []
        for res in flat:
            if isinstance(res, BaseException):  # infra error: the runner retries the batch
                raise res
            outcomes_all.append(res)
        result = StageResult()
        insight_rows: list[dict[str, Any]] = []
        review_rows: list[dict[str, Any]] = []
        pos = 0
        for rec, event in zip(batch, events, strict=True):
            outcomes = outcomes_all[pos : pos + len(event.reviews)]
            pos += len(event.reviews)
            metrics.observe(outcomes)
            done = assemble(event.job_id, outcomes)
            insight_rows.extend(done.insight_rows)
            review_rows.extend(done.review_rows)
            if done.event is not None:
                result.events.append(Outgoing.event(self.output_topic, event.job_id, done.event))
                result.reviews_out += len(done.event.review_ids)
            result.dead_letters.extend(_dead_letter(rec, event, o) for o in done.failed)
        # Sorted by key so concurrent batches lock shared rows in the same order.
        if insight_rows:
            result.upserts.append((INSIGHTS, sorted(insight_rows, key=itemgetter("id"))))
        if review_rows:
            result.upserts.append(
                (REVIEW_INSIGHTS, sorted(review_rows, key=itemgetter("review_id")))
            )
        return result

    async def _extract(
        self,
        event: ReviewsTranslated,
        review: TranslatedReview,
        model: JobModel | None,
        cache: bool,
    ) -> ReviewOutcome:
        """One review's insights, or the reason it fails for good (`cache=False`: a
        `--no-cache` replay, the LLM result cache is skipped)."""
        job_id = event.job_id
        if not storable_id(review.id) or not storable_id(job_id):
            # Only a hand-made record can carry these; storing them would fail the batch.
            return ReviewOutcome(review, failure=Failure("InvalidId", "job or review id length"))
        if model is None:
            # learn writes the model before it releases any review of the job, so this is
            # a record from elsewhere (or a deleted job): nothing to analyse it against.
            return ReviewOutcome(review, failure=Failure("JobModelMissing", f"job {job_id}"))
        if not review.original.strip():
            return ReviewOutcome(review)
        async with self.slots.slot(job_id):
            metrics.EXTRACTING.inc()
            started = time.perf_counter()
            try:
                answer = await self.llm.complete(
                    "insight",
                    PROMPT,
                    llm_input(review, model, event.target_language),
                    InsightOutput,
                    job_id=job_id,
                    cache=cache,
                    validate=answer_validator(review.original),
                )
                return ReviewOutcome(review, build_insights(review, answer, model.names))
            except INFRA_ERRORS:
                raise
            except (LLMError, QuoteNotFound, ValidationError) as exc:
                return ReviewOutcome(review, failure=Failure.of(exc))
            except Exception as exc:  # a bug must not block the partition: dead-letter, log
                log.exception(
                    "insight extraction failed",
                    extra={"stage": self.name, "job_id": job_id, "review_id": review.id},
                )
                return ReviewOutcome(review, failure=Failure.of(exc))
            finally:
                metrics.EXTRACTING.dec()
                metrics.REVIEW_SECONDS.observe(time.perf_counter() - started)

    async def close(self) -> None:
        """Release what `build` opened (LLM client, Redis)."""
        for close in self._closers:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def _dead_letter(rec: Incoming, event: ReviewsTranslated, outcome: ReviewOutcome) -> DeadLetterOut:
    """A failed review alone, as a redrivable `ReviewsTranslated` record."""
    value = ReviewsTranslated(
        job_id=event.job_id, target_language=event.target_language, reviews=[outcome.review]
    ).to_bytes()
    return DeadLetterOut(
        failure=outcome.failure or Failure("Error", "no failure recorded"),
        value=value,
        key=rec.key,
        source=rec,
        job_id=event.job_id if storable_id(event.job_id) else None,
        review_id=outcome.review.id if storable_id(outcome.review.id) else None,
    )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    llm: CompletesLLM | None = None,
    models: JobModels | None = None,
    insight: InsightSettings | None = None,
) -> InsightHandler:
    """Wire the insight handler from settings; tests may pass their own `llm` and `models`."""
    insight = insight or InsightSettings()
    closers: list[Callable[[], Any]] = []
    if llm is None:
        redis = redis_client(settings.redis.url, insight.redis_connections)
        real = build_llm(LLMSettings(), redis, share_of=JobTenants(pool).tenant_of)
        closers += [real.aclose, redis.aclose]
        llm = real
    return InsightHandler(
        models or PgJobModels(pool, insight.model_cache_jobs),
        llm,
        settings.kafka.topic_prefix,
        concurrency=insight.concurrency,
        closers=closers,
    )
