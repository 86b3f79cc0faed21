"""The theme stage as the runner sees it: read a job's theme state, embed, place, name.

`ThemeHandler.handle` takes a batch of `insights.extracted` records and, per job, reads
(in one snapshot) which of the batch's insights already have a theme and - unless this
process holds the job's state at the version Postgres has - the job's theme state; embeds
the insights that have no theme yet (`shared.llm.embeddings`: batched, cached, under the
shared LLM quota); places them in order (`core.place_job`); names new and merged themes
(one LLM call per record that opened themes and per consolidation that merged some, all
at once); and returns the touched `themes` rows, new `theme_members`, `theme_merges`, the
job's `theme_jobs` row, `review_themed` for every review and one `ThemesExtracted` per
record. See `services.theme.core` for the determinism rule.

Error policy: a naming call that fails for good falls back to a name derived from the
aspect (a theme's name is not worth a review); an embedding call that fails is retried by
the LLM layer and then, while the provider stays unavailable, again in place with capped
backoff (`EMBED_BACKOFF_S`): the job's insights must be placed in partition order, so they
never go to a retry topic, and an outage of the provider is no fault of the records, so
they are not dead-lettered either; the partition waits, as it waits out a Postgres
outage. A record the provider refuses to embed (4xx) is dead-lettered alone. One
batch at a time (`max_inflight=1`, no retry tiers), serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

import psycopg
from pydantic import ValidationError

from services.theme import core, metrics
from services.theme.core import ClusterParams, JobState, NamingRequest, ThemeState
from services.theme.settings import ThemeSettings
from shared.db.models import Job, ReviewThemed, Theme, ThemeJob, ThemeMember, ThemeMerge
from shared.db.pool import ConnectionPool
from shared.db.upsert import Upsert
from shared.errors import Failure
from shared.events import Insight, InsightsExtracted
from shared.llm.client import build_llm
from shared.llm.embeddings import EmbedsText, Vector, build_embedder
from shared.llm.errors import LLMError, LLMRequestRejected
from shared.llm.port import CompletesLLM
from shared.llm.ratelimit import one_share
from shared.llm.settings import LLMSettings
from shared.prompts.theme import PROMPT, ThemeOutput, check_keys
from shared.redis import redis_client
from shared.settings import CommonSettings
from shared.stage import DeadLetterOut, Incoming, Outgoing, StageResult
from shared.topics import INSIGHTS_EXTRACTED, THEMES_EXTRACTED, TopicSpec

log = logging.getLogger(__name__)

EMBED_BACKOFF_S = (1.0, 30.0)

THEMES = Upsert(
    Theme.__table__,  # type: ignore[arg-type]
    key=("id",),
    columns=(
        "id",
        "job_id",
        "dimension",
        "key",
        "name",
        "description",
        "seq",
        "opened_at",
        "size",
        "centroid",
        "sample",
    ),
)
# An insight's first theme is its membership for good: a replay never rewrites it.
THEME_MEMBERS = Upsert(ThemeMember.__table__, key=("insight_id",), update=())  # type: ignore[arg-type]
THEME_MERGES = Upsert(ThemeMerge.__table__, key=("theme_id",))  # type: ignore[arg-type]
THEME_JOBS = Upsert(ThemeJob.__table__, key=("job_id",))  # type: ignore[arg-type]
REVIEW_THEMED = Upsert(ReviewThemed.__table__, key=("review_id",))  # type: ignore[arg-type]

_VERSIONS_SQL = f"SELECT job_id, version FROM {ThemeJob.__tablename__} WHERE job_id = ANY(%s)"
_ASSIGNED_SQL = (
    f"SELECT insight_id, theme_id FROM {ThemeMember.__tablename__} WHERE insight_id = ANY(%s)"
)
_STATE_SQL = (
    f"SELECT job_id, version, placed, opened FROM {ThemeJob.__tablename__} WHERE job_id = ANY(%s)"
)
_THEMES_SQL = f"""
SELECT t.id, t.job_id, t.dimension, t.key, t.name, t.description, t.seq, t.opened_at, t.size,
       t.centroid, t.sample
FROM {Theme.__tablename__} t
WHERE t.job_id = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM {ThemeMerge.__tablename__} g WHERE g.theme_id = t.id)
ORDER BY t.job_id, t.seq, t.id
"""
_MERGES_SQL = f"""
SELECT theme_id, job_id, into_id, at_insight, similarity FROM {ThemeMerge.__tablename__}
WHERE job_id = ANY(%s)
"""
_JOBS_SQL = f"SELECT id, product, target_language FROM {Job.__tablename__} WHERE id = ANY(%s)"


@dataclass
class Snapshot:
    """One consistent read for a batch: job versions, fresh states, existing memberships."""

    versions: dict[str, int] = field(default_factory=dict)
    states: dict[str, JobState] = field(default_factory=dict)
    assigned: dict[str, str] = field(default_factory=dict)


class ThemeStore(Protocol):
    """Port: what the theme stage reads from Postgres."""

    async def snapshot(
        self, job_ids: Collection[str], insight_ids: Collection[str], cached: dict[str, int]
    ) -> Snapshot:
        """Versions of `job_ids`, the state of each job whose version differs from
        `cached` (job -> version this process holds), and the theme of each of
        `insight_ids` that has one - all in one snapshot."""
        ...

    async def jobs(self, job_ids: Collection[str]) -> dict[str, tuple[str, str]]:
        """Each job's (product, target language); jobs without a row are left out."""
        ...


class PgThemeStore:
    """`ThemeStore` on Postgres; job products and languages are remembered (final)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._jobs: OrderedDict[str, tuple[str, str]] = OrderedDict()

    async def snapshot(
        self, job_ids: Collection[str], insight_ids: Collection[str], cached: dict[str, int]
    ) -> Snapshot:
        """See `ThemeStore.snapshot` (REPEATABLE READ, so the reads agree)."""
        snap = Snapshot()
        async with self.pool.connection() as conn:
            try:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur = await conn.execute(_VERSIONS_SQL, (list(job_ids),))
                snap.versions = {j: int(v) for j, v in await cur.fetchall()}
                stale = [j for j in job_ids if cached.get(j, -1) != snap.versions.get(j, 0)]
                if stale:
                    snap.states = await _load_states(conn, stale)
                if insight_ids:
                    cur = await conn.execute(_ASSIGNED_SQL, (list(insight_ids),))
                    snap.assigned = dict(await cur.fetchall())
            finally:
                await conn.rollback()  # end the read transaction
        return snap

    async def jobs(self, job_ids: Collection[str]) -> dict[str, tuple[str, str]]:
        """Cached, the missing ones read in one statement."""
        out = {j: self._jobs[j] for j in job_ids if j in self._jobs}
        missing = [j for j in job_ids if j not in self._jobs]
        if missing:
            async with self.pool.connection() as conn:
                cur = await conn.execute(_JOBS_SQL, (missing,))
                rows = await cur.fetchall()
                await conn.rollback()
            for job, product, language in rows:
                out[job] = self._jobs[job] = (product, language)
            while len(self._jobs) > 10_000:
                self._jobs.popitem(last=False)
        return out


async def _load_states(
    conn: psycopg.AsyncConnection[Any], job_ids: list[str]
) -> dict[str, JobState]:
    """The stored theme state of each job (a fresh state for a job without one)."""
    states = {j: JobState(j) for j in job_ids}
    cur = await conn.execute(_STATE_SQL, (job_ids,))
    for job, version, placed, opened in await cur.fetchall():
        s = states[job]
        s.version, s.placed, s.opened = int(version), int(placed), int(opened)
    cur = await conn.execute(_THEMES_SQL, (job_ids,))
    for (
        tid,
        job,
        dim,
        key,
        name,
        desc,
        seq,
        opened_at,
        size,
        centroid,
        sample,
    ) in await cur.fetchall():
        sample = sample if isinstance(sample, dict) else {}
        states[job].themes[tid] = ThemeState(
            id=tid,
            job_id=job,
            dimension=dim,
            key=key,
            seq=int(seq),
            opened_at=int(opened_at),
            total=core.unpack_centroid(centroid),
            size=int(size),
            name=name,
            description=desc,
            aspects=[str(a) for a in sample.get("aspects") or []],
            quotes=[str(q) for q in sample.get("quotes") or []],
        )
    cur = await conn.execute(_MERGES_SQL, (job_ids,))
    for tid, job, into, at, sim in await cur.fetchall():
        states[job].merged[tid] = core.MergeRecord(tid, into, int(at), float(sim))
    return states


class ThemeHandler:
    """The theme `StageHandler`: `insights.extracted` in, `themes.extracted` out."""

    name = "theme"
    input: TopicSpec = INSIGHTS_EXTRACTED

    def __init__(
        self,
        store: ThemeStore,
        llm: CompletesLLM,
        embedder: EmbedsText,
        topic_prefix: str,
        *,
        params: ClusterParams | None = None,
        cache_jobs: int = 64,
        closers: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.store = store
        self.llm = llm
        self.embedder = embedder
        self.params = params or ClusterParams()
        self.output_topic = THEMES_EXTRACTED.full_name(topic_prefix)
        self.cache_jobs = cache_jobs
        self._states: OrderedDict[str, JobState] = OrderedDict()
        self._lock = asyncio.Lock()
        self._closers = list(closers)
        # (first, max) seconds between embedding attempts while the provider is down
        self.embed_backoff_s = EMBED_BACKOFF_S

    async def handle(self, batch: Sequence[Incoming]) -> StageResult:
        """Place the batch's insights in their jobs' themes (see the module docstring)."""
        async with self._lock:
            return await self._handle(batch)

    async def _handle(self, batch: Sequence[Incoming]) -> StageResult:
        result = StageResult()
        events: list[tuple[Incoming, InsightsExtracted]] = []
        for rec in batch:
            reason = core.unstorable(rec.event)
            if reason is None:
                events.append((rec, rec.event))
            else:
                result.dead_letters.append(_poison(rec, reason, "PoisonRecord"))
        job_ids = list(dict.fromkeys(e.job_id for _, e in events))
        # A state this process holds is used only at the version Postgres has: anything
        # else (another replica wrote, a batch of ours was not written) reloads it.
        cached = {j: self._states[j].version for j in job_ids if j in self._states}
        snap = await self.store.snapshot(
            job_ids, {i.id for _, e in events for i in e.insights}, cached
        )
        states = {j: snap.states.get(j) or self._states.pop(j) for j in job_ids}
        for j in job_ids:  # in use now: if this batch fails, nothing stale stays cached
            self._states.pop(j, None)
        fresh = {rec.event.job_id for rec in batch if rec.no_cache}  # `--no-cache` replays
        vectors, refused = await self._embed(events, snap.assigned, fresh)
        for rec, event in events:
            if id(event) in refused:
                result.dead_letters.append(_poison(rec, refused[id(event)], "LLMRequestRejected"))
        events = [(r, e) for r, e in events if id(e) not in refused]

        outcomes: dict[str, core.JobOutcome] = {}
        pairs_of: dict[int, list[tuple[Insight, str, bool]]] = {}
        for job in job_ids:
            mine = [e for _, e in events if e.job_id == job]
            records = [[(i, vectors.get(i.id)) for i in e.insights] for e in mine]
            outcome = core.place_job(states[job], records, snap.assigned, self.params)
            outcomes[job] = outcome
            pairs_of.update((id(e), p) for e, p in zip(mine, outcome.records, strict=True))
        await self._name_all(outcomes, fresh)

        acc = core.Assembled()
        opened = merged = 0
        for outcome in outcomes.values():
            part = core.assemble_job(outcome)
            acc.theme_rows += part.theme_rows
            acc.member_rows += part.member_rows
            acc.merge_rows += part.merge_rows
            acc.job_rows += part.job_rows
            opened += sum(len(req.clusters) for req in outcome.naming if not req.renaming)
            merged += len({m.theme_id for m in outcome.merges})
            core.settle(outcome.state)
            self._remember(outcome.state)
        acc.themed_rows = [
            {"review_id": r, "job_id": e.job_id} for _, e in events for r in e.review_ids
        ]
        for spec, table_rows, key in (
            (THEMES, acc.theme_rows, "id"),
            (THEME_MEMBERS, acc.member_rows, "insight_id"),
            (THEME_MERGES, acc.merge_rows, "theme_id"),
            (THEME_JOBS, acc.job_rows, "job_id"),
            (REVIEW_THEMED, acc.themed_rows, "review_id"),
        ):
            if table_rows:
                result.upserts.append((spec, sorted(table_rows, key=itemgetter(key))))
        for _, event in events:
            state = outcomes[event.job_id].state
            out = core.themes_event(event, state, pairs_of[id(event)])
            result.events.append(Outgoing.event(self.output_topic, event.job_id, out))
        result.reviews_out = sum(len(e.review_ids) for _, e in events)
        metrics.observe([e for _, e in events], opened, len(acc.member_rows), merged)
        return result

    def _remember(self, state: JobState) -> None:
        self._states[state.job_id] = state
        self._states.move_to_end(state.job_id)
        while len(self._states) > self.cache_jobs:
            self._states.popitem(last=False)

    async def _embed(
        self,
        events: Sequence[tuple[Incoming, InsightsExtracted]],
        assigned: dict[str, str],
        fresh: set[str],
    ) -> tuple[dict[str, Vector], dict[int, str]]:
        """Unit vectors of the insights without a theme (one call set per job, so a
        refusal is found within its job), and the records the provider refused to embed
        (id of the event -> why). Jobs in `fresh` skip the embeddings cache."""
        by_job: dict[str, list[InsightsExtracted]] = {}
        for _, e in events:
            if any(i.id not in assigned for i in e.insights):
                by_job.setdefault(e.job_id, []).append(e)
        parts = await asyncio.gather(
            *(
                self._embed_job(job, mine, assigned, job not in fresh)
                for job, mine in by_job.items()
            )
        )
        vectors: dict[str, Vector] = {}
        refused: dict[int, str] = {}
        for v, r in parts:
            vectors.update(v)
            refused.update(r)
        return vectors, refused

    async def _embed_job(
        self,
        job_id: str,
        events: Sequence[InsightsExtracted],
        assigned: dict[str, str],
        cache: bool,
    ) -> tuple[dict[str, Vector], dict[int, str]]:
        todo = [i for e in events for i in e.insights if i.id not in assigned]
        try:
            raw = await self._embed_texts(todo, job_id, cache)
            return {i.id: core.to_unit(v) for i, v in zip(todo, raw, strict=True)}, {}
        except LLMRequestRejected:
            pass
        # Find the records the provider refuses; the others go on (cached, so cheap).
        vectors: dict[str, Vector] = {}
        refused: dict[int, str] = {}
        for event in events:
            mine = [i for i in event.insights if i.id not in assigned]
            try:
                raw = await self._embed_texts(mine, job_id, cache)
            except LLMRequestRejected as exc:
                refused[id(event)] = str(exc)[:500]
                continue
            vectors.update((i.id, core.to_unit(v)) for i, v in zip(mine, raw, strict=True))
        return vectors, refused

    async def _embed_texts(self, todo: Sequence[Insight], job_id: str, cache: bool) -> list[Vector]:
        texts = [core.embed_text(i) for i in todo]
        delay, cap = self.embed_backoff_s
        while True:
            try:
                return await self.embedder.embed(texts, job_id=job_id, cache=cache)
            except LLMRequestRejected:
                raise
            except LLMError as exc:
                # Placing the rest first would change every later decision: retry in place.
                metrics.EMBED_OUTAGES.inc()
                log.warning(
                    "embeddings unavailable, retrying the batch in place",
                    extra={
                        "stage": self.name,
                        "job_id": job_id,
                        "error": str(exc)[:300],
                        "retry_in_s": delay,
                    },
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, cap)

    async def _name_all(self, outcomes: dict[str, core.JobOutcome], fresh: set[str]) -> None:
        """Name every request of every job (all calls at once), then apply the names in
        the order the requests arose (the later naming of a theme wins); jobs in `fresh`
        skip the LLM result cache."""
        requests = [r for o in outcomes.values() for r in o.naming]
        if not requests:
            return
        jobs = await self.store.jobs({r.job_id for r in requests})
        calls = [c for r in requests for c in core.naming_chunks(r)]
        answers = await asyncio.gather(
            *(self._name(c, jobs.get(c.job_id), c.job_id not in fresh) for c in calls)
        )
        for call, names in zip(calls, answers, strict=True):
            core.apply_names(outcomes[call.job_id].state, names)

    async def _name(
        self, request: NamingRequest, job: tuple[str, str] | None, cache: bool
    ) -> dict[str, tuple[str, str]]:
        """Names of one call's themes; fallback names if the LLM fails for good."""
        product, language = job or ("", "en")
        keys = [core.cluster_key(i) for i in range(len(request.clusters))]
        payload = {
            "product": product,
            "language": language,
            "clusters": [c.llm_input(k) for c, k in zip(request.clusters, keys, strict=True)],
        }
        try:
            answer = await self.llm.complete(
                "theme",
                PROMPT,
                payload,
                ThemeOutput,
                job_id=request.job_id,
                cache=cache,
                validate=check_keys(keys),
            )
        except (LLMError, ValidationError) as exc:
            metrics.FALLBACK_NAMES.inc(len(request.clusters))
            log.warning(
                "theme naming failed, using fallback names",
                extra={
                    "stage": self.name,
                    "job_id": request.job_id,
                    "themes": len(request.clusters),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )
            return core.names_from_answer(request, None)
        return core.names_from_answer(
            request, ((t.key, t.name, t.description) for t in answer.themes)
        )

    async def close(self) -> None:
        """Release what `build` opened (LLM client, Redis)."""
        for close in self._closers:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def _poison(rec: Incoming, reason: str, error_type: str) -> DeadLetterOut:
    job_id = rec.event.job_id
    return DeadLetterOut(
        failure=Failure(error_type, reason),
        value=rec.raw,
        key=rec.key,
        source=rec,
        job_id=job_id if 0 < len(job_id) <= 36 else None,
        review_ids=tuple(r for r in rec.event.review_ids if 0 < len(r) <= 36),
    )


async def build(
    settings: CommonSettings,
    pool: ConnectionPool,
    *,
    llm: CompletesLLM | None = None,
    embedder: EmbedsText | None = None,
    store: ThemeStore | None = None,
    theme: ThemeSettings | None = None,
) -> ThemeHandler:
    """Wire the theme handler from settings; tests may pass their own ports."""
    theme = theme or ThemeSettings()
    closers: list[Callable[[], Any]] = []
    if llm is None or embedder is None:
        redis = redis_client(settings.redis.url, theme.redis_connections)
        # One share for the stage, not one per tenant: see `one_share`.
        real = build_llm(LLMSettings(), redis, share_of=one_share("stage:theme"))
        closers += [real.aclose, redis.aclose]
        llm = llm or real
        embedder = embedder or build_embedder(real)
    return ThemeHandler(
        store or PgThemeStore(pool),
        llm,
        embedder,
        settings.kafka.topic_prefix,
        params=theme.cluster_params(),
        cache_jobs=theme.cache_jobs,
        closers=closers,
    )
