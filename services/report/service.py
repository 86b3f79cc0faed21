"""The report stage as the runner sees it: completion tracking, report builds, callbacks.

`handle` takes a batch of `themes.extracted` events, collects their job ids and checks
each job's progress; `tick` (every second) re-checks sealed jobs without a final report,
because dead letters and stalls arrive without a themes event, and delivers due
callbacks. A job due for a report (see `core.decide`) gets, in one transaction (the
runner's): the `reports` row, its new `jobs.status`, and a `callback_outbox` row if it has
a callback URL; then a `JobCompleted` event on `jobs.completed`.

Job status is written as an upsert of the existing `jobs` row (its key and NOT NULL
columns, as just read) that updates only `status` and `updated_at`: on a row that exists
that *is* an update, it goes through the runner's transaction with the report, and no
extra hook in `shared.stage` is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from services.report import core, metrics
from services.report.aggregates import RawAggregates, build_aggregates, load_raw
from services.report.callbacks import OUTBOX_COLUMNS, CallbackSender, CallbackSettings
from services.report.core import JobProgress, ReportStatus, Summary
from services.report.settings import ReportSettings
from shared.db.models import CallbackOutbox, Job, Report
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.events import JobCompleted, ThemesExtracted
from shared.jobstatus import status_cache_key
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


REPORTS = Upsert(
    Report.__table__,  # type: ignore[arg-type]
    key=("job_id",),
    columns=("job_id", "status", "coverage", "data", "generated_at"),
)
JOB_STATUS = Upsert(
    Job.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=("id", "tenant_id", "product", "target_language", "status", "updated_at"),
    update=("status", "updated_at"),
)
# A new outbox row must not reset one being delivered (a rebuild or a replay writes it
# again): insert if absent, else leave it.
OUTBOX_NEW = Upsert(
    CallbackOutbox.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=OUTBOX_COLUMNS,
    update=(),
)
OUTBOX_STATE = Upsert(
    CallbackOutbox.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=OUTBOX_COLUMNS,
    update=("attempts", "next_attempt_at", "delivered_at", "last_error"),
)

Q_PROGRESS = """
SELECT j.id, j.tenant_id, j.product, j.target_language, j.callback_url, j.status,
       j.sealed_at IS NOT NULL AS sealed, j.submitted, j.rejected,
       (SELECT coalesce(sum(c.rows), 0) FROM ingest_chunks c WHERE c.job_id = j.id)::int
         AS ingest_rows,
       (SELECT count(*) FROM reviews r WHERE r.job_id = j.id)::int AS ingested,
       (SELECT count(*) FROM review_themed t WHERE t.job_id = j.id)::int AS themed,
       (SELECT count(DISTINCT d.review_id) FROM dead_letters d
         WHERE d.job_id = j.id AND d.redriven_at IS NULL AND d.review_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM review_themed t WHERE t.review_id = d.review_id)
       )::int AS dead_lettered,
       rp.status AS report_status,
       (rp.data -> 'progress' ->> 'done')::int AS report_done,
       (rp.data -> 'progress' ->> 'themed')::int AS report_themed
FROM jobs j LEFT JOIN reports rp ON rp.job_id = j.id
WHERE j.id = ANY(%(ids)s)
ORDER BY j.id
"""

Q_CANDIDATES = """
SELECT j.id FROM jobs j LEFT JOIN reports rp ON rp.job_id = j.id
WHERE j.sealed_at IS NOT NULL AND j.status <> ALL(%(inactive)s)
  AND (rp.status IS NULL OR rp.status <> 'completed' OR j.status = 'replayed')
ORDER BY j.sealed_at
LIMIT %(limit)s
"""

Q_DUE_CALLBACKS = """
SELECT id, job_id, url, payload, attempts, next_attempt_at, delivered_at, last_error
FROM callback_outbox
WHERE delivered_at IS NULL AND attempts < %(max_attempts)s AND next_attempt_at <= now()
ORDER BY next_attempt_at, id
LIMIT %(limit)s
"""

ADVISORY_LOCK_KEY = 0x766F6363_616C6C62  # "voccallb": the callback deliverer's lock


class ReportStore(Protocol):
    """Port: the reads the report stage needs."""

    async def progress(self, job_ids: Sequence[str]) -> list[JobProgress]:
        """Completion counts of these jobs (unknown ids are skipped)."""
        ...

    async def candidates(self, limit: int) -> list[str]:
        """Sealed, active jobs without a final report, oldest seal first."""
        ...

    async def aggregates(self, job_id: str) -> RawAggregates:
        """The raw aggregate rows of one job."""
        ...

    async def due_callbacks(self, max_attempts: int, limit: int) -> list[dict[str, Any]]:
        """Outbox rows due for delivery."""
        ...


class PgReportStore:
    """`ReportStore` on the stage's connection pool; every read ends its transaction."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            try:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(sql, params)
                    return list(await cur.fetchall())
            finally:
                # The pool hands connections on as they are: release the snapshot.
                await conn.rollback()

    async def progress(self, job_ids: Sequence[str]) -> list[JobProgress]:
        """One statement for all of `job_ids`."""
        if not job_ids:
            return []
        rows = await self._rows(Q_PROGRESS, {"ids": list(job_ids)})
        return [
            JobProgress(
                job_id=r["id"],
                tenant_id=r["tenant_id"],
                product=r["product"],
                target_language=r["target_language"],
                callback_url=r["callback_url"],
                job_status=r["status"],
                sealed=bool(r["sealed"]),
                submitted=int(r["submitted"] or 0),
                rejected=int(r["rejected"] or 0),
                ingest_rows=int(r["ingest_rows"] or 0),
                ingested=int(r["ingested"] or 0),
                themed=int(r["themed"] or 0),
                dead_lettered=int(r["dead_lettered"] or 0),
                report_status=r["report_status"],
                report_done=r["report_done"],
                report_themed=r["report_themed"],
            )
            for r in rows
        ]

    async def candidates(self, limit: int) -> list[str]:
        """See `ReportStore.candidates`."""
        rows = await self._rows(
            Q_CANDIDATES, {"inactive": sorted(core.INACTIVE_JOB_STATUSES), "limit": limit}
        )
        return [str(r["id"]) for r in rows]

    async def aggregates(self, job_id: str) -> RawAggregates:
        """Every aggregate query in one read transaction (one consistent-enough view)."""
        async with self.pool.connection() as conn:
            try:
                return await load_raw(conn, job_id)
            finally:
                await conn.rollback()

    async def due_callbacks(self, max_attempts: int, limit: int) -> list[dict[str, Any]]:
        """See `ReportStore.due_callbacks`."""
        return await self._rows(Q_DUE_CALLBACKS, {"max_attempts": max_attempts, "limit": limit})


class Leader(Protocol):
    """Port: whether this replica is the one delivering callbacks."""

    async def is_leader(self) -> bool:
        """True while this process holds the role."""
        ...

    async def close(self) -> None:
        """Give the role up."""
        ...


class AdvisoryLockLeader:
    """The callback deliverer among report replicas: whoever holds a Postgres advisory lock.

    The lock lives on a dedicated connection, so it is released when the process dies;
    another replica takes over on its next tick. One deliverer means one POST per due
    row, rather than one per replica.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.held = False

    async def is_leader(self) -> bool:
        """Take the lock if free; check the connection still holds it."""
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.held = False
                self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            if self.held:
                await self.conn.execute("SELECT 1")
            else:
                cur = await self.conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)
                )
                row = await cur.fetchone()
                self.held = bool(row and row[0])
        except psycopg.Error as exc:
            log.warning("callback leader check failed", extra={"error": str(exc)})
            await self.close()
            return False
        return self.held

    async def close(self) -> None:
        """Close the lock's connection (which releases the lock)."""
        conn, self.conn, self.held = self.conn, None, False
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class ReportHandler:
    """The report `StageHandler` (see the module docstring)."""

    name = "report"
    input: TopicSpec = THEMES_EXTRACTED

    def __init__(
        self,
        store: ReportStore,
        llm: CompletesLLM,
        settings: ReportSettings,
        topic_prefix: str,
        *,
        callbacks: CallbackSender | None = None,
        callback_settings: CallbackSettings | None = None,
        leader: Leader | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        closers: Sequence[Callable[[], Any]] = (),
        forget_status: Callable[[str, str], Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        # Drops the API's cached status of (tenant, job), so a final status is seen at once.
        self.forget_status = forget_status
        self.llm = llm
        self.settings = settings
        self.tick_interval_s = settings.tick_interval_s
        self.output_topic = JOBS_COMPLETED.full_name(topic_prefix)
        self.callbacks = callbacks
        self.callback_settings = callback_settings or CallbackSettings()
        self.leader = leader
        self.clock = clock or (lambda: datetime.now(UTC))
        self.monotonic = monotonic
        self.closers = list(closers)
        # Serialises checks of handle() and tick(): both may find the same job due.
        self._lock = asyncio.Lock()
        # What this process built last per job, ahead of what Postgres shows until the
        # runner has written it (so tick and handle do not build the same report twice).
        self._built: dict[str, tuple[str, int]] = {}
        # job -> (counts signature, when it was first seen): stall detection for tick.
        self._seen: dict[str, tuple[tuple[int, ...], float]] = {}

    # -- runner entry points ---------------------------------------------------------------

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Check the jobs of a batch of `themes.extracted` events."""
        job_ids = sorted({e.event.job_id for e in batch if isinstance(e.event, ThemesExtracted)})
        fresh = frozenset(e.event.job_id for e in batch if e.no_cache)  # `--no-cache` replays
        return await self.check_jobs(job_ids, fresh=fresh)

    async def tick(self) -> StageResult:
        """Re-check sealed jobs without a final report, then deliver due callbacks."""
        result = await self.check_jobs(
            await self.store.candidates(self.settings.tick_jobs), track_stalls=True
        )
        result.merge(await self.deliver_callbacks())
        return result

    async def close(self) -> None:
        """Release the leader lock, the HTTP client, the LLM and Redis."""
        if self.leader is not None:
            await self.leader.close()
        if self.callbacks is not None:
            await self.callbacks.close()
        for closer in self.closers:
            await closer()

    # -- completion --------------------------------------------------------------------------

    async def check_jobs(
        self,
        job_ids: Sequence[str],
        track_stalls: bool = False,
        fresh: frozenset[str] = frozenset(),
    ) -> StageResult:
        """Build the reports that are due for these jobs (those in `fresh` without the LLM
        result cache)."""
        result = StageResult()
        if not job_ids:
            if track_stalls:
                self._seen.clear()
            return result
        async with self._lock:
            progress = [self._with_memory(p) for p in await self.store.progress(job_ids)]
            if track_stalls:
                self._forget_others({p.job_id for p in progress})
            for p in progress:
                stalled = self._stalled(p) if track_stalls else False
                status = core.decide(p, self.settings.ready_threshold, stalled=stalled)
                if status is None:
                    continue
                if stalled:
                    log.warning(
                        "job stalled, finalising its report",
                        extra={"job_id": p.job_id, "done": p.done, "ingested": p.ingested},
                    )
                result.merge(await self.build_report(p, status, cache=p.job_id not in fresh))
                self._built[p.job_id] = (status, p.done)
        return result

    def _with_memory(self, p: JobProgress) -> JobProgress:
        built = self._built.get(p.job_id)
        if built is None:
            return p
        status, done = built
        rank = {"report_ready": 1, "completed": 2}
        if rank.get(p.report_status or "", 0) > rank[status] or (
            p.report_status == status and (p.report_done or 0) >= done
        ):
            return p
        return replace(p, report_status=status, report_done=done)

    def _stalled(self, p: JobProgress) -> bool:
        signature = (p.ingest_rows, p.ingested, p.done)
        now = self.monotonic()
        seen = self._seen.get(p.job_id)
        if seen is None or seen[0] != signature:
            self._seen[p.job_id] = (signature, now)
            return False
        return p.sealed and now - seen[1] >= self.settings.stall_timeout_s

    def _forget_others(self, keep: set[str]) -> None:
        for job_id in [j for j in self._seen if j not in keep]:
            del self._seen[job_id]

    async def build_report(
        self, p: JobProgress, status: ReportStatus, cache: bool = True
    ) -> StageResult:
        """The rows and event of one report build (aggregates, summary, status, callback)."""
        started = time.perf_counter()
        raw = await self.store.aggregates(p.job_id)
        aggregates = build_aggregates(raw, {"submitted": p.submitted, "rejected": p.rejected})
        summary = await self._summary(p, aggregates, cache)
        doc = core.assemble_report(p, status, aggregates, summary)
        now = self.clock()
        result = StageResult(
            upserts=[
                (REPORTS, [core.report_row(p.job_id, status, doc, now)]),
                (JOB_STATUS, [core.job_status_row(p, status, now)]),
            ]
        )
        coverage = float(doc["coverage"]["ratio"])
        outbox = []
        for step in core.announced_steps(p, status):
            if p.callback_url:
                payload = core.callback_payload(p, step, coverage, self.settings.public_api_url)
                outbox.append(core.outbox_row(p, step, payload, now))
            event = JobCompleted(
                job_id=p.job_id,
                tenant_id=p.tenant_id,
                status=step,
                at=now.isoformat(),
                coverage=coverage,
            )
            result.events.append(Outgoing.event(self.output_topic, p.job_id, event))
        if outbox:
            result.upserts.append((OUTBOX_NEW, outbox))
        if self.forget_status is not None:
            forget = self.forget_status
            result.cleanup.append(lambda _conn: forget(p.tenant_id, p.job_id))
        seconds = time.perf_counter() - started
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
        return result

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

    # -- callbacks ---------------------------------------------------------------------------

    async def deliver_callbacks(self) -> StageResult:
        """POST due outbox rows (if this replica is the deliverer); their new state."""
        if self.callbacks is None:
            return StageResult()
        if self.leader is not None and not await self.leader.is_leader():
            return StageResult()
        due = await self.store.due_callbacks(self.callback_settings.max_attempts, limit=200)
        if not due:
            return StageResult()
        rows = await self.callbacks.deliver(due)
        metrics.observe_callbacks(rows, self.callback_settings.max_attempts)
        return StageResult(upserts=[(OUTBOX_STATE, rows)])


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    llm: CompletesLLM | None = None,
    store: ReportStore | None = None,
    report: ReportSettings | None = None,
    callbacks: CallbackSender | None = None,
    leader: Leader | None = None,
) -> ReportHandler:
    """Wire the report handler from settings; tests may pass fakes for every port."""
    report = report or ReportSettings()
    callback_settings = CallbackSettings()
    closers: list[Callable[[], Any]] = []
    redis = redis_client(settings.redis.url)
    closers.append(redis.aclose)
    if llm is None:
        real = build_llm(LLMSettings(), redis)
        closers.insert(0, real.aclose)
        llm = real
    if callback_settings.secret is None:
        log.warning("VOC_CALLBACK_SECRET is not set: callbacks will be recorded as failed")
    return ReportHandler(
        store or PgReportStore(pool),
        llm,
        report,
        settings.kafka.topic_prefix,
        callbacks=callbacks or CallbackSender(callback_settings),
        callback_settings=callback_settings,
        leader=leader or AdvisoryLockLeader(settings.db.libpq_url()),
        closers=closers,
        forget_status=lambda tenant, job: redis.delete(status_cache_key(tenant, job)),
    )
