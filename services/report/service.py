"""The report stage as the runner sees it: job states, report builds, events, callbacks.

`handle` takes a batch of `themes.extracted` events and checks each of their jobs; `tick`
(every `VOC_REPORT_TICK_S`, on every replica) re-checks the sealed jobs without a final
report, because dead letters and stalls arrive without a themes event, and sets the
stalled-jobs gauge; on the one replica that leads (`shared.db.leader.AdvisoryLeader`) it
then produces the job events due. Callbacks are delivered by their own task
(`services.report.callbacks.CallbackDeliverer`, started by `build`, on the replica that
leads callback delivery), never inside `handle` or `tick`, so no receiver can hold up a
report.

Checking a job: its progress decides (`core.decide`) whether it moves on (`report_ready`,
`completed`, `stalled` or back from a stall) and which report to build. The move is made
under the job's report lock, after re-reading the job there, and written in one
transaction with its report, callback outbox rows and `jobs.completed` events, only if
the job's status still allows it (`store` module docstring). That is what keeps several
replicas honest: each report is built once per state, a status never steps back, an
operator's `cancelled` stands, and each event is produced once from the outbox. So unlike
most stages, this handler writes Postgres itself and returns no rows to the runner; what
it returns are the events claimed from the outbox.

The summary's LLM call happens under the lock, inside the build's transaction: a second
replica finds the lock taken and moves on instead of paying for the same summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from services.report import core, metrics
from services.report.aggregates import build_aggregates
from services.report.callbacks import (
    CallbackDeliverer,
    CallbackSender,
    CallbackSettings,
    Leader,
    PgOutbox,
)
from services.report.core import Decision, JobProgress, ReportStatus, Summary
from services.report.settings import ReportSettings
from services.report.store import LockedJob, PgReportStore
from shared.analyst import current_analyst
from shared.callback_signing import SigningSettings
from shared.db.leader import AdvisoryLeader
from shared.db.pool import ConnectionPool
from shared.db.tenants import JobTenants
from shared.events import ThemesExtracted
from shared.jobstatus import forget_status
from shared.llm.client import build_llm
from shared.llm.errors import LLMError
from shared.llm.port import CompletesLLM
from shared.llm.settings import LLMSettings
from shared.prompts import report as report_prompt
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import Incoming, Outgoing, StageResult
from shared.topics import JOBS_COMPLETED, THEMES_EXTRACTED, TopicSpec

log = logging.getLogger(__name__)

EVENTS_PER_TICK = 500


class ReportHandler:
    """The report `StageHandler` (see the module docstring)."""

    name = "report"
    input: TopicSpec = THEMES_EXTRACTED

    def __init__(
        self,
        store: PgReportStore,
        llm: CompletesLLM,
        settings: ReportSettings,
        topic_prefix: str,
        *,
        leader: AdvisoryLeader | None = None,
        clock: Callable[[], datetime] | None = None,
        closers: Sequence[Callable[[], Any]] = (),
        forget_status: Callable[[str, str], Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        # Drops the API's cached status of (tenant, job), so a new status is seen at once.
        self.forget_status = forget_status
        self.llm = llm
        self.settings = settings
        self.tick_interval_s = settings.tick_interval_s
        self.output_topic = JOBS_COMPLETED.full_name(topic_prefix)
        # None: this process is the only replica (and so the leader).
        self.leader = leader
        self.clock = clock or (lambda: datetime.now(UTC))
        self.closers = list(closers)
        # Jobs skipped because another builder held their lock: the next tick looks again
        # (a completed job that heals is no tick candidate, so it would be missed).
        self._recheck: set[str] = set()

    # -- runner entry points ---------------------------------------------------------------

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Check the jobs of a batch of `themes.extracted` events (writes what is due)."""
        job_ids = sorted({e.event.job_id for e in batch if isinstance(e.event, ThemesExtracted)})
        fresh = frozenset(e.event.job_id for e in batch if e.no_cache)  # `--no-cache` replays
        await self.check_jobs(job_ids, fresh)
        return StageResult()

    async def tick(self) -> StageResult:
        """Re-check sealed jobs without a final report; as the leader, produce due events."""
        again, self._recheck = self._recheck, set()
        candidates = await self.store.candidates(self.settings.tick_jobs)
        await self.check_jobs(sorted(set(candidates) | again))
        metrics.STALLED_JOBS.set(await self.store.stalled_jobs())
        result = StageResult()
        leading = self.leader is None or await self.leader.check()
        metrics.IS_LEADER.set(1 if leading else 0)
        if leading:
            result.merge(await self.announce())
        return result

    async def close(self) -> None:
        """Stop callback delivery, release the leader lock, the LLM and Redis."""
        if self.leader is not None:
            await self.leader.close()
            metrics.IS_LEADER.set(0)
        for closer in self.closers:
            await closer()

    # -- job states --------------------------------------------------------------------------

    async def check_jobs(self, job_ids: Sequence[str], fresh: frozenset[str] = frozenset()) -> None:
        """Move each of these jobs on if its progress says so (see the module docstring);
        the summaries of jobs in `fresh` skip the LLM result cache."""
        threshold, timeout = self.settings.ready_threshold, self.settings.stall_timeout_s
        for p in await self.store.progress(job_ids):
            if core.decide(p, threshold, timeout) is not None:
                await self._advance(p.job_id, cache=p.job_id not in fresh)

    async def _advance(self, job_id: str, cache: bool = True) -> None:
        """Re-read the job under its lock, decide again and write the outcome."""
        threshold, timeout = self.settings.ready_threshold, self.settings.stall_timeout_s
        async with self.store.locked(job_id) as job:
            if job is None:
                self._recheck.add(job_id)
                return
            p = await job.progress()
            decision = core.decide(p, threshold, timeout) if p is not None else None
            if p is None or decision is None:
                return  # another replica got here first
            if await self._write(job, p, decision, cache):
                await self._forget(p)

    async def _write(self, job: LockedJob, p: JobProgress, d: Decision, cache: bool) -> bool:
        """Build the decision's report (if any) and commit it with the transition."""
        change = core.transition(p, d)
        if d.report is None:
            written = await job.commit(change)
            self._log_transition(p, d, written)
            return written
        started = time.perf_counter()
        aggregates = build_aggregates(
            await job.aggregates(), {"submitted": p.submitted, "rejected": p.rejected}
        )
        summary = await self._summary(p, aggregates, cache)
        doc = core.assemble_report(p, d.report, aggregates, summary, stall=d.reason)
        doc["analyst"] = current_analyst()  # who wrote it: the bundled fake LLM says so
        now = self.clock()
        coverage = float(doc["coverage"]["ratio"])
        steps = core.announced_steps(p, d.report)
        outbox = [
            core.outbox_row(
                p, s, core.callback_payload(p, s, coverage, self.settings.public_api_url), now
            )
            for s in steps
            if p.callback_url
        ]
        written = await job.commit(
            change,
            report=core.report_row(p.job_id, d.report, doc, now),
            outbox=outbox,
            events=[core.job_event_row(p, s, coverage, now) for s in steps],
        )
        self._log_transition(p, d, written)
        if written:
            self._log_build(p, d.report, coverage, summary, time.perf_counter() - started)
        return written

    def _log_transition(self, p: JobProgress, d: Decision, written: bool) -> None:
        metrics.TRANSITIONS.labels(d.status, "applied" if written else "refused").inc()
        extra = {"job_id": p.job_id, "from": p.job_status, "to": d.status}
        if not written:
            # An operator cancelled it, a replay started, or another writer moved it on.
            log.info("job status changed meanwhile, transition dropped", extra=extra)
        elif d.status == core.STALLED:
            log.warning("job stalled", extra=extra | {"reason": d.reason, "done": p.done})
        elif p.job_status == core.STALLED:
            log.info("job stall cleared", extra=extra | {"done": p.done})

    def _log_build(
        self,
        p: JobProgress,
        status: ReportStatus,
        coverage: float,
        summary: Summary,
        seconds: float,
    ) -> None:
        metrics.observe_build(status, summary.source, seconds)
        log.info(
            "report built",
            extra={
                "job_id": p.job_id,
                "status": status,
                "coverage": coverage,
                "reviews": p.ingested,
                "dead_lettered": p.dead_lettered,
                "summary_source": summary.source,
                "seconds": round(seconds, 3),
            },
        )

    async def _forget(self, p: JobProgress) -> None:
        """Drop the API's cached status document of the job (best effort)."""
        if self.forget_status is None:
            return
        try:
            await self.forget_status(p.tenant_id, p.job_id)
        except RedisError as exc:
            # The cached document expires within a second or two anyway.
            log.warning("status cache not cleared", extra={"job_id": p.job_id, "error": str(exc)})

    async def _summary(self, p: JobProgress, aggregates: dict[str, Any], cache: bool) -> Summary:
        if not aggregates["overview"]["insights"]:
            return core.fallback_summary(p.product, aggregates, "no insights to summarise")
        try:
            out = await self.llm.complete(
                "report",
                report_prompt.PROMPT,
                core.llm_input(p.product, aggregates),
                report_prompt.ReportOutput,
                job_id=p.job_id,
                cache=cache,
            )
        except LLMError as exc:
            # The report must go out anyway: the numbers stand on their own.
            log.warning(
                "report summary failed, using the fallback",
                extra={"job_id": p.job_id, "error_type": type(exc).__name__, "error": str(exc)},
            )
            return core.fallback_summary(p.product, aggregates, type(exc).__name__)
        return Summary(
            summary=out.summary,
            actions=[a.model_dump() for a in out.recommended_actions],
            source="llm",
        )

    # -- leader work: events ----------------------------------------------------

    async def announce(self) -> StageResult:
        """The job events not produced yet (claimed for this replica), and their marking
        as produced once the broker has them."""
        claimed = await self.store.claim_events(EVENTS_PER_TICK, self.settings.event_claim_s)
        if not claimed:
            return StageResult()
        return StageResult(
            events=[Outgoing(self.output_topic, job.encode(), value) for _, job, value in claimed],
            cleanup=[self.store.events_produced([eid for eid, _, _ in claimed])],
        )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    llm: CompletesLLM | None = None,
    report: ReportSettings | None = None,
    callbacks: CallbackSender | None = None,
    callback_leader: Leader | None = None,
) -> ReportHandler:
    """Wire the report handler from settings and start callback delivery; tests may pass
    the LLM, the sender and the callback leader."""
    report = report or ReportSettings()
    callback_settings = CallbackSettings()
    signing = SigningSettings().key
    if signing is None:
        log.warning("VOC_CALLBACK_SECRET is not set: callbacks will be recorded as failed")
    closers: list[Callable[[], Any]] = []
    redis = redis_client(settings.redis.url)
    closers.append(redis.aclose)
    if llm is None:
        real = build_llm(LLMSettings(), redis, share_of=JobTenants(pool).tenant_of)
        closers.insert(0, real.aclose)
        llm = real
    prefix = settings.kafka.topic_prefix
    url = settings.db.libpq_url()
    deliverer = CallbackDeliverer(
        callbacks or CallbackSender(callback_settings),
        PgOutbox(pool),
        signing.get_secret_value().encode() if signing is not None else None,
        callback_settings,
        leader=callback_leader
        or AdvisoryLeader(url, key=f"{prefix}report:callbacks", role="callback deliveries"),
    )
    closers.insert(0, deliverer.close)
    deliverer.start()
    return ReportHandler(
        PgReportStore(pool, lock_prefix=f"{prefix}report:"),
        llm,
        report,
        prefix,
        leader=AdvisoryLeader(url, key=f"{prefix}report:leader", role="report events"),
        closers=closers,
        forget_status=lambda tenant, job: forget_status(redis, tenant, job),
    )
