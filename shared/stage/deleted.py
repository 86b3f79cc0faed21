"""Stages skip the records of deleted jobs quietly.

`DELETE /v1/jobs/{id}` (and the retention sweep) turns the job's row into a tombstone
(`jobs.status = 'deleted'`, its texts blanked) and deletes everything else of the job.
Records of the job may still be on the topics (Kafka deletes only by retention), and a
stage would otherwise analyse them again (LLM calls for nothing, rows for nobody) or, for
learn, dead-letter them as `UnknownJob`. `SkipDeletedJobs` wraps every stage's handler (in
`shared.stage.service.run_service`): records of a tombstoned job never reach the handler, and
their offsets are committed like any handled record's. The tombstone outlives the
topics' retention (the sweep removes it only after), so no such record can outlive it.

Lookups are cached: a deleted job stays deleted, so that answer is kept (bounded LRU); a
live job is asked again after `alive_ttl_s`, which bounds how long a stage keeps working
on a job after its deletion. One indexed query per batch at most.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from shared.db.pool import ConnectionPool
from shared.jobstatus import DELETED
from shared.lru import LRU
from shared.stage.contract import Incoming, StageHandler, StageResult

log = logging.getLogger(__name__)

_DELETED_SQL = "SELECT id FROM jobs WHERE id = ANY(%s) AND status = %s"

SKIPPED = Counter(
    "vocstream_deleted_job_records_skipped_total",
    "Records of deleted jobs a stage skipped",
    ["stage"],
)


class DeletedJobs:
    """Which job ids are tombstones, asked of Postgres and cached."""

    def __init__(
        self, pool: ConnectionPool, alive_ttl_s: float = 2.0, max_entries: int = 50_000
    ) -> None:
        self.pool = pool
        self.alive_ttl_s = alive_ttl_s
        self._known: LRU[str, bool] = LRU(max_entries)

    async def among(self, job_ids: Iterable[str]) -> set[str]:
        """The deleted jobs among `job_ids`."""
        ids = set(job_ids)
        ask: list[str] = []
        gone: set[str] = set()
        for job_id in ids:
            found, deleted = self._known.lookup(job_id)
            if not found:
                ask.append(job_id)
            elif deleted:
                gone.add(job_id)
        if ask:
            async with self.pool.connection() as conn:
                cur = await conn.execute(_DELETED_SQL, (sorted(ask), DELETED))
                rows = await cur.fetchall()
                await conn.rollback()  # end the read: the pool hands the connection on as is
            deleted_now = {row[0] for row in rows}
            for job_id in ask:
                if job_id in deleted_now:
                    self._known.put(job_id, True)
                else:
                    self._known.put(job_id, False, self.alive_ttl_s)
            gone |= deleted_now
        return gone


def _job_id(rec: Incoming) -> str | None:
    job_id = getattr(rec.event, "job_id", None)
    return job_id if isinstance(job_id, str) else None


class SkipDeletedJobs:
    """A stage handler that never sees records of deleted jobs (everything else of the
    wrapped handler, such as `tick`, `close` or `input`, is the handler's own)."""

    def __init__(self, handler: StageHandler, jobs: DeletedJobs) -> None:
        self.handler = handler
        self.jobs = jobs
        self._logged: LRU[str, None] = LRU(10_000)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """The handler's result for the records of live jobs."""
        ids = {job_id for rec in batch if (job_id := _job_id(rec)) is not None}
        gone = await self.jobs.among(ids) if ids else set()
        if not gone:
            return await self.handler.handle(batch)
        kept = [rec for rec in batch if _job_id(rec) not in gone]
        SKIPPED.labels(self.handler.name).inc(len(batch) - len(kept))
        for job_id in gone:
            if job_id not in self._logged:
                self._logged.put(job_id, None)
                log.info(
                    "skipping records of a deleted job",
                    extra={"stage": self.handler.name, "job_id": job_id},
                )
        return await self.handler.handle(kept) if kept else StageResult()
