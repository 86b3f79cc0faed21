"""The theme stage's pure core: aspect keys, clusters, naming groups, rows and events.

No IO here. An insight belongs to the theme of its (dimension, aspect key): the key is the
aspect casefolded, stripped of punctuation and stopwords, each word singularised, so
"Battery-life", "battery life" and "the batteries' life" land together. The theme id is
uuid5(job, dimension, key), so membership is decided without any read, is the same on
every replica and every replay, and a new insight joins its theme the moment it arrives.

Only the *names* need the LLM, and only for themes that do not exist yet. A new theme is
named from the first record (in partition order) that contains it, grouped per (record,
dimension): one call names every theme that record opens in that dimension. Because a job's
insight events share one partition (keyed by job id) and the stage runs one batch at a
time, that record - and so the naming input - is the same however a replay cuts batches,
which keeps names stable across kill -9 and restarts.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.events import Insight, InsightsExtracted, ThemeAssignment, ThemesExtracted

THEME_NS = uuid.UUID("0f6b3c2a-1d7e-4e59-b8a4-7c2d9e5f3a61")
MAX_KEY_CHARS = 120
CLUSTERS_PER_CALL = 20  # keeps one naming answer well inside max_tokens
SAMPLE_ASPECTS = 5
SAMPLE_QUOTES = 3
SAMPLE_QUOTE_CHARS = 300
GENERAL_KEY = "general"
MAX_ID = 36  # ids are VARCHAR(36): a longer one would fail the whole upsert

_NON_WORD = re.compile(r"[\W_]+")
# Function words that do not change what an aspect is about. Negations stay: "not charging"
# is not "charging".
_STOPWORDS = """a an the of for to in on at by from with and or as is are was were be been being
    it its this that these those my our your their his her very too so really quite much
    many some any overall general"""
STOPWORDS = frozenset(_STOPWORDS.split())
_KEEP_S = ("ss", "us", "is", "ous", "ics")


def singular(word: str) -> str:
    """A simple English singular: batteries -> battery, boxes -> box, cables -> cable.

    Deliberately naive (no dictionary): what matters is that plural and singular of a
    word meet on one key, deterministically; a rare odd stem only affects the key.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith(_KEEP_S):
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def aspect_key(aspect: str) -> str:
    """The clustering key of an aspect: casefolded words without punctuation and
    stopwords, singularised, in their order ("Battery-Life!" -> "battery life")."""
    text = unicodedata.normalize("NFKC", aspect).casefold().replace("'s", " ")
    words = [w for w in _NON_WORD.sub(" ", text).split() if w]
    kept = [singular(w) for w in words if w not in STOPWORDS]
    if not kept:  # only stopwords ("overall"): keep what there was rather than nothing
        kept = [singular(w) for w in words]
    return " ".join(kept)[:MAX_KEY_CHARS].strip() or GENERAL_KEY


def theme_id(job_id: str, dimension: str, key: str) -> str:
    """The deterministic id of a job's theme of `dimension` with aspect key `key`."""
    return str(uuid.uuid5(THEME_NS, f"{job_id}\x00{dimension}\x00{key}"))


@dataclass
class Cluster:
    """A new theme to name: its id, key and a sample from the record that opened it."""

    theme_id: str
    job_id: str
    dimension: str
    key: str
    aspects: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)

    def add_sample(self, ins: Insight) -> None:
        """Keep a few distinct aspects and quotes for the naming prompt."""
        aspect = " ".join(ins.aspect.split())
        if aspect and aspect not in self.aspects and len(self.aspects) < SAMPLE_ASPECTS:
            self.aspects.append(aspect)
        quote = ins.quote[:SAMPLE_QUOTE_CHARS]
        if quote and quote not in self.quotes and len(self.quotes) < SAMPLE_QUOTES:
            self.quotes.append(quote)


@dataclass
class NamingGroup:
    """New themes of one dimension opened by one record: named by one LLM call."""

    job_id: str
    dimension: str
    clusters: list[Cluster]

    def llm_input(self, product: str) -> dict[str, Any]:
        """The theme prompt's input (see `shared.prompts.theme`)."""
        return {
            "product": product,
            "dimension": self.dimension,
            "clusters": [
                {"key": c.key, "aspects": c.aspects or [c.key], "quotes": c.quotes}
                for c in self.clusters
            ],
        }


@dataclass(frozen=True)
class ThemeName:
    """A theme's display name and description."""

    name: str
    description: str


@dataclass
class Plan:
    """What a batch of `InsightsExtracted` records means: assignments and themes to name."""

    assignments: list[list[tuple[Insight, str]]]  # per record: (insight, theme id)
    groups: list[NamingGroup]

    @property
    def new_clusters(self) -> list[Cluster]:
        """Every theme this batch opens."""
        return [c for g in self.groups for c in g.clusters]


def unstorable(event: InsightsExtracted) -> str | None:
    """Why a record cannot be stored (an id that does not fit its column), or None.

    The insight stage never emits such a record; anything else writing the topic might,
    and one bad row would otherwise fail every retry of its batch.
    """
    ids = [("job_id", event.job_id), *(("review_id", r) for r in event.review_ids)]
    for ins in event.insights:
        ids += [("insight id", ins.id), ("insight review_id", ins.review_id)]
    for what, value in ids:
        if not 0 < len(value) <= MAX_ID:
            return f"{what} must be 1-{MAX_ID} characters, got {len(value)}"
    return None


def theme_ids_of(events: Iterable[InsightsExtracted]) -> set[str]:
    """Every theme id the insights of `events` belong to (to ask which exist)."""
    return {
        theme_id(e.job_id, ins.dimension, aspect_key(ins.aspect))
        for e in events
        for ins in e.insights
    }


def plan(events: Sequence[InsightsExtracted], existing: Collection[str]) -> Plan:
    """Assign every insight to its theme and group the themes that do not exist yet by
    (record, dimension) of their first appearance, in record order."""
    assignments: list[list[tuple[Insight, str]]] = []
    groups: list[NamingGroup] = []
    opened: dict[str, Cluster] = {}
    for event in events:
        pairs: list[tuple[Insight, str]] = []
        by_dim: dict[str, list[Cluster]] = {}
        opened_here: set[str] = set()
        for ins in event.insights:
            key = aspect_key(ins.aspect)
            tid = theme_id(event.job_id, ins.dimension, key)
            pairs.append((ins, tid))
            if tid in existing:
                continue
            cluster = opened.get(tid)
            if cluster is None:
                cluster = Cluster(tid, event.job_id, ins.dimension, key)
                opened[tid] = cluster
                opened_here.add(tid)
                by_dim.setdefault(ins.dimension, []).append(cluster)
            if tid in opened_here:  # the naming sample comes from the opening record only
                cluster.add_sample(ins)
        for dimension, clusters in by_dim.items():
            for i in range(0, len(clusters), CLUSTERS_PER_CALL):
                groups.append(
                    NamingGroup(event.job_id, dimension, clusters[i : i + CLUSTERS_PER_CALL])
                )
        assignments.append(pairs)
    return Plan(assignments, groups)


def fallback_name(cluster: Cluster) -> ThemeName:
    """A name derived from the key, for when the LLM cannot name a theme."""
    label = cluster.aspects[0] if cluster.aspects else cluster.key
    name = label[:1].upper() + label[1:]
    return ThemeName(
        name=name[:120],
        description=f"What customers say about {cluster.key} ({cluster.dimension}).",
    )


def names_from_answer(
    group: NamingGroup, answer: Iterable[tuple[str, str, str]] | None
) -> dict[str, ThemeName]:
    """Theme id -> name for a group from the LLM's (key, name, description) triples;
    clusters the answer misses (or all, when `answer` is None) get `fallback_name`."""
    by_key: dict[str, ThemeName] = {}
    for key, name, description in answer or ():
        name = " ".join(name.split())
        if name:
            by_key[key] = ThemeName(name[:120], " ".join(description.split()))
    return {c.theme_id: by_key.get(c.key) or fallback_name(c) for c in group.clusters}


@dataclass
class Assembled:
    """Rows and events of a batch."""

    theme_rows: list[dict[str, Any]] = field(default_factory=list)
    member_rows: list[dict[str, Any]] = field(default_factory=list)
    themed_rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[ThemesExtracted] = field(default_factory=list)


def assemble(
    events: Sequence[InsightsExtracted], p: Plan, names: Mapping[str, ThemeName]
) -> Assembled:
    """`themes` rows for the new themes, `theme_members` for every insight,
    `review_themed` for every review of every record (with insights or not), and one
    `ThemesExtracted` per record."""
    out = Assembled()
    for c in p.new_clusters:
        n = names.get(c.theme_id) or fallback_name(c)
        out.theme_rows.append(
            {
                "id": c.theme_id,
                "job_id": c.job_id,
                "dimension": c.dimension,
                "key": c.key,
                "name": n.name,
                "description": n.description,
            }
        )
    for event, pairs in zip(events, p.assignments, strict=True):
        out.member_rows.extend(
            {
                "insight_id": ins.id,
                "theme_id": tid,
                "job_id": event.job_id,
                "review_id": ins.review_id,
            }
            for ins, tid in pairs
        )
        out.themed_rows.extend({"review_id": r, "job_id": event.job_id} for r in event.review_ids)
        out.events.append(
            ThemesExtracted(
                job_id=event.job_id,
                review_ids=list(event.review_ids),
                assignments=[
                    ThemeAssignment(insight_id=ins.id, theme_id=tid) for ins, tid in pairs
                ],
            )
        )
    return out
