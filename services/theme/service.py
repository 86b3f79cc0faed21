"""The theme stage as the runner sees it: which themes exist, name the new ones, rows out.

`ThemeHandler.handle` computes every insight's theme id (pure, `core.plan`), asks Postgres
which of those themes exist (remembering the ones it has seen, they never go away), names
the new ones with one LLM call per (record, dimension) group - all groups at once - and
returns `themes` rows for the new themes, `theme_members` for every insight,
`review_themed` for every review and one `ThemesExtracted` per record.

Error policy: a naming call that fails for good falls back to a name derived from the
aspect (a theme's name is not worth a review); infrastructure errors propagate so the
runner retries the batch. Run one batch at a time (the default `max_inflight=1`): two
concurrent batches of a job could both see a theme as new and name it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from typing import Any, Protocol

from pydantic import ValidationError

from services.theme import metrics
from services.theme.core import (
    NamingGroup,
    ThemeName,
    assemble,
    names_from_answer,
    plan,
    theme_ids_of,
    unstorable,
)
from services.theme.settings import ThemeSettings
from shared.db.models import Job, ReviewThemed, Theme, ThemeMember
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.events import InsightsExtracted
from shared.llm.client import build_llm
from shared.llm.errors import LLMError
from shared.llm.port import CompletesLLM
from shared.llm.settings import LLMSettings
from shared.prompts.theme import PROMPT, ThemeOutput, check_keys
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import DeadLetterOut, Incoming, Outgoing, StageResult
from shared.topics import INSIGHTS_EXTRACTED, THEMES_EXTRACTED, TopicSpec

log = logging.getLogger(__name__)


# First name wins: a theme row is written when the theme opens and never renamed by a
# later (possibly concurrent or replayed) batch, so the name a user saw stays.
THEMES = Upsert(Theme.__table__, key=("id",), update=())  # type: ignore[arg-type]
THEME_MEMBERS = Upsert(ThemeMember.__table__, key=("insight_id",))  # type: ignore[arg-type]
REVIEW_THEMED = Upsert(ReviewThemed.__table__, key=("review_id",))  # type: ignore[arg-type]

_EXISTING_SQL = f"SELECT id FROM {Theme.__tablename__} WHERE id = ANY(%s)"
_PRODUCTS_SQL = f"SELECT id, product FROM {Job.__tablename__} WHERE id = ANY(%s)"


class ThemeStore(Protocol):
    """Port: what the theme stage reads from Postgres."""

    async def existing(self, theme_ids: Collection[str]) -> set[str]:
        """The ids among `theme_ids` that are stored themes."""
        ...

    async def products(self, job_ids: Collection[str]) -> dict[str, str]:
        """Each job's product name (jobs without a row are left out)."""
        ...

    def remember(self, theme_ids: Collection[str]) -> None:
        """Note themes this process is about to write, so later batches skip the read."""
        ...


class PgThemeStore:
    """`ThemeStore` on Postgres, remembering known theme ids and products (both final)."""

    def __init__(self, pool: ConnectionPool, cache_size: int = 200_000) -> None:
        self.pool = pool
        self.cache_size = cache_size
        self._known: OrderedDict[str, None] = OrderedDict()
        self._products: OrderedDict[str, str] = OrderedDict()

    async def _fetch(self, sql: str, ids: list[str]) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, (ids,))
            rows = await cur.fetchall()
            # End the read transaction: the pool hands the connection on as it is.
            await conn.rollback()
        return rows

    async def existing(self, theme_ids: Collection[str]) -> set[str]:
        """Known ids from memory, the rest in one statement."""
        found = {t for t in theme_ids if t in self._known}
        missing = [t for t in theme_ids if t not in self._known]
        if missing:
            found.update(r[0] for r in await self._fetch(_EXISTING_SQL, missing))
        self.remember(found)
        return found

    def remember(self, theme_ids: Collection[str]) -> None:
        """Record themes known to exist (after they were written, or read)."""
        for t in theme_ids:
            self._known[t] = None
            self._known.move_to_end(t)
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)

    async def products(self, job_ids: Collection[str]) -> dict[str, str]:
        """Cached products, the missing ones read in one statement."""
        out = {j: self._products[j] for j in job_ids if j in self._products}
        missing = [j for j in job_ids if j not in self._products]
        if missing:
            for job, product in await self._fetch(_PRODUCTS_SQL, missing):
                out[job] = self._products[job] = product
            while len(self._products) > 10_000:
                self._products.popitem(last=False)
        return out


class ThemeHandler:
    """The theme `StageHandler`: `insights.extracted` in, `themes.extracted` out."""

    name = "theme"
    input: TopicSpec = INSIGHTS_EXTRACTED

    def __init__(
        self,
        store: ThemeStore,
        llm: CompletesLLM,
        topic_prefix: str,
        *,
        closers: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.store = store
        self.llm = llm
        self.output_topic = THEMES_EXTRACTED.full_name(topic_prefix)
        self._closers = list(closers)

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Assign the batch's insights to themes (see the module docstring)."""
        result = StageResult()
        events: list[InsightsExtracted] = []
        for rec in batch:
            reason = unstorable(rec.event)
            if reason is None:
                events.append(rec.event)
            else:
                result.dead_letters.append(_poison(rec, reason))
        existing = await self.store.existing(theme_ids_of(events))
        p = plan(events, existing)
        names: dict[str, ThemeName] = {}
        if p.groups:
            products = await self.store.products({g.job_id for g in p.groups})
            fresh = {rec.event.job_id for rec in batch if rec.no_cache}  # `--no-cache` replays
            named = await asyncio.gather(
                *(
                    self._name(g, products.get(g.job_id, ""), g.job_id not in fresh)
                    for g in p.groups
                )
            )
            for part in named:
                names.update(part)
        out = assemble(events, p, names)
        result.reviews_out = sum(len(e.review_ids) for e in events)
        if out.theme_rows:
            result.upserts.append((THEMES, sorted(out.theme_rows, key=itemgetter("id"))))
        if out.member_rows:
            result.upserts.append(
                (THEME_MEMBERS, sorted(out.member_rows, key=itemgetter("insight_id")))
            )
        if out.themed_rows:
            result.upserts.append(
                (REVIEW_THEMED, sorted(out.themed_rows, key=itemgetter("review_id")))
            )
        result.events.extend(Outgoing.event(self.output_topic, e.job_id, e) for e in out.events)
        metrics.observe(events, len(out.theme_rows), len(out.member_rows))
        # Not written yet, but the runner writes them before this partition's next batch
        # (or the process dies and the memory with it).
        self.store.remember([r["id"] for r in out.theme_rows])
        return result

    async def _name(self, group: NamingGroup, product: str, cache: bool) -> dict[str, ThemeName]:
        """Names of a group's new themes; fallback names if the LLM fails for good."""
        try:
            answer = await self.llm.complete(
                "theme",
                PROMPT,
                group.llm_input(product),
                ThemeOutput,
                job_id=group.job_id,
                cache=cache,
                validate=check_keys(c.key for c in group.clusters),
            )
        except (LLMError, ValidationError) as exc:
            metrics.FALLBACK_NAMES.inc(len(group.clusters))
            log.warning(
                "theme naming failed, using fallback names",
                extra={
                    "stage": self.name,
                    "job_id": group.job_id,
                    "dimension": group.dimension,
                    "themes": len(group.clusters),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )
            return names_from_answer(group, None)
        return names_from_answer(group, ((t.key, t.name, t.description) for t in answer.themes))

    async def close(self) -> None:
        """Release what `build` opened (LLM client, Redis)."""
        for close in self._closers:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def _poison(rec: Incoming, reason: str) -> DeadLetterOut:
    job_id = rec.event.job_id
    return DeadLetterOut(
        failure=Failure("PoisonRecord", reason),
        value=rec.raw,
        key=rec.key,
        source=rec,
        job_id=job_id if 0 < len(job_id) <= 36 else None,
    )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    llm: CompletesLLM | None = None,
    store: ThemeStore | None = None,
    theme: ThemeSettings | None = None,
) -> ThemeHandler:
    """Wire the theme handler from settings; tests may pass their own `llm` and `store`."""
    theme = theme or ThemeSettings()
    closers: list[Callable[[], Any]] = []
    if llm is None:
        redis = redis_client(settings.redis.url, theme.redis_connections)
        real = build_llm(LLMSettings(), redis)
        closers += [real.aclose, redis.aclose]
        llm = real
    return ThemeHandler(
        store or PgThemeStore(pool, theme.cache_themes),
        llm,
        settings.kafka.topic_prefix,
        closers=closers,
    )
