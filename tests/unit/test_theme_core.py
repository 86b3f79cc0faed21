"""The theme core: aspect keys, clustering, naming groups, assignment; and the handler with
a fake LLM and store (no IO)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from services.theme.core import (
    CLUSTERS_PER_CALL,
    Cluster,
    ThemeName,
    aspect_key,
    assemble,
    fallback_name,
    names_from_answer,
    plan,
    singular,
    theme_id,
    theme_ids_of,
)
from services.theme.service import ThemeHandler
from shared.events import Insight, InsightsExtracted, ThemesExtracted
from shared.llm.errors import LLMMalformedOutput
from shared.llm.prompts import PromptTemplate
from shared.stage import Incoming

T = TypeVar("T", bound=BaseModel)


def ins(iid: str, aspect: str, dimension: str = "Battery", review: str = "r1") -> Insight:
    return Insight(
        id=iid,
        review_id=review,
        dimension=dimension,
        aspect=aspect,
        sentiment="negative",
        score=-0.5,
        quote=f"quote about {aspect}",
        quote_start=0,
        quote_end=10,
    )


def extracted(job: str, reviews: list[str], insights: list[Insight]) -> InsightsExtracted:
    return InsightsExtracted(job_id=job, review_ids=reviews, insights=insights)


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("battery life", "Battery-life"),
        ("battery life", "BATTERY_LIFE!"),
        ("battery life", "the battery's life"),
        ("battery life", "batteries life"),
        ("delivery box", "Delivery boxes"),
        ("watch strap", "watches straps"),
        ("glass", "glasses"),
        ("customer service", "  Customer   Service. "),
    ],
)
def test_spellings_of_one_aspect_share_a_key(a: str, b: str) -> None:
    assert aspect_key(a) == aspect_key(b)


def test_keys_keep_meaningful_words_and_order() -> None:
    assert aspect_key("Battery-Life!") == "battery life"
    assert aspect_key("not charging") == "not charging"
    assert aspect_key("sound quality") != aspect_key("quality of sound")
    assert aspect_key("status") == "status"
    assert aspect_key("Qualité du son") == "qualité du son"
    assert aspect_key("音质") == "音质"


def test_degenerate_aspects_still_get_a_key() -> None:
    assert aspect_key("overall") == "overall"
    assert aspect_key("!!!") == "general"
    assert aspect_key("") == "general"
    assert len(aspect_key("word " * 100)) <= 120


def test_singular_is_idempotent_on_common_words() -> None:
    for w in ["battery", "batteries", "cables", "boxes", "glass", "status", "shoes", "fit"]:
        assert singular(singular(w)) == singular(w)


def test_theme_ids_depend_on_job_dimension_and_key() -> None:
    base = theme_id("j", "Battery", "battery life")
    assert base == theme_id("j", "Battery", "battery life")
    assert base != theme_id("j2", "Battery", "battery life")
    assert base != theme_id("j", "Other", "battery life")
    assert base != theme_id("j", "Battery", "battery")


# -- clustering and planning -----------------------------------------------------------------


def test_plan_assigns_every_insight_and_groups_new_themes_per_record_and_dimension() -> None:
    e1 = extracted(
        "j",
        ["r1", "r2"],
        [
            ins("i1", "battery life"),
            ins("i2", "Battery-Life", review="r2"),
            ins("i3", "charging", review="r2"),
            ins("i4", "strap", "Comfort", review="r2"),
        ],
    )
    e2 = extracted(
        "j",
        ["r3", "r4"],
        [ins("i5", "battery life", review="r3"), ins("i6", "price", "Value", review="r3")],
    )
    existing = {theme_id("j", "Battery", "charging")}
    p = plan([e1, e2], existing)

    battery = theme_id("j", "Battery", "battery life")
    assert [[(i.id, t) for i, t in pairs] for pairs in p.assignments] == [
        [
            ("i1", battery),
            ("i2", battery),
            ("i3", theme_id("j", "Battery", "charging")),
            ("i4", theme_id("j", "Comfort", "strap")),
        ],
        [("i5", battery), ("i6", theme_id("j", "Value", "price"))],
    ]
    assert [(g.dimension, [c.key for c in g.clusters]) for g in p.groups] == [
        ("Battery", ["battery life"]),
        ("Comfort", ["strap"]),
        ("Value", ["price"]),
    ]
    # The sample comes only from the record that opened the theme.
    assert p.groups[0].clusters[0].aspects == ["battery life", "Battery-Life"]
    assert theme_ids_of([e1, e2]) == {
        battery,
        theme_id("j", "Battery", "charging"),
        theme_id("j", "Comfort", "strap"),
        theme_id("j", "Value", "price"),
    }


def test_naming_groups_do_not_depend_on_how_batches_are_cut() -> None:
    e1 = extracted("j", ["r1"], [ins("i1", "battery"), ins("i2", "screen", "Display")])
    e2 = extracted(
        "j", ["r2"], [ins("i3", "battery"), ins("i4", "charger"), ins("i5", "screen", "Display")]
    )
    whole = plan([e1, e2], set())
    first = plan([e1], set())
    second = plan([e2], {c.theme_id for c in first.new_clusters})

    def inputs(groups: Any) -> list[dict[str, Any]]:
        return [g.llm_input("P") for g in groups]

    assert inputs(whole.groups) == inputs(first.groups) + inputs(second.groups)


def test_jobs_never_share_themes() -> None:
    p = plan(
        [extracted("a", ["r1"], [ins("i1", "fit")]), extracted("b", ["r2"], [ins("i2", "fit")])],
        set(),
    )
    assert len(p.new_clusters) == 2
    assert {g.job_id for g in p.groups} == {"a", "b"}


def test_big_records_split_naming_into_bounded_calls() -> None:
    many = [ins(f"i{n}", f"aspect{n}") for n in range(CLUSTERS_PER_CALL + 3)]
    p = plan([extracted("j", ["r1"], many)], set())
    assert [len(g.clusters) for g in p.groups] == [CLUSTERS_PER_CALL, 3]


def test_cluster_samples_are_bounded_and_distinct() -> None:
    c = Cluster("t", "j", "D", "k")
    for n in range(10):
        c.add_sample(ins(f"i{n}", f"aspect {n % 7}"))
    c.add_sample(ins("x", "aspect 0"))
    assert len(c.aspects) == 5 and len(set(c.aspects)) == 5
    assert len(c.quotes) == 3


def test_llm_input_matches_the_prompt_contract() -> None:
    p = plan([extracted("j", ["r1"], [ins("i1", "battery")])], set())
    assert p.groups[0].llm_input("Buds") == {
        "product": "Buds",
        "dimension": "Battery",
        "clusters": [{"key": "battery", "aspects": ["battery"], "quotes": ["quote about battery"]}],
    }


# -- names -----------------------------------------------------------------------------------


def test_names_from_answer_fill_missing_with_fallbacks() -> None:
    p = plan([extracted("j", ["r1"], [ins("i1", "battery life"), ins("i2", "charger")])], set())
    g = p.groups[0]
    names = names_from_answer(g, [("battery life", "  Battery  drains fast ", "Dies.")])
    by_key = {c.key: names[c.theme_id] for c in g.clusters}
    assert by_key["battery life"] == ThemeName("Battery drains fast", "Dies.")
    assert by_key["charger"] == fallback_name(g.clusters[1])
    assert by_key["charger"].name == "Charger"
    assert names_from_answer(g, None)[g.clusters[0].theme_id].name == "Battery life"


# -- assembly --------------------------------------------------------------------------------


def test_assemble_rows_and_events_cover_every_review_including_ones_without_insights() -> None:
    e1 = extracted(
        "j", ["r1", "r2", "r3"], [ins("i1", "battery"), ins("i2", "battery", review="r2")]
    )
    e2 = extracted("j", ["r4"], [])
    p = plan([e1, e2], set())
    out = assemble([e1, e2], p, {})
    tid = theme_id("j", "Battery", "battery")
    assert out.theme_rows == [
        {
            "id": tid,
            "job_id": "j",
            "dimension": "Battery",
            "key": "battery",
            "name": "Battery",
            "description": "What customers say about battery (Battery).",
        }
    ]
    assert [(r["insight_id"], r["theme_id"], r["review_id"]) for r in out.member_rows] == [
        ("i1", tid, "r1"),
        ("i2", tid, "r2"),
    ]
    assert [r["review_id"] for r in out.themed_rows] == ["r1", "r2", "r3", "r4"]
    assert [e.review_ids for e in out.events] == [["r1", "r2", "r3"], ["r4"]]
    assert [len(e.assignments) for e in out.events] == [2, 0]


# -- the handler with fakes ------------------------------------------------------------------


class FakeStore:
    def __init__(self, existing: set[str] | None = None) -> None:
        self.known = set(existing or ())
        self.reads = 0

    async def existing(self, theme_ids: Collection[str]) -> set[str]:
        self.reads += 1
        return {t for t in theme_ids if t in self.known}

    async def products(self, job_ids: Collection[str]) -> dict[str, str]:
        return {j: "Buds" for j in job_ids}

    def remember(self, theme_ids: Collection[str]) -> None:
        self.known.update(theme_ids)


class FakeLLM:
    """Names themes "<Dimension>: <key>", or fails for one dimension."""

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
        if input["dimension"] == self.fail_dimension:
            raise LLMMalformedOutput("junk", stage=stage)
        out = output_model.model_validate(
            {
                "themes": [
                    {
                        "key": c["key"],
                        "name": f"{input['dimension']}: {c['key']}",
                        "description": "d",
                    }
                    for c in input["clusters"]
                ]
            }
        )
        if validate is not None:
            validate(out)
        return out


def incoming(event: InsightsExtracted, offset: int) -> Incoming:
    return Incoming(event, "voc.insights.extracted", 0, offset, event.to_bytes(), b"j")


async def test_handler_names_new_themes_once_and_falls_back_on_failure() -> None:
    store, llm = FakeStore(), FakeLLM(fail_dimension="Comfort")
    handler = ThemeHandler(store, llm, "voc.")
    e1 = extracted(
        "j", ["r1", "r2"], [ins("i1", "battery"), ins("i2", "strap", "Comfort", review="r2")]
    )
    e2 = extracted("j", ["r3"], [ins("i3", "Battery"), ins("i4", "case", review="r3")])
    result = await handler.handle([incoming(e1, 0), incoming(e2, 1)])
    tables = {spec.table.name: rows for spec, rows in result.upserts}
    names = {r["key"]: r["name"] for r in tables["themes"]}
    assert names == {"battery": "Battery: battery", "case": "Battery: case", "strap": "Strap"}
    assert len(llm.inputs) == 3  # (record 1, Battery), (record 1, Comfort), (record 2, Battery)
    assert len(tables["theme_members"]) == 4
    assert {r["review_id"] for r in tables["review_themed"]} == {"r1", "r2", "r3"}
    events = [ThemesExtracted.model_validate_json(e.value) for e in result.events]
    assert [e.review_ids for e in events] == [["r1", "r2"], ["r3"]]
    assert result.reviews_out == 3 and not result.dead_letters

    # The same themes again: no naming, no theme rows, members and reviews still written.
    again = await handler.handle(
        [incoming(extracted("j", ["r9"], [ins("i9", "batteries", review="r9")]), 2)]
    )
    tables = {spec.table.name: rows for spec, rows in again.upserts}
    assert "themes" not in tables and len(llm.inputs) == 3
    assert tables["theme_members"][0]["theme_id"] == theme_id("j", "Battery", "battery")


async def test_handler_with_no_insights_still_marks_reviews_themed() -> None:
    handler = ThemeHandler(FakeStore(), FakeLLM(), "voc.")
    result = await handler.handle([incoming(extracted("j", ["r1", "r2"], []), 0)])
    tables = {spec.table.name: rows for spec, rows in result.upserts}
    assert set(tables) == {"review_themed"}
    assert len(result.events) == 1


async def test_handler_dead_letters_records_with_unstorable_ids() -> None:
    handler = ThemeHandler(FakeStore(), FakeLLM(), "voc.")
    bad = extracted("j", ["r" * 40], [])
    good = extracted("j", ["r1"], [ins("i1", "battery")])
    result = await handler.handle([incoming(bad, 0), incoming(good, 1)])
    assert [(d.error_type, d.job_id, d.review_id) for d in result.dead_letters] == [
        ("PoisonRecord", "j", None)
    ]
    assert "review_id must be 1-36 characters" in result.dead_letters[0].error
    assert result.reviews_out == 1 and len(result.events) == 1
