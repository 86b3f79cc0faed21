"""The learn stage as the runner sees it: hold reviews until their job's model exists.

`handle` (every replica): batches of jobs whose model exists pass straight on as
`reviews.learned` events; batches of other jobs become `learn_pending` rows (upserted by
the runner, so their offsets can be committed and nothing lives only in memory).

`tick` (every `VOC_LEARN_TICK_S`, on one replica only: the holder of the stage's
`shared.db.leader.AdvisoryLeader` lock, so a dead leader's lock goes with its connection
and another replica takes over on its next tick), over the pending jobs with tenants
interleaved (`store.PgLearnStore.pending_jobs`) and planned by `core.plan_tick`:

- jobs whose model exists get their held batches released as events, the tick's budget
  shared among them: the batches are claimed first (`claim_batches`), then produced by
  the runner, then deleted (`StageResult.cleanup`). A replica that leads while an old
  leader still works skips its claimed batches; a crash leaves the claim to expire and
  the batches are released again (at least once; downstream upserts by review id);
- jobs ready to learn (see `core.decide`) are learned in background tasks, no more at a
  time than `VOC_LEARN_CONCURRENCY`, so a slow LLM call never delays releases and each
  tick can put another tenant's job into a free slot first. Each task holds a per-job
  transaction-level advisory lock on its own connection while it reads the sample, asks
  the LLM and inserts the model, and re-checks that no model exists first: no job is
  learned twice, even across replicas or a leader change. The model row is insert-once.

All state is in Postgres (`learn_pending`, `job_models`), so a restart resumes where the
last process stopped. If the LLM's answer stays malformed (or the request is refused) the
job gets `core.default_model()`; if the LLM is unavailable the job is retried with backoff
and falls back to the default model only once it has waited `VOC_LEARN_GIVE_UP_S`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import psycopg
from redis.asyncio import Redis

from services.learn import metrics
from services.learn.core import (
    FALLBACK_MODEL,
    LearnPolicy,
    PendingJob,
    batch_key,
    check_model,
    default_model,
    learn_input,
    learned_event,
    model_row,
    pending_row,
    plan_tick,
    split_held,
)
from services.learn.settings import LearnSettings
from services.learn.store import LEARN_PENDING, PgLearnStore
from shared import metrics as m
from shared.backoff import capped_exponential
from shared.db.leader import AdvisoryLeader
from shared.db.pool import ConnectionPool
from shared.db.tenants import JobTenants
from shared.errors import Failure
from shared.events import ReviewsIngested
from shared.llm.client import LLM, build_llm
from shared.llm.errors import LLMMalformedOutput, LLMRequestRejected, LLMUnavailable
from shared.llm.settings import LLMSettings
from shared.prompts import learn as learn_prompt
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import DeadLetterOut, Incoming, Outgoing, StageResult
from shared.topics import REVIEWS_INGESTED, REVIEWS_LEARNED, TopicSpec

log = logging.getLogger(__name__)

KNOWN_JOBS_MAX = 50_000
RETRY_MIN_S, RETRY_MAX_S = 2.0, 60.0


class ModelLearner(Protocol):
    """Port: ask the LLM for a job's model (raises the `shared.llm` errors)."""

    model_name: str

    async def learn(self, job_id: str, payload: dict[str, Any]) -> learn_prompt.LearnOutput:
        """The learned model for the prompt input `payload`."""
        ...


class LLMLearner:
    """`ModelLearner` over the shared LLM client (cached, rate limited, validated)."""

    def __init__(self, llm: LLM, redis: Redis | None = None) -> None:
        self.llm = llm
        self.redis = redis
        self.model_name = llm.settings.for_stage("learn").model

    async def learn(self, job_id: str, payload: dict[str, Any]) -> learn_prompt.LearnOutput:
        """One structured `learn` call; malformed answers are retried by the LLM layer."""
        return await self.llm.complete(
            "learn",
            learn_prompt.PROMPT,
            payload,
            learn_prompt.LearnOutput,
            job_id=job_id,
            validate=check_model,
        )

    async def close(self) -> None:
        """Close the LLM's HTTP clients and its Redis connection."""
        await self.llm.aclose()
        if self.redis is not None:
            await self.redis.aclose()


class LearnHandler:
    """The learn `StageHandler` (see the module docstring)."""

    name = "learn"
    input: TopicSpec = REVIEWS_INGESTED

    def __init__(
        self,
        store: PgLearnStore,
        leadership: AdvisoryLeader,
        learner: ModelLearner,
        settings: LearnSettings,
        topic_prefix: str,
    ) -> None:
        self.store = store
        self.leadership = leadership
        self.learner = learner
        self.settings = settings
        self.tick_interval_s = settings.tick_s
        self.policy = LearnPolicy(settings.sample_size, settings.timeout_s)
        self.output_topic = REVIEWS_LEARNED.full_name(topic_prefix)
        self.known: OrderedDict[str, str] = OrderedDict()  # job id -> target language
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.not_before: dict[str, float] = {}  # job id -> monotonic time of next attempt
        self.failures: dict[str, int] = {}

    # -- handle: pass through or hold ------------------------------------------------------

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Pass batches of learned jobs on; hold the others as `learn_pending` rows."""
        result = StageResult()
        unknown = sorted({rec.event.job_id for rec in batch} - self.known.keys())
        states = await self.store.jobs(unknown) if unknown else {}
        for job_id, state in states.items():
            if state.has_model:
                self._remember(job_id, state.target_language)
        held: list[dict[str, Any]] = []
        for rec in batch:
            ev: ReviewsIngested = rec.event
            m.REVIEWS_IN.labels(self.name).inc(len(ev.reviews))
            if not ev.reviews:
                continue
            key = batch_key(rec.topic, rec.partition, rec.offset)
            target = self.known.get(ev.job_id)
            if target is not None:
                self.known.move_to_end(ev.job_id)
                event = learned_event(ev.job_id, target, ev.reviews)
                out_key = rec.key or f"{ev.job_id}:{key}".encode()
                result.events.append(Outgoing(self.output_topic, out_key, event.to_bytes()))
                result.reviews_out += len(ev.reviews)
            elif ev.job_id in states:
                held.append(pending_row(ev.job_id, key, ev.reviews))
            else:
                result.dead_letters.append(_unknown_job(rec, ev))
        if held:
            held.sort(key=lambda r: (r["job_id"], r["batch_key"]))  # same lock order everywhere
            result.upserts.append((LEARN_PENDING, held))
        return result

    def _remember(self, job_id: str, target_language: str) -> None:
        self.known[job_id] = target_language
        self.known.move_to_end(job_id)
        while len(self.known) > KNOWN_JOBS_MAX:
            self.known.popitem(last=False)

    # -- tick: learn and release (leader only) ---------------------------------------------

    async def tick(self) -> StageResult:
        """Release held batches of learned jobs; start learning the jobs that are ready."""
        result = StageResult()
        leader = await self.leadership.check()
        metrics.IS_LEADER.set(1 if leader else 0)
        if not leader:
            return result
        jobs = await self.store.pending_jobs(self.settings.tick_jobs)
        metrics.HELD_JOBS.set(len(jobs))
        metrics.HELD_REVIEWS.set(sum(j.pending_reviews for j in jobs if not j.has_model))
        now = time.monotonic()
        plan = plan_tick(
            jobs,
            self.policy,
            release_budget=self.settings.release_rows_per_tick,
            learn_slots=max(0, self.settings.concurrency - len(self.tasks)),
            skip={j for j, t in self.not_before.items() if t > now} | self.tasks.keys(),
        )
        for job, batches in plan.releases:
            try:
                result.merge(await self._release(job, batches))
            except psycopg.Error:
                raise  # Postgres trouble: the whole tick is retried
            except Exception:
                # A bug or bad data of one job must not hold back every other job.
                log.exception(
                    "releasing held reviews failed",
                    extra={"stage": self.name, "job_id": job.job_id},
                )
        for job in plan.learn:
            task = asyncio.create_task(self._learn(job), name=f"learn:{job.job_id}")
            self.tasks[job.job_id] = task
            task.add_done_callback(functools.partial(self._learn_done, job.job_id))
        return result

    async def _release(self, job: PendingJob, limit: int) -> StageResult:
        """Events for up to `limit` held batches of a learned job (claimed for this
        replica first), and their deletion once the events are out."""
        result = StageResult()
        batches = await self.store.claim_batches(job.job_id, limit, self.settings.claim_s)
        if not batches:
            return result
        self._remember(job.job_id, job.target_language)
        released = 0
        for key, held in batches:
            reviews, bad = split_held(held)
            if reviews:
                event = learned_event(job.job_id, job.target_language, reviews)
                result.events.append(
                    Outgoing(self.output_topic, f"{job.job_id}:{key}".encode(), event.to_bytes())
                )
                released += len(reviews)
            for n, (entry, reason) in enumerate(bad):
                result.dead_letters.append(_bad_held(job.job_id, key, n, entry, reason))
        result.reviews_out += released
        result.cleanup.append(self.store.release_done(job.job_id, [k for k, _ in batches]))
        metrics.RELEASED_REVIEWS.inc(released)
        log.info(
            "held reviews released",
            extra={
                "stage": self.name,
                "job_id": job.job_id,
                "batches": len(batches),
                "reviews": released,
            },
        )
        return result

    async def _learn(self, job: PendingJob) -> None:
        """Learn one job under its lock; a no-op if another process has or is learning it."""
        started = time.perf_counter()
        async with self.store.job_lock(job.job_id) as locked:
            if locked is None or await locked.has_model():
                return
            sample = await locked.sample(self.settings.sample_size)
            payload = learn_input(
                job.product,
                job.target_language,
                sample,
                text_chars=self.settings.sample_text_chars,
                total_chars=self.settings.sample_total_chars,
            )
            model, source = await self._ask(job, payload, started)
            if model is None:
                return
            await locked.store_model(
                model_row(
                    job.job_id,
                    model,
                    len(payload["sample"]),
                    self.learner.model_name if source == "llm" else FALLBACK_MODEL,
                )
            )
        self._remember(job.job_id, job.target_language)
        self.failures.pop(job.job_id, None)
        self.not_before.pop(job.job_id, None)
        metrics.JOBS_LEARNED.labels(source).inc()
        metrics.LEARN_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "job model stored",
            extra={
                "stage": self.name,
                "job_id": job.job_id,
                "tenant_id": job.tenant_id,
                "source": source,
                "sample": len(payload["sample"]),
                "dimensions": len(model.dimensions),
                "sealed": job.sealed,
                "held_reviews": job.pending_reviews,
            },
        )

    async def _ask(
        self, job: PendingJob, payload: dict[str, Any], started: float
    ) -> tuple[learn_prompt.LearnOutput | None, str]:
        """The LLM's model, the default one when it failed for good, or None to retry later."""
        if not payload["sample"]:
            log.warning(
                "no reviews to sample, using the default model",
                extra={"stage": self.name, "job_id": job.job_id},
            )
            return default_model(), "default"
        try:
            return await self.learner.learn(job.job_id, payload), "llm"
        except (LLMMalformedOutput, LLMRequestRejected) as exc:
            metrics.LEARN_FAILURES.labels(type(exc).__name__).inc()
            log.warning(
                "learning failed for good, using the default model",
                extra={"stage": self.name, "job_id": job.job_id, "error": str(exc)[:500]},
            )
            return default_model(), "default"
        except LLMUnavailable as exc:
            metrics.LEARN_FAILURES.labels(type(exc).__name__).inc()
            waited = job.age_s + (time.perf_counter() - started)
            if waited >= self.settings.give_up_s:
                log.warning(
                    "LLM unavailable too long, using the default model",
                    extra={
                        "stage": self.name,
                        "job_id": job.job_id,
                        "waited_s": round(waited),
                        "error": str(exc)[:500],
                    },
                )
                return default_model(), "default"
            delay = self._backoff(job.job_id)
            log.warning(
                "LLM unavailable, will retry learning",
                extra={
                    "stage": self.name,
                    "job_id": job.job_id,
                    "retry_in_s": delay,
                    "error": str(exc)[:500],
                },
            )
            return None, "retry"

    def _backoff(self, job_id: str) -> float:
        n = self.failures.get(job_id, 0) + 1
        self.failures[job_id] = n
        delay = capped_exponential(n, RETRY_MIN_S, RETRY_MAX_S)
        self.not_before[job_id] = time.monotonic() + delay
        return delay

    def _learn_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(job_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Postgres or Redis trouble: nothing was stored; a later tick tries again.
            delay = self._backoff(job_id)
            metrics.LEARN_FAILURES.labels(type(exc).__name__).inc()
            log.error(
                "learning crashed, will retry",
                extra={"stage": self.name, "job_id": job_id, "retry_in_s": delay},
                exc_info=exc,
            )

    async def close(self) -> None:
        """Cancel learning in progress (its lock goes with its connection) and disconnect."""
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.leadership.close()
        metrics.IS_LEADER.set(0)
        closer = getattr(self.learner, "close", None)
        if closer is not None:
            await closer()


def _bad_held(job_id: str, key: str, n: int, entry: Any, reason: str) -> DeadLetterOut:
    """An entry of a held batch that is not a valid review (written by something else
    than this stage): dead-lettered alone, so the rest of its batch and job go on."""
    rid = entry.get("id") if isinstance(entry, dict) else None
    raw = orjson.dumps(entry, default=str)
    # No input record to point at: the held row is the source (also keeps dead letter ids
    # of entries without a review id distinct).
    source = Incoming(None, f"learn_pending/{job_id}/{key}", -1, n, raw, job_id.encode())
    return DeadLetterOut(
        failure=Failure("PoisonRecord", f"held review is invalid: {reason}"),
        value=raw,
        key=job_id.encode(),
        source=source,
        job_id=job_id if len(job_id) <= 36 else None,
        review_id=rid if isinstance(rid, str) and 0 < len(rid) <= 36 else None,
    )


def _unknown_job(rec: Incoming, ev: ReviewsIngested) -> DeadLetterOut:
    """A record of a job that does not exist: nothing could ever analyse its reviews.
    Dead-lettered whole (one row, one log line), to be redriven if the job appears."""
    return DeadLetterOut(
        failure=Failure(
            "UnknownJob", f"job {ev.job_id[:60]!r} does not exist ({len(ev.reviews)} reviews)"
        ),
        value=rec.raw,
        key=rec.key,
        source=rec,
        job_id=ev.job_id if 0 < len(ev.job_id) <= 36 else None,
    )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    learn_settings: LearnSettings | None = None,
    learner: ModelLearner | None = None,
) -> LearnHandler:
    """Wire the learn handler from settings; tests may pass their own `learner`."""
    ls = learn_settings or LearnSettings()
    if learner is None:
        redis = redis_client(settings.redis.url)
        llm = build_llm(LLMSettings(), redis, share_of=JobTenants(pool).tenant_of)
        learner = LLMLearner(llm, redis)
    url = settings.db.libpq_url()
    prefix = settings.kafka.topic_prefix
    return LearnHandler(
        PgLearnStore(pool, url, lock_prefix=f"{prefix}learn:"),
        AdvisoryLeader(url, key=f"{prefix}learn:leader", role="learn ticks"),
        learner,
        ls,
        prefix,
    )
