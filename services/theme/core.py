"""The theme stage's pure core: semantic themes of a job, kept current as insights stream in.

No IO here. Every insight is embedded (its aspect plus its quote in the job's target
language, see `embed_text`) and placed by `place_job` into the themes of its job and
dimension (themes form a dimension -> theme hierarchy; a theme never spans dimensions):

- **assign**: the insight joins the active theme of its dimension whose centroid is most
  similar (cosine) if that similarity reaches `assign_threshold`, else it opens a new theme
  with id uuid5(job, dimension, the insight's id);
- **consolidate**: each time the job's count of placed insights reaches a multiple of
  `consolidate_every`, near-duplicate themes of a dimension merge (most similar pair first,
  while their centroids' cosine reaches `merge_threshold`, and further while the job has
  more than `max_themes` themes), and small themes that had a full interval to grow
  (fewer than `min_size` insights) are absorbed by their nearest established theme
  when it is similar enough (`absorb_threshold`). A merge is recorded (merged theme ->
  surviving theme, chains compressed so one lookup resolves any id) and the surviving
  theme is renamed by the LLM.

**The determinism rule** (same membership on every replica, replay and restart):

1. Within a job the input is processed strictly in partition order, one insight at a time
   (a job's insight records share one partition: the topic is keyed by job id), and the
   consolidation clock is the job's count of placed insights, not batches or time - so
   how a replay or a restart cuts the stream into batches changes nothing.
2. The job's state (centroid sums as float64, sizes, counters, merges) is written in the
   same transaction as the memberships it results from, so it always matches the input
   processed so far; it is read back bit for bit. Vector math is pure Python floats in a
   fixed order (no BLAS), identical on every machine; vectors are the provider's float32
   values, cached by content hash, so a replay sees the same vectors.
3. An insight that already has a theme keeps it: a replayed record (crash after the
   write, an offsets reset, `voc replay job`) finds its insights placed, changes no state
   and lands each insight in the theme it had - resolved through the merges recorded
   since. Only insights never placed before are placed, against the state as of the last
   committed batch. Changing thresholds or the embedding model changes future decisions
   only; to re-cluster a job from scratch, delete its theme rows and replay it.

Names never influence membership: a new theme is named from the record that opened it
(one LLM call per record, whatever the batch), a merged theme from its combined sample
at the merge, the later naming winning; names and descriptions are model text with
review quotes in the prompt, so `clean_label` strips links and markup and caps them.
"""

from __future__ import annotations

import math
import operator
import re
import struct
import unicodedata
import uuid
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.events import Insight, InsightsExtracted, ThemeAssignment, ThemesExtracted

THEME_NS = uuid.UUID("0f6b3c2a-1d7e-4e59-b8a4-7c2d9e5f3a61")
MAX_KEY_CHARS = 120
MAX_NAME_CHARS = 80
MAX_DESCRIPTION_CHARS = 400
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


@dataclass(frozen=True)
class ClusterParams:
    """How close is close enough: the clustering knobs (`ThemeSettings` sets them).

    The defaults suit the bundled fake LLM's embeddings; a real embedding model has its
    own similarity scale (e.g. text-embedding-3-small: paraphrases ~0.6-0.8), so tune the
    thresholds to it. `max_themes` bounds a job's themes whatever the scale.
    """

    assign_threshold: float = 0.92
    merge_threshold: float = 0.95
    absorb_threshold: float = 0.85
    min_size: int = 3
    consolidate_every: int = 100
    max_themes: int = 40


# -- aspect keys (a theme's `key`: the normalised aspect it opened with) ----------------------


def singular(word: str) -> str:
    """A simple English singular: batteries -> battery, boxes -> box, cables -> cable."""
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
    """An aspect casefolded, without punctuation and stopwords, singularised, in order
    ("Battery-Life!" -> "battery life")."""
    text = unicodedata.normalize("NFKC", aspect).casefold().replace("'s", " ")
    words = [w for w in _NON_WORD.sub(" ", text).split() if w]
    kept = [singular(w) for w in words if w not in STOPWORDS]
    if not kept:  # only stopwords ("overall"): keep what there was rather than nothing
        kept = [singular(w) for w in words]
    return " ".join(kept)[:MAX_KEY_CHARS].strip() or GENERAL_KEY


def new_theme_id(job_id: str, dimension: str, insight_id: str) -> str:
    """The id of the theme an insight opens: stable for the same job, dimension, insight."""
    return str(uuid.uuid5(THEME_NS, f"{job_id}\x00{dimension}\x00{insight_id}"))


def embed_text(ins: Insight) -> str:
    """What an insight is embedded as: its aspect and its quote in the target language."""
    quote = ins.quote_translation or ins.quote
    return f"{' '.join(ins.aspect.split())}: {' '.join(quote.split())}"


def sample_quote(ins: Insight) -> str:
    """The insight's quote as a theme's sample shows it (target language, capped)."""
    return " ".join((ins.quote_translation or ins.quote).split())[:SAMPLE_QUOTE_CHARS]


# -- free text from the model -----------------------------------------------------------------

_URL = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)\S+")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)")
_TAG = re.compile(r"<[^>]{0,200}>")
_MARKUP = re.compile(r"[`*_#<>\[\]{}|~^]+")


def clean_label(text: str, limit: int) -> str:
    """Model text fit for a label: links, HTML and markdown removed, control characters
    dropped, whitespace collapsed, at most `limit` characters (cut with an ellipsis)."""
    text = unicodedata.normalize("NFKC", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _MARKUP.sub(" ", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n")
    text = " ".join(text.split()).strip(" -:;,.")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


# -- vectors ----------------------------------------------------------------------------------


def to_unit(values: Sequence[float]) -> array[float]:
    """A vector as float64 of unit length (a zero vector stays zero)."""
    v = array("d", values)
    norm = math.sqrt(dot(v, v))
    return array("d", [x / norm for x in v]) if norm else v


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product, summed left to right (deterministic)."""
    return sum(map(operator.mul, a, b))


def pack_centroid(v: array[float]) -> bytes:
    """A centroid sum as stored: float64 little-endian bytes."""
    return struct.pack(f"<{len(v)}d", *v)


def unpack_centroid(raw: bytes | None) -> array[float]:
    """The centroid `pack_centroid` stored (empty for a theme without one)."""
    if not raw:
        return array("d")
    return array("d", struct.unpack(f"<{len(raw) // 8}d", raw))


# -- state ------------------------------------------------------------------------------------


@dataclass
class ThemeState:
    """A theme of a job: where its members point (sum of their unit vectors) and a sample."""

    id: str
    job_id: str
    dimension: str
    key: str
    seq: int  # opening order within the job: breaks ties
    opened_at: int  # the job's placed-insight count when it opened
    total: array[float]
    size: int
    name: str = ""
    description: str = ""
    aspects: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    norm: float = 0.0
    dirty: bool = False

    def __post_init__(self) -> None:
        self.norm = math.sqrt(dot(self.total, self.total))

    def similarity(self, unit: array[float]) -> float:
        """Cosine of a unit vector with this theme's centroid (-2 if not comparable)."""
        if not self.norm or len(unit) != len(self.total):
            return -2.0
        return dot(unit, self.total) / self.norm

    def centroid_similarity(self, other: ThemeState) -> float:
        """Cosine of the two themes' centroids (-2 if not comparable)."""
        if not self.norm or not other.norm or len(self.total) != len(other.total):
            return -2.0
        return dot(self.total, other.total) / (self.norm * other.norm)

    def add(self, unit: array[float], ins: Insight) -> None:
        """Make `ins` (embedded as `unit`) a member."""
        self.total = array("d", map(operator.add, self.total, unit))
        self.norm = math.sqrt(dot(self.total, self.total))
        self.size += 1
        self.sample(ins)
        self.dirty = True

    def sample(self, ins: Insight) -> None:
        """Keep the first few distinct aspects and quotes (for naming)."""
        aspect = " ".join(ins.aspect.split())
        if aspect and aspect not in self.aspects and len(self.aspects) < SAMPLE_ASPECTS:
            self.aspects.append(aspect)
        quote = sample_quote(ins)
        if quote and quote not in self.quotes and len(self.quotes) < SAMPLE_QUOTES:
            self.quotes.append(quote)

    def absorb(self, other: ThemeState) -> None:
        """Take `other`'s members (a merge): sums, sizes and samples add up."""
        self.total = array("d", map(operator.add, self.total, other.total))
        self.norm = math.sqrt(dot(self.total, self.total))
        self.size += other.size
        for a in other.aspects:
            if a not in self.aspects and len(self.aspects) < SAMPLE_ASPECTS:
                self.aspects.append(a)
        for q in other.quotes:
            if q not in self.quotes and len(self.quotes) < SAMPLE_QUOTES:
                self.quotes.append(q)
        self.dirty = True

    def row(self) -> dict[str, Any]:
        """The `themes` row."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "dimension": self.dimension,
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "seq": self.seq,
            "opened_at": self.opened_at,
            "size": self.size,
            "centroid": pack_centroid(self.total) if len(self.total) else None,
            "sample": {"aspects": list(self.aspects), "quotes": list(self.quotes)},
        }


@dataclass(frozen=True)
class MergeRecord:
    """A merged theme and the theme that holds its members now (chains compressed)."""

    theme_id: str
    into_id: str
    at_insight: int
    similarity: float


@dataclass
class JobState:
    """Everything placing a job's next insight depends on, as of its last written batch."""

    job_id: str
    version: int = 0
    placed: int = 0  # insights placed so far: the consolidation clock
    opened: int = 0  # themes opened so far: the next theme's seq
    themes: dict[str, ThemeState] = field(default_factory=dict)  # active themes
    merged: dict[str, MergeRecord] = field(default_factory=dict)
    retired: dict[str, ThemeState] = field(default_factory=dict)  # merged in this batch

    def resolve(self, theme_id: str) -> str:
        """The active theme an id stands for (itself unless it was merged)."""
        record = self.merged.get(theme_id)
        return record.into_id if record is not None else theme_id

    def row(self) -> dict[str, Any]:
        """The `theme_jobs` row."""
        return {
            "job_id": self.job_id,
            "version": self.version,
            "placed": self.placed,
            "opened": self.opened,
        }


# -- placing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamingCluster:
    """A theme to name, with what it was named from (captured when it was due)."""

    theme_id: str
    dimension: str
    key: str
    aspects: tuple[str, ...]
    quotes: tuple[str, ...]
    size: int

    def llm_input(self, key: str) -> dict[str, Any]:
        """The cluster as the theme prompt takes it (`shared.prompts.theme`)."""
        return {
            "key": key,
            "dimension": self.dimension,
            "aspects": list(self.aspects) or [self.key],
            "quotes": list(self.quotes),
            "size": self.size,
        }


@dataclass(frozen=True)
class NamingRequest:
    """Themes to name in one go: those one record opened, or those one consolidation
    merged into. `renaming` ones keep their name if the model cannot name them."""

    job_id: str
    clusters: tuple[NamingCluster, ...]
    renaming: bool


@dataclass
class JobOutcome:
    """What placing a job's records gave: per record (insight, assigned theme, new?)."""

    state: JobState
    records: list[list[tuple[Insight, str, bool]]] = field(default_factory=list)
    naming: list[NamingRequest] = field(default_factory=list)
    merges: list[MergeRecord] = field(default_factory=list)  # new or re-pointed records

    @property
    def changed(self) -> bool:
        """Whether any state moved (else nothing but review marks is written)."""
        return any(new for rec in self.records for _, _, new in rec) or bool(self.merges)


def _capture(theme: ThemeState) -> NamingCluster:
    return NamingCluster(
        theme.id,
        theme.dimension,
        theme.key,
        tuple(theme.aspects),
        tuple(theme.quotes),
        theme.size,
    )


def place_job(
    state: JobState,
    records: Sequence[Sequence[tuple[Insight, array[float] | None]]],
    assigned: Mapping[str, str],
    params: ClusterParams,
) -> JobOutcome:
    """Place one job's records (in partition order) into its themes, mutating `state`.

    Each record is a list of (insight, unit vector); `assigned` maps insight ids that
    already have a theme to it (those keep it and need no vector). See the module
    docstring for the rules.
    """
    out = JobOutcome(state)
    seen: dict[str, str] = dict(assigned)
    for record in records:
        pairs: list[tuple[Insight, str, bool]] = []
        opened: list[ThemeState] = []
        for ins, unit in record:
            known = seen.get(ins.id)
            if known is not None:
                pairs.append((ins, known, False))
                continue
            if unit is None:
                raise ValueError(f"insight {ins.id} has neither a theme nor a vector")
            theme = _nearest(state, ins.dimension, unit, params.assign_threshold)
            if theme is None:
                theme = ThemeState(
                    id=new_theme_id(state.job_id, ins.dimension, ins.id),
                    job_id=state.job_id,
                    dimension=ins.dimension,
                    key=aspect_key(ins.aspect),
                    seq=state.opened,
                    opened_at=state.placed,
                    total=array("d", [0.0] * len(unit)),
                    size=0,
                )
                state.opened += 1
                state.themes[theme.id] = theme
                opened.append(theme)
            theme.add(unit, ins)
            seen[ins.id] = theme.id
            pairs.append((ins, theme.id, True))
            state.placed += 1
            if state.placed % params.consolidate_every == 0:
                consolidate(state, params, out)
        if opened:
            for theme in opened:
                if not theme.name:
                    fallback = fallback_name(theme.dimension, theme.aspects, theme.key)
                    theme.name, theme.description = fallback
            # Named from what the record put into them (one call, whatever the batch).
            clusters = tuple(_capture(t) for t in opened)
            out.naming.append(NamingRequest(state.job_id, clusters, renaming=False))
        out.records.append(pairs)
    return out


def _nearest(
    state: JobState, dimension: str, unit: array[float], threshold: float
) -> ThemeState | None:
    best: ThemeState | None = None
    best_sim = threshold
    for theme in state.themes.values():
        if theme.dimension != dimension:
            continue
        sim = theme.similarity(unit)
        if sim > best_sim or (sim == best_sim and (best is None or theme.seq < best.seq)):
            best, best_sim = theme, sim
    return best


def _pair_key(a: ThemeState, b: ThemeState) -> tuple[str, str]:
    return (a.id, b.id) if a.seq < b.seq else (b.id, a.id)


def consolidate(state: JobState, params: ClusterParams, out: JobOutcome) -> None:
    """Merge near-duplicate themes, then absorb small ones (see the module docstring)."""
    sims: dict[tuple[str, str], float] = {}
    themes = sorted(state.themes.values(), key=lambda t: t.seq)
    for i, a in enumerate(themes):
        for b in themes[i + 1 :]:
            sim = a.centroid_similarity(b) if a.dimension == b.dimension else -2.0
            if sim > -2.0:  # comparable: same dimension, both with a centroid of one width
                sims[(a.id, b.id)] = sim
    renamed: dict[str, ThemeState] = {}

    def merge(a: ThemeState, b: ThemeState, sim: float) -> None:
        # The larger theme survives (ties: the older one), so ids users saw tend to stay.
        keep, gone = (a, b) if (a.size, -a.seq) >= (b.size, -b.seq) else (b, a)
        if gone.size >= params.min_size:
            renamed[keep.id] = keep
        renamed.pop(gone.id, None)
        keep.absorb(gone)
        del state.themes[gone.id]
        state.retired[gone.id] = gone
        record = MergeRecord(gone.id, keep.id, state.placed, round(sim, 6))
        state.merged[gone.id] = record
        out.merges.append(record)
        for tid, earlier in list(state.merged.items()):
            if earlier.into_id == gone.id:
                moved = MergeRecord(tid, keep.id, earlier.at_insight, earlier.similarity)
                state.merged[tid] = moved
                out.merges.append(moved)
        for key in [k for k in sims if gone.id in k or keep.id in k]:
            del sims[key]
        for other in state.themes.values():
            if other is not keep and other.dimension == keep.dimension:
                sim = keep.centroid_similarity(other)
                if sim > -2.0:
                    sims[_pair_key(keep, other)] = sim

    while sims:
        (ida, idb), sim = max(
            sims.items(),
            key=lambda kv: (kv[1], -state.themes[kv[0][0]].seq, -state.themes[kv[0][1]].seq),
        )
        if sim < params.merge_threshold and len(state.themes) <= params.max_themes:
            break
        merge(state.themes[ida], state.themes[idb], sim)

    for small in sorted(state.themes.values(), key=lambda t: t.seq):
        if small.id not in state.themes or small.size >= params.min_size:
            continue
        if state.placed - small.opened_at < params.consolidate_every:
            continue  # too young to judge
        near = [  # established themes only: two small ones do not make a theme
            (sims[_pair_key(small, t)], -t.seq, t)
            for t in state.themes.values()
            if t.size >= params.min_size and _pair_key(small, t) in sims
        ]
        if near:
            sim, _, target = max(near, key=lambda x: (x[0], x[1]))
            if sim >= params.absorb_threshold:
                merge(small, target, sim)

    if renamed:
        clusters = tuple(_capture(t) for t in sorted(renamed.values(), key=lambda t: t.seq))
        out.naming.append(NamingRequest(state.job_id, clusters, renaming=True))


# -- names ------------------------------------------------------------------------------------


def fallback_name(dimension: str, aspects: Sequence[str], key: str) -> tuple[str, str]:
    """(name, description) from a theme's sample, for when the LLM cannot name it."""
    label = clean_label(aspects[0] if aspects else key, MAX_NAME_CHARS) or GENERAL_KEY
    name = label[:1].upper() + label[1:]
    described = clean_label(f"What customers say about {key} ({dimension}).", 400)
    return name, described


def names_from_answer(
    request: NamingRequest, answer: Iterable[tuple[str, str, str]] | None
) -> dict[str, tuple[str, str]]:
    """Theme id -> (name, description) from the model's (key, name, description) triples
    for a request whose clusters were keyed t1, t2, ... in order. Clusters the answer
    misses (all, when `answer` is None) get `fallback_name`, unless they are being
    renamed: those keep the name they have."""
    by_key: dict[str, tuple[str, str]] = {}
    for key, name, description in answer or ():
        clean = clean_label(name, MAX_NAME_CHARS)
        if clean:
            by_key[key] = (clean, clean_label(description, MAX_DESCRIPTION_CHARS))
    out: dict[str, tuple[str, str]] = {}
    for i, c in enumerate(request.clusters):
        named = by_key.get(cluster_key(i))
        if named is not None:
            out[c.theme_id] = named
        elif not request.renaming:
            out[c.theme_id] = fallback_name(c.dimension, c.aspects, c.key)
    return out


def cluster_key(position: int) -> str:
    """The key of the `position`-th cluster of a naming call."""
    return f"t{position + 1}"


def naming_chunks(request: NamingRequest) -> list[NamingRequest]:
    """A request cut into calls of at most `CLUSTERS_PER_CALL` clusters."""
    c = request.clusters
    return [
        NamingRequest(request.job_id, c[i : i + CLUSTERS_PER_CALL], request.renaming)
        for i in range(0, len(c), CLUSTERS_PER_CALL)
    ]


def apply_names(state: JobState, names: Mapping[str, tuple[str, str]]) -> None:
    """Give the named themes (active or merged in this batch) their new names."""
    for tid, (name, description) in names.items():
        theme = state.themes.get(tid) or state.retired.get(tid)
        if theme is not None and (theme.name, theme.description) != (name, description):
            theme.name, theme.description = name, description
            theme.dirty = True


# -- checks, rows and events ------------------------------------------------------------------


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


@dataclass
class Assembled:
    """Rows and events of a batch."""

    theme_rows: list[dict[str, Any]] = field(default_factory=list)
    member_rows: list[dict[str, Any]] = field(default_factory=list)
    merge_rows: list[dict[str, Any]] = field(default_factory=list)
    job_rows: list[dict[str, Any]] = field(default_factory=list)
    themed_rows: list[dict[str, Any]] = field(default_factory=list)


def assemble_job(outcome: JobOutcome) -> Assembled:
    """The rows one job's outcome writes: touched themes, new memberships (an insight's
    first theme, never rewritten), merge records, the job's state row - all or nothing
    in the batch's transaction, which is what makes the state match its input."""
    state = outcome.state
    out = Assembled()
    if not outcome.changed and not any(
        t.dirty for t in (*state.themes.values(), *state.retired.values())
    ):
        return out
    state.version += 1
    touched = [t for t in (*state.themes.values(), *state.retired.values()) if t.dirty]
    out.theme_rows = [t.row() for t in touched]
    for rec in outcome.records:
        out.member_rows.extend(
            {
                "insight_id": ins.id,
                "theme_id": tid,
                "job_id": state.job_id,
                "review_id": ins.review_id,
            }
            for ins, tid, new in rec
            if new
        )
    out.merge_rows = [
        {
            "theme_id": m.theme_id,
            "job_id": state.job_id,
            "into_id": m.into_id,
            "at_insight": m.at_insight,
            "similarity": m.similarity,
        }
        for m in {m.theme_id: m for m in outcome.merges}.values()
    ]
    out.job_rows = [state.row()]
    return out


def settle(state: JobState) -> None:
    """After the rows were taken: nothing is dirty, merged themes are gone for good."""
    for t in state.themes.values():
        t.dirty = False
    state.retired.clear()


def themes_event(
    event: InsightsExtracted, state: JobState | None, pairs: Sequence[tuple[Insight, str, bool]]
) -> ThemesExtracted:
    """The record's `ThemesExtracted`: each insight with its current (resolved) theme."""
    resolve = state.resolve if state is not None else (lambda t: t)
    return ThemesExtracted(
        job_id=event.job_id,
        review_ids=list(event.review_ids),
        assignments=[
            ThemeAssignment(insight_id=ins.id, theme_id=resolve(tid)) for ins, tid, _ in pairs
        ],
    )
