"""Which tenant a job belongs to: the stages know only the job.

Two users: the LLM limiter divides the quota among tenants, not jobs
(`shared.llm.ratelimit`), so a tenant that submits a thousand jobs weighs as much as one
that submits one; and translate scopes its per-item cache by tenant. A job never
changes tenant, so an answer is kept for the life of the process (bounded LRU); the
first call of a job asks Postgres once, however many of its calls arrive together. An
unanswered lookup (Postgres down, slow, the job unknown) makes the job its own share for
a few seconds: fairness degrades to per job, the call itself never fails or waits on it.
"""

from __future__ import annotations

import asyncio
import logging

from shared.db.pool import ConnectionPool
from shared.lru import LRU

log = logging.getLogger(__name__)

_TENANT_SQL = "SELECT tenant_id FROM jobs WHERE id = %s"


class JobTenants:
    """`await tenants.tenant_of(job_id)`: the job's tenant, or None (see the module
    docstring)."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        timeout_s: float = 1.0,
        retry_after_s: float = 5.0,
        max_entries: int = 50_000,
    ) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._known: LRU[str, str | None] = LRU(max_entries)
        self._asking: dict[str, asyncio.Future[str | None]] = {}

    async def tenant_of(self, job_id: str) -> str | None:
        """The tenant of `job_id` (None when it cannot be told now)."""
        found, tenant = self._known.lookup(job_id)
        if found:
            return tenant
        pending = self._asking.get(job_id)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(job_id))
            self._asking[job_id] = pending
            pending.add_done_callback(lambda _: self._asking.pop(job_id, None))
        return await asyncio.shield(pending)

    async def _ask(self, job_id: str) -> str | None:
        try:
            rows = await asyncio.wait_for(
                self.pool.fetch(_TENANT_SQL, (job_id,)), timeout=self.timeout_s
            )
        except Exception as exc:  # psycopg.Error, a timeout: the call must not fail for it
            log.debug("job tenant lookup failed for %s: %s", job_id, exc)
            rows = None
        if not rows:
            self._known.put(job_id, None, self.retry_after_s)
            return None
        tenant = str(rows[0][0])
        self._known.put(job_id, tenant)
        return tenant
