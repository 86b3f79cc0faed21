"""The theme core: keys, labels, semantic placement, consolidation, determinism across batch
cuts and replays; and the handler with fakes of its ports (no IO).

Vectors come from the fake LLM's embedding function (pure), so "sound", "son" and "音"
are close exactly as they are on the real stack.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from array import array
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from services.theme import core
from services.theme.core import (
    ClusterParams,
    JobState,
    NamingCluster,
    NamingRequest,
    ThemeState,
    aspect_key,
    clean_label,
    names_from_answer,
    new_theme_id,
    place_job,
    singular,
)
from services.theme.service import Snapshot, ThemeHandler
from shared.events import Insight, InsightsExtracted, ThemesExtracted
from shared.llm.errors import LLMMalformedOutput, LLMRequestRejected, LLMUnavailable
from shared.llm.prompts import PromptTemplate
from shared.stage import Incoming
from voc.fake_llm.embeddings import embed_text

T = TypeVar("T", bound=BaseModel)


def ins(
    iid: str,
    aspect: str,
    quote: str,
    dimension: str = "Sound quality",
    review: str | None = None,
    translation: str | None = None,
) -> Insight:
    return Insight(
        id=iid,
        review_id=review or f"r-{iid}",
        dimension=dimension,
        aspect=aspect,
        sentiment="positive",
        score=0.6,
        quote=quote,
        quote_start=0,
        quote_end=len(quote),
        quote_translation=translation,
    )


def vec(i: Insight) -> array[float]:
    return core.to_unit(embed_text(core.embed_text(i)))


def records(*groups: Sequence[Insight]) -> list[list[tuple[Insight, array[float] | None]]]:
    return [[(i, vec(i)) for i in g] for g in groups]


# -- keys and labels --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("battery life", "Battery-life"),
        ("battery life", "the battery's life"),
        ("battery life", "batteries life"),
        ("delivery box", "Delivery boxes"),
        ("customer service", "  Customer   Service. "),
    ],
)
def test_spellings_of_one_aspect_share_a_key(a: str, b: str) -> None:
    assert aspect_key(a) == aspect_key(b)


def test_keys_keep_meaningful_words_and_order() -> None:
    assert aspect_key("not charging") == "not charging"
    assert aspect_key("Qualité du son") == "qualité du son"
    assert aspect_key("音质") == "音质"
    assert aspect_key("the") == "the" and aspect_key("...") == "general"
    assert singular("batteries") == "battery" and singular("glass") == "glass"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Battery   drains fast ", "Battery drains fast"),
        ("**Great** sound", "Great sound"),
        ("See https://evil.example/x?a=1 now", "See now"),
        ("Visit www.evil.example today", "Visit today"),
        ("[Click me](javascript:alert(1)) sound", "Click me sound"),
        ('<img src=x onerror="alert(1)">Bass', "Bass"),
        ("Line\nbreak\x00 and \u202econtrol", "Line break and control"),
        ("# Heading `code`", "Heading code"),
    ],
)
def test_model_text_loses_links_markup_and_control_characters(raw: str, clean: str) -> None:
    assert clean_label(raw, 80) == clean


def test_labels_are_capped_with_an_ellipsis() -> None:
    out = clean_label("word " * 100, 80)
    assert len(out) == 80 and out.endswith("…")


# -- placement --------------------------------------------------------------------------------


def test_cross_language_synonyms_share_one_theme_and_other_concepts_do_not() -> None:
    state = JobState("j")
    out = place_job(
        state,
        records(
            [ins("a", "sound", "The sound is great.")],
            [ins("b", "son", "Le son est génial.", translation="[fr->en] Le son est génial.")],
            [ins("c", "音", "音がとても良い。", translation="[ja->en] 音がとても良い。")],
            [ins("d", "battery", "The battery is great.", dimension="Battery life")],
            [ins("e", "sound", "The sound is terrible and disappointing.")],
        ),
        {},
        ClusterParams(),
    )
    themes = [[tid for _, tid, _ in rec] for rec in out.records]
    assert themes[0] == themes[1] == themes[2]  # sound, son, 音
    assert themes[3] != themes[0]  # another dimension
    assert themes[4] != themes[0]  # same concept, opposite sentiment
    assert themes[0] == [new_theme_id("j", "Sound quality", "a")]
    assert state.placed == 5 and state.opened == 3
    assert state.themes[themes[0][0]].aspects == ["sound", "son", "音"]
    # new themes are named from the record that opened them: one request per record
    assert [len(r.clusters) for r in out.naming] == [1, 1, 1]
    assert not any(r.renaming for r in out.naming)


def _stream(n: int) -> list[list[Insight]]:
    """`n` records of one to three insights over a few concepts, sentiments, languages."""
    phrases = [
        ("sound", "The sound is great.", "Sound quality"),
        ("son", "Le son est mauvais.", "Sound quality"),
        ("Klang", "Der Klang ist gut.", "Sound quality"),
        ("battery", "The battery is great.", "Battery life"),
        ("akku", "Der Akku ist schlecht.", "Battery life"),
        ("batería", "La batería es buena.", "Battery life"),
        ("price", "The price is too high.", "Price and value"),
        ("precio", "Buen precio.", "Price and value"),
        ("general", "Ok.", "other"),
        ("general", "Meh, it is fine I guess.", "other"),
    ]
    out = []
    for r in range(n):
        group = []
        for k in range(1 + r % 3):
            aspect, quote, dim = phrases[(r * 7 + k * 3) % len(phrases)]
            group.append(ins(f"i{r}-{k}", aspect, f"{quote} #{r % 13}", dim, review=f"r{r}"))
        out.append(group)
    return out


def _roundtrip(state: JobState) -> JobState:
    """What the next batch reads back: the state through its rows (bytes, JSON)."""
    fresh = JobState(state.job_id, state.version, state.placed, state.opened)
    for t in state.themes.values():
        row = copy.deepcopy(t.row())
        fresh.themes[t.id] = ThemeState(
            id=row["id"],
            job_id=row["job_id"],
            dimension=row["dimension"],
            key=row["key"],
            seq=row["seq"],
            opened_at=row["opened_at"],
            total=core.unpack_centroid(row["centroid"]),
            size=row["size"],
            name=row["name"],
            description=row["description"],
            aspects=row["sample"]["aspects"],
            quotes=row["sample"]["quotes"],
        )
    fresh.merged = dict(state.merged)
    return fresh


def _run(stream: list[list[Insight]], cuts: Sequence[int], params: ClusterParams) -> Any:
    """Place `stream` in batches cut at `cuts`, reading the state back between batches."""
    state = JobState("j")
    assigned: dict[str, str] = {}
    bounds = [0, *cuts, len(stream)]
    for a, b in itertools.pairwise(bounds):
        out = place_job(state, records(*stream[a:b]), {}, params)
        core.assemble_job(out)
        core.settle(state)
        for rec in out.records:
            assigned.update((i.id, tid) for i, tid, _ in rec)
        state = _roundtrip(state)
    return state, assigned


def test_membership_does_not_depend_on_how_the_stream_is_cut_into_batches() -> None:
    # strict assignment opens many themes; consolidation then merges them
    params = ClusterParams(
        assign_threshold=0.97, merge_threshold=0.93, consolidate_every=10, min_size=2
    )
    stream = _stream(60)
    one, assigned_one = _run(stream, [], params)
    many, assigned_many = _run(stream, [1, 7, 8, 23, 40, 41, 59], params)
    assert assigned_one == assigned_many
    assert {i: one.resolve(t) for i, t in assigned_one.items()} == {
        i: many.resolve(t) for i, t in assigned_many.items()
    }
    assert one.merged == many.merged and one.merged  # consolidation ran, identically
    assert {t.id: (t.size, list(t.total)) for t in one.themes.values()} == {
        t.id: (t.size, list(t.total)) for t in many.themes.values()
    }
    assert (one.placed, one.opened) == (many.placed, many.opened) == (120, one.opened)


def test_a_replayed_record_keeps_its_themes_and_changes_no_state() -> None:
    params = ClusterParams(consolidate_every=10)
    stream = _stream(30)
    state, assigned = _run(stream, [10, 20], params)
    before = (state.placed, state.opened, {t.id: list(t.total) for t in state.themes.values()})
    replay = place_job(state, records(*stream[5:15]), assigned, params)
    assert not replay.changed and not replay.naming
    assert [tid for rec in replay.records for _, tid, _ in rec] == [
        assigned[i.id] for rec in stream[5:15] for i in rec
    ]
    rows = core.assemble_job(replay)
    assert not rows.member_rows and not rows.theme_rows and not rows.job_rows
    after = (state.placed, state.opened, {t.id: list(t.total) for t in state.themes.values()})
    assert after == before


def test_consolidation_merges_near_duplicates_and_resolves_chains() -> None:
    state = JobState("j")
    dim = "Sound quality"

    def theme(tid: str, seq: int, size: int, unit: array[float]) -> ThemeState:
        t = ThemeState(tid, "j", dim, "k", seq, 0, array("d", [x * size for x in unit]), size)
        state.themes[tid] = t
        return t

    s = vec(ins("x", "sound", "Great sound."))
    theme("a", 0, 5, s)
    theme("b", 1, 9, s)  # the same direction: merges, the bigger one survives
    theme("c", 2, 4, vec(ins("y", "battery", "Great battery.", "Sound quality")))
    state.merged["old"] = core.MergeRecord("old", "a", 3, 0.99)  # "old" was merged into a
    state.placed = 100
    out = core.JobOutcome(state)
    core.consolidate(state, ClusterParams(), out)
    assert set(state.themes) == {"b", "c"}
    assert state.resolve("a") == state.resolve("old") == "b"
    assert state.themes["b"].size == 14
    assert {m.theme_id for m in out.merges} == {"a", "old"}
    assert [[c.theme_id for c in r.clusters] for r in out.naming] == [["b"]]
    assert out.naming[0].renaming


def test_the_job_theme_count_is_capped() -> None:
    params = ClusterParams(max_themes=3, consolidate_every=20, assign_threshold=0.999)
    state, _ = _run(_stream(40), [], params)
    assert len(state.themes) <= 3 + 20  # at most one interval of new themes past the cap
    dims = {t.dimension for t in state.themes.values()}
    assert dims == {"Sound quality", "Battery life", "Price and value", "other"}


def test_small_old_themes_are_absorbed_by_their_nearest() -> None:
    state = JobState("j")
    s = vec(ins("x", "sound", "Great sound."))
    big = ThemeState("big", "j", "Sound quality", "k", 0, 0, array("d", [x * 9 for x in s]), 9)
    near = vec(ins("y", "sound", "Great sound, great bass, great."))
    small = ThemeState("small", "j", "Sound quality", "k", 1, 0, array("d", near), 1)
    young = ThemeState("young", "j", "Sound quality", "k", 2, 95, array("d", near), 1)
    state.themes = {"big": big, "small": small, "young": young}
    state.placed = 100
    params = ClusterParams(merge_threshold=1.1, absorb_threshold=0.8, consolidate_every=100)
    core.consolidate(state, params, core.JobOutcome(state))
    assert state.resolve("small") == "big"  # absorbed (a tiny merge: no renaming)
    assert "young" in state.themes  # opened 5 insights ago: too young to judge


# -- names ------------------------------------------------------------------------------------


def _request(renaming: bool) -> NamingRequest:
    clusters = (
        NamingCluster("t-a", "Battery life", "battery", ("battery",), ("dies",), 3),
        NamingCluster("t-b", "Battery life", "charger", ("charger",), (), 1),
    )
    return NamingRequest("j", clusters, renaming)


def test_names_come_cleaned_from_the_answer_with_fallbacks_for_the_rest() -> None:
    names = names_from_answer(
        _request(False), [("t1", "  **Battery** drains http://x.y fast ", "Dies <b>fast</b>.")]
    )
    assert names["t-a"] == ("Battery drains fast", "Dies fast")
    assert names["t-b"][0] == "Charger"
    assert names_from_answer(_request(False), None)["t-a"][0] == "Battery"
    # a renaming the model could not do keeps the current name
    assert names_from_answer(_request(True), None) == {}


# -- the handler with fakes of its ports -------------------------------------------------------


class FakeStore:
    """The theme store port over in-memory tables, fed with what the runner would write."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self.loads = 0

    def write(self, result: Any) -> None:
        for spec, rows in result.upserts:
            table = self.tables.setdefault(spec.table.name, {})
            for row in rows:
                key = row[spec.key[0]]
                if spec.update == () and key in table:
                    continue
                table[key] = copy.deepcopy(row)

    async def snapshot(
        self, job_ids: Collection[str], insight_ids: Collection[str], cached: dict[str, int]
    ) -> Snapshot:
        jobs = self.tables.get("theme_jobs", {})
        snap = Snapshot(versions={j: jobs[j]["version"] for j in job_ids if j in jobs})
        for j in job_ids:
            if cached.get(j, -1) != snap.versions.get(j, 0):
                self.loads += 1
                snap.states[j] = self._load(j)
        members = self.tables.get("theme_members", {})
        snap.assigned = {i: members[i]["theme_id"] for i in insight_ids if i in members}
        return snap

    def _load(self, job: str) -> JobState:
        row = self.tables.get("theme_jobs", {}).get(job)
        state = JobState(job)
        if row:
            state.version, state.placed, state.opened = row["version"], row["placed"], row["opened"]
        merges = {
            k: core.MergeRecord(k, m["into_id"], m["at_insight"], m["similarity"])
            for k, m in self.tables.get("theme_merges", {}).items()
            if m["job_id"] == job
        }
        state.merged = merges
        for t in self.tables.get("themes", {}).values():
            if t["job_id"] == job and t["id"] not in merges:
                state.themes[t["id"]] = ThemeState(
                    id=t["id"],
                    job_id=job,
                    dimension=t["dimension"],
                    key=t["key"],
                    seq=t["seq"],
                    opened_at=t["opened_at"],
                    total=core.unpack_centroid(t["centroid"]),
                    size=t["size"],
                    name=t["name"],
                    description=t["description"],
                    aspects=list(t["sample"]["aspects"]),
                    quotes=list(t["sample"]["quotes"]),
                )
        return state

    async def jobs(self, job_ids: Collection[str]) -> dict[str, tuple[str, str]]:
        return {j: ("Buds", "en") for j in job_ids}


class FakeEmbedder:
    """The embedding port with the fake LLM's vectors; can refuse or fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.refuse: str | None = None
        self.down = False

    async def embed(
        self, texts: Sequence[str], *, job_id: str | None = None, cache: bool = True
    ) -> list[Any]:
        self.calls.append(list(texts))
        if self.down:
            raise LLMUnavailable("provider down", stage="embed")
        if self.refuse and any(self.refuse in t for t in texts):
            raise LLMRequestRejected("refused", stage="embed", status_code=400)
        return [array("f", embed_text(t)) for t in texts]


class FakeLLM:
    """Names themes "<aspect> (<dimension>)", or fails for clusters of one dimension."""

    def __init__(self, fail_dimension: str | None = None) -> None:
        self.fail_dimension = fail_dimension
        self.inputs: list[dict[str, Any]] = []

    async def complete(
        self,
        stage: str,
        prompt: PromptTemplate,
        input: dict[str, Any],
        output_model: type[T],
        *,
        job_id: str | None = None,
        cache: bool = True,
        validate: Callable[[T], None] | None = None,
    ) -> T:
        assert stage == "theme"
        self.inputs.append(input)
        if any(c["dimension"] == self.fail_dimension for c in input["clusters"]):
            raise LLMMalformedOutput("junk", stage=stage)
        themes = [
            {"key": c["key"], "name": f"{c['aspects'][0]} ({c['dimension']})", "description": "d"}
            for c in input["clusters"]
        ]
        out = output_model.model_validate({"themes": themes})
        if validate is not None:
            validate(out)
        return out


def incoming(event: InsightsExtracted, offset: int) -> Incoming:
    return Incoming(event, "voc.insights.extracted", 0, offset, event.to_bytes(), b"j")


def extracted(job: str, insights: list[Insight], reviews: list[str] | None = None) -> Any:
    ids = reviews if reviews is not None else list(dict.fromkeys(i.review_id for i in insights))
    return InsightsExtracted(job_id=job, review_ids=ids, insights=insights)


def tables(result: Any) -> dict[str, list[dict[str, Any]]]:
    return {spec.table.name: rows for spec, rows in result.upserts}


async def test_handler_places_names_and_writes_state_then_replays_for_free() -> None:
    store, llm, emb = FakeStore(), FakeLLM(fail_dimension="Comfort"), FakeEmbedder()
    handler = ThemeHandler(store, llm, emb, "voc.")
    e1 = extracted(
        "j",
        [
            ins("i1", "sound", "Great sound.", review="r1"),
            ins("i2", "strap", "Soft strap.", "Comfort", review="r2"),
        ],
    )
    e2 = extracted(
        "j",
        [
            ins("i3", "son", "Le son est génial.", review="r3"),
            ins("i4", "battery", "Great battery.", "Battery life", review="r3"),
        ],
    )
    result = await handler.handle([incoming(e1, 0), incoming(e2, 1)])
    store.write(result)
    t = tables(result)
    names = {r["id"]: r["name"] for r in t["themes"]}
    sound = new_theme_id("j", "Sound quality", "i1")
    battery = new_theme_id("j", "Battery life", "i4")
    # one naming call per record that opened themes; record 1's failed: fallback names
    assert names == {
        sound: "Sound",
        new_theme_id("j", "Comfort", "i2"): "Strap",
        battery: "battery (Battery life)",
    }
    assert len(llm.inputs) == 2
    assert [(r["insight_id"], r["theme_id"]) for r in t["theme_members"]][::2] == [
        ("i1", sound),
        ("i3", sound),
    ]
    assert t["theme_jobs"] == [{"job_id": "j", "version": 1, "placed": 4, "opened": 3}]
    assert {r["review_id"] for r in t["review_themed"]} == {"r1", "r2", "r3"}
    events = [ThemesExtracted.model_validate_json(e.value) for e in result.events]
    assert [[a.theme_id for a in e.assignments] for e in events][1] == [sound, battery]
    assert len(emb.calls) == 1 and len(emb.calls[0]) == 4  # one batched call

    # The same records again (a replay): no embedding, no naming, no state written.
    again = await handler.handle([incoming(e1, 0), incoming(e2, 1)])
    assert set(tables(again)) == {"review_themed"}
    assert len(emb.calls) == 1 and len(llm.inputs) == 2
    assert [ThemesExtracted.model_validate_json(e.value) for e in again.events] == events

    # Held state is used while Postgres has its version, reloaded when it does not.
    loads = store.loads
    e3 = extracted("j", [ins("i5", "sound", "Great sound again.", review="r4")])
    store.write(await handler.handle([incoming(e3, 2)]))
    assert store.loads == loads
    store.tables["theme_jobs"]["j"]["version"] += 1  # another replica wrote
    await handler.handle([incoming(extracted("j", [ins("i6", "son", "Bon son.")]), 3)])
    assert store.loads == loads + 1


async def test_a_batch_that_was_not_written_is_not_trusted_from_memory() -> None:
    store, emb = FakeStore(), FakeEmbedder()
    handler = ThemeHandler(store, FakeLLM(), emb, "voc.")
    e1 = extracted("j", [ins("i1", "sound", "Great sound.")])
    lost = await handler.handle([incoming(e1, 0)])  # computed, never written (crash)
    again = await handler.handle([incoming(e1, 0)])
    assert tables(again)["theme_jobs"] == tables(lost)["theme_jobs"]  # version 1 again
    assert tables(again)["theme_members"] == tables(lost)["theme_members"]


async def test_embedding_outages_retry_the_batch_and_refusals_dead_letter_the_record() -> None:
    store, emb = FakeStore(), FakeEmbedder()
    handler = ThemeHandler(store, FakeLLM(), emb, "voc.")
    handler.embed_backoff_s = (0.01, 0.02)
    emb.down = True
    waiting = asyncio.create_task(
        handler.handle([incoming(extracted("j", [ins("i1", "sound", "Good.")]), 0)])
    )
    while len(emb.calls) < 3:  # the batch waits, retried in place; nothing dead-lettered
        await asyncio.sleep(0.01)
    assert not waiting.done()
    emb.down = False
    first = await waiting
    assert not first.dead_letters and tables(first)["theme_members"]
    store.write(first)
    emb.refuse = "POISON"
    bad = extracted("j", [ins("i2", "sound", "POISON text")], ["r-bad"])
    good = extracted("j", [ins("i3", "sound", "Great sound.")])
    result = await handler.handle([incoming(bad, 1), incoming(good, 2)])
    assert [(d.error_type, d.review_ids) for d in result.dead_letters] == [
        ("LLMRequestRejected", ("r-bad",))
    ]
    assert [r["insight_id"] for r in tables(result)["theme_members"]] == ["i3"]
    assert len(result.events) == 1


async def test_handler_with_no_insights_still_marks_reviews_themed() -> None:
    handler = ThemeHandler(FakeStore(), FakeLLM(), FakeEmbedder(), "voc.")
    result = await handler.handle([incoming(extracted("j", [], ["r1", "r2"]), 0)])
    assert set(tables(result)) == {"review_themed"}
    assert len(result.events) == 1


async def test_handler_dead_letters_records_with_unstorable_ids() -> None:
    handler = ThemeHandler(FakeStore(), FakeLLM(), FakeEmbedder(), "voc.")
    bad = extracted("j", [], ["r" * 40])
    good = extracted("j", [ins("i1", "battery", "Fine battery.", "Battery life")])
    result = await handler.handle([incoming(bad, 0), incoming(good, 1)])
    assert [(d.error_type, d.job_id) for d in result.dead_letters] == [("PoisonRecord", "j")]
    assert "review_id must be 1-36 characters" in result.dead_letters[0].error
    assert result.reviews_out == 1 and len(result.events) == 1
