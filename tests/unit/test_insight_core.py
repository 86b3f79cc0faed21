"""The insight core: quote location and offsets, dimension mapping, ids, result assembly;
and the handler with a fake LLM (no IO)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from services.insight.core import (
    MAX_QUOTE_TRANSLATION,
    JobModel,
    QuoteNotFound,
    ReviewOutcome,
    answer_validator,
    assemble,
    build_insights,
    insight_id,
    insight_row,
    llm_input,
    locate_quote,
    map_dimension,
)
from services.insight.service import InsightHandler
from shared.errors import Failure
from shared.events import InsightsExtracted, ReviewsTranslated, TranslatedReview
from shared.llm.errors import LLMMalformedOutput, LLMUnavailable
from shared.llm.prompts import PromptTemplate
from shared.prompts.insight import Insight as Draft
from shared.prompts.insight import InsightInput, InsightOutput
from shared.stage import Incoming

T = TypeVar("T", bound=BaseModel)
DIMS = ("Battery life", "Sound quality", "Comfort")


def review(text: str, rid: str = "r1", rating: int | None = 4) -> TranslatedReview:
    return TranslatedReview(
        id=rid, text=text, source_language="en", translated=False, rating=rating
    )


ORIGINAL = "Le son saute dans le train. La batterie tient deux jours."
TRANSLATION = "The sound skips on the train. The battery lasts two days."


def translated_review(rid: str = "r1", external_id: str | None = "client-42") -> TranslatedReview:
    """A French review translated into English, as the translate stage emits it."""
    return TranslatedReview(
        id=rid,
        text=TRANSLATION,
        source_language="fr",
        translated=True,
        rating=2,
        original_text=ORIGINAL,
        external_id=external_id,
    )


def draft(quote: str, dimension: str = "Battery life", **kw: Any) -> Draft:
    base: dict[str, Any] = {
        "dimension": dimension,
        "aspect": "battery drain",
        "sentiment": "negative",
        "score": -0.6,
        "quote": quote,
    }
    return Draft(**(base | kw))


# -- quotes --------------------------------------------------------------------------------


def test_exact_quote_gives_its_offsets() -> None:
    text = "Great sound. The battery dies after two hours."
    start, end = locate_quote(text, "The battery dies after two hours") or (0, 0)
    assert text[start:end] == "The battery dies after two hours"
    assert start == 13


def test_first_occurrence_wins() -> None:
    assert locate_quote("ok. ok. ok.", "ok.") == (0, 3)


def test_quote_with_collapsed_whitespace_maps_to_the_review_spelling() -> None:
    text = "The  battery\n dies fast."
    span = locate_quote(text, "The battery dies fast")
    assert span is not None
    assert text[span[0] : span[1]] == "The  battery\n dies fast"


def test_typographic_quote_marks_match_straight_ones_both_ways() -> None:
    text = "It's the \"best\" buy I've made."
    span = locate_quote(text, "It\u2019s the \u201cbest\u201d buy")
    assert span is not None and text[span[0] : span[1]] == 'It\'s the "best" buy'
    text2 = "Don\u2019t buy it."
    span2 = locate_quote(text2, "Don't buy it")
    assert span2 is not None and text2[span2[0] : span2[1]] == "Don\u2019t buy it"


def test_wrapping_quote_marks_are_not_part_of_the_quote() -> None:
    text = "Honestly the strap is too tight."
    span = locate_quote(text, '"the strap is too tight"')
    assert span is not None and text[span[0] : span[1]] == "the strap is too tight"


def test_decomposed_unicode_quote_matches_composed_review() -> None:
    text = "Très bon café."
    span = locate_quote(text, "Tre\u0300s bon")
    assert span is not None and text[span[0] : span[1]] == "Très bon"


def test_paraphrase_and_empty_quotes_are_not_found() -> None:
    text = "The battery dies after two hours."
    assert locate_quote(text, "battery dies after 2 hours") is None
    assert locate_quote(text, "the battery dies") is None  # case is not normalised
    assert locate_quote(text, "") is None
    assert locate_quote(text, ' " ') is None


def test_validator_rejects_an_answer_with_a_made_up_quote() -> None:
    check = answer_validator("Loud and clear. Fits well.")
    check(InsightOutput(insights=[draft("Fits well"), draft("Loud and clear.")]))
    with pytest.raises(QuoteNotFound):
        check(InsightOutput(insights=[draft("Fits well"), draft("Fits perfectly")]))
    assert issubclass(QuoteNotFound, ValueError)  # the LLM layer retries on ValueError


# -- dimensions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Battery life", "Battery life"),
        ("battery life", "Battery life"),
        ("BATTERY_LIFE", "Battery life"),
        ("battery-life", "Battery life"),
        ("  Comfort ", "Comfort"),
        ("comforts", "Comfort"),
        ("Sound qualities", "other"),
        ("Price", "other"),
        ("Other", "other"),
        ("", "other"),
    ],
)
def test_dimension_names_map_to_the_jobs_or_other(given: str, expected: str) -> None:
    assert map_dimension(given.strip(), DIMS) == expected


def test_job_model_from_row_skips_junk_and_duplicates() -> None:
    m = JobModel.from_row(
        [
            {"name": "Fit", "description": "how it fits", "keywords": ["size"]},
            {"name": ""},
            {"name": "Fit"},
            "Delivery",
            {"description": "no name"},
        ],
        {"who": ["runners", ""], "why": None},
    )
    assert m.names == ("Fit", "Delivery")
    assert m.five_w["who"] == ["runners"] and m.five_w["why"] == [] and m.five_w["when"] == []


def test_llm_input_matches_the_prompt_contract() -> None:
    m = JobModel.from_row([{"name": "Fit", "description": "d"}], {"who": ["runners"]})
    doc = llm_input(review("Fits.", rating=5), m, "en")
    assert doc == {
        "review_id": "r1",
        "text": "Fits.",
        "language": "en",
        "target_language": "en",
        "translation": None,
        "rating": 5,
        "dimensions": [{"name": "Fit", "description": "d"}],
        "five_w": {"who": ["runners"], "what": [], "when": [], "where": [], "why": []},
    }
    InsightInput.model_validate(doc)


def test_llm_input_of_a_translated_review_gives_the_original_and_the_translation() -> None:
    m = JobModel.from_row([{"name": "Sound quality"}], {})
    doc = llm_input(translated_review(), m, "en")
    assert doc["text"] == ORIGINAL and doc["language"] == "fr"
    assert doc["translation"] == TRANSLATION and doc["target_language"] == "en"
    InsightInput.model_validate(doc)


def test_an_event_from_before_original_text_still_quotes_its_text() -> None:
    old = TranslatedReview(id="r", text="Gut.", source_language="de", translated=True)
    assert old.original == "Gut."
    assert llm_input(old, JobModel.from_row([], {}))["text"] == "Gut."


# -- ids and building ------------------------------------------------------------------------


def test_insight_ids_are_deterministic_and_distinct() -> None:
    assert insight_id("r1", 0) == insight_id("r1", 0)
    assert len({insight_id("r1", 0), insight_id("r1", 1), insight_id("r2", 0)}) == 3


def test_build_insights_offsets_dimensions_ids_and_five_w() -> None:
    text = "Battery dies fast. But so  comfy!"
    answer = InsightOutput(
        insights=[
            draft("Battery dies fast.", "battery life", who=" commuters ", when=""),
            draft(
                "so comfy!", "COMFORT", aspect="  ear  comfort ", sentiment="positive", score=0.9
            ),
            draft("Battery dies fast", "Price", aspect="value"),
        ]
    )
    got = build_insights(review(text), answer, DIMS)
    assert [i.id for i in got] == [insight_id("r1", n) for n in range(3)]
    for ins in got:
        assert text[ins.quote_start : ins.quote_end] == ins.quote
    assert got[1].quote == "so  comfy!"  # the review's spelling, not the model's
    assert [i.dimension for i in got] == ["Battery life", "Comfort", "other"]
    assert got[1].aspect == "ear comfort"
    assert got[0].five_w == {
        "who": "commuters",
        "what": None,
        "when": None,
        "where": None,
        "why": None,
    }


def test_build_insights_drops_exact_repeats_and_renumbers() -> None:
    text = "Too loud. Too loud."
    answer = InsightOutput(
        insights=[
            draft("Too loud.", aspect="volume"),
            draft("Too loud.", aspect="Volume"),
            draft("Too loud.", aspect="volume", sentiment="neutral", score=0),
        ]
    )
    got = build_insights(review(text), answer, DIMS)
    assert [(i.id, i.sentiment) for i in got] == [
        (insight_id("r1", 0), "negative"),
        (insight_id("r1", 1), "neutral"),
    ]


def test_build_insights_refuses_an_unvalidated_bad_quote() -> None:
    with pytest.raises(QuoteNotFound):
        build_insights(review("Fine."), InsightOutput(insights=[draft("Bad.")]), DIMS)


# -- quotes in the original language, with their translation --------------------------------


def test_a_translated_reviews_quote_is_its_original_with_the_translation_beside_it() -> None:
    r = translated_review()
    answer = InsightOutput(
        insights=[
            draft(
                "Le son saute dans le train.",
                "Sound quality",
                aspect="sound",
                quote_translation="  The sound skips\n on the train. ",
            )
        ]
    )
    (ins,) = build_insights(r, answer, DIMS)
    assert ins.quote == "Le son saute dans le train."
    assert ORIGINAL[ins.quote_start : ins.quote_end] == ins.quote
    assert ins.quote_translation == "The sound skips on the train."
    assert ins.external_review_id == "client-42" and ins.review_id == "r1"
    row = insight_row("job", ins)
    assert row["quote_translation"] == "The sound skips on the train."
    assert row["external_review_id"] == "client-42"
    assert not ins.quote.startswith("[")


def test_a_quote_of_the_translation_is_rejected_so_the_model_is_asked_again() -> None:
    r = translated_review()
    check = answer_validator(r.original)
    with pytest.raises(QuoteNotFound):
        check(InsightOutput(insights=[draft("The sound skips on the train.")]))
    with pytest.raises(QuoteNotFound):
        build_insights(r, InsightOutput(insights=[draft("The sound skips on the train.")]), DIMS)


def test_quote_translation_is_dropped_for_a_review_in_the_target_language() -> None:
    answer = InsightOutput(insights=[draft("Fits well.", quote_translation="Fits well.")])
    (ins,) = build_insights(review("Fits well."), answer, DIMS)
    assert ins.quote_translation is None


def test_quote_translation_is_capped_and_never_stores_nul() -> None:
    r = translated_review()
    quote = "La batterie tient deux jours."
    runaway = "word\x00 " * 2000
    answer = InsightOutput(insights=[draft(quote, quote_translation=runaway)])
    (ins,) = build_insights(r, answer, DIMS)
    assert ins.quote_translation is not None and "\x00" not in ins.quote_translation
    assert len(ins.quote_translation) <= min(MAX_QUOTE_TRANSLATION, 4 * len(quote) + 200)
    assert ins.quote_translation.endswith("\u2026")
    blank = InsightOutput(insights=[draft(quote, quote_translation="   ")])
    assert build_insights(r, blank, DIMS)[0].quote_translation is None


def test_insights_carry_the_clients_review_id_or_none() -> None:
    answer = InsightOutput(insights=[draft("La batterie tient deux jours.")])
    (ins,) = build_insights(translated_review(external_id=None), answer, DIMS)
    assert ins.external_review_id is None
    assert insight_row("job", ins)["external_review_id"] is None


# -- assembly --------------------------------------------------------------------------------


def test_assemble_counts_every_done_review_and_sets_failed_apart() -> None:
    r1, r2, r3 = review("A.", "r1"), review("B.", "r2"), review("C.", "r3")
    ins = build_insights(r1, InsightOutput(insights=[draft("A.")]), DIMS)
    out = assemble(
        "job",
        [
            ReviewOutcome(r1, ins),
            ReviewOutcome(r2),
            ReviewOutcome(r3, failure=Failure("LLMMalformedOutput", "junk")),
        ],
    )
    assert [r["review_id"] for r in out.review_rows] == ["r1", "r2"]
    assert [r["n_insights"] for r in out.review_rows] == [1, 0]
    assert [r["id"] for r in out.insight_rows] == [ins[0].id]
    assert out.insight_rows[0]["job_id"] == "job"
    assert [o.review.id for o in out.failed] == ["r3"]
    assert out.event is not None
    assert out.event.review_ids == ["r1", "r2"] and list(out.event.insights) == list(ins)


def test_assemble_with_only_failures_emits_nothing() -> None:
    out = assemble("job", [ReviewOutcome(review("A."), failure=Failure("X", "y"))])
    assert out.event is None and not out.review_rows and len(out.failed) == 1


# -- the handler with fakes ------------------------------------------------------------------


class FakeModels:
    def __init__(self, models: dict[str, JobModel]) -> None:
        self.models = models

    async def get(self, job_ids: Collection[str]) -> dict[str, JobModel]:
        return {j: self.models[j] for j in job_ids if j in self.models}


class FakeLLM:
    """Answers per review text from a table; counts peak concurrency."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls = 0
        self.active = 0
        self.peak = 0

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
        assert stage == "insight" and job_id is not None
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.01)
            answer = self.answers.get(input["text"], {"insights": []})
            if isinstance(answer, BaseException):
                raise answer
            out = output_model.model_validate(answer)
            if validate is not None:
                try:
                    validate(out)
                except ValueError as exc:
                    raise LLMMalformedOutput("bad", stage=stage, reason=str(exc)) from exc
            return out
        finally:
            self.active -= 1


def incoming(event: ReviewsTranslated, offset: int = 0) -> Incoming:
    return Incoming(event, "voc.reviews.translated", 0, offset, event.to_bytes(), b"k")


def ans(*quotes: str) -> dict[str, Any]:
    return {"insights": [draft(q).model_dump() for q in quotes]}


async def test_handler_extracts_dead_letters_alone_and_bounds_concurrency() -> None:
    model = JobModel.from_row([{"name": "Battery life"}], {})
    texts = [f"Review {i}. Battery is fine." for i in range(20)]
    answers: dict[str, Any] = {t: ans("Battery is fine.") for t in texts}
    answers["Bad one."] = ans("not in the text")
    answers["Down."] = LLMUnavailable("provider down", stage="insight")
    llm = FakeLLM(answers)
    handler = InsightHandler(FakeModels({"j1": model}), llm, "voc.", concurrency=5)
    ev1 = ReviewsTranslated(
        job_id="j1",
        target_language="en",
        reviews=[review(t, f"r{i}") for i, t in enumerate(texts[:10])]
        + [review("Bad one.", "bad"), review("   ", "empty")],
    )
    ev2 = ReviewsTranslated(
        job_id="j1",
        target_language="en",
        reviews=[review(t, f"r{i + 10}") for i, t in enumerate(texts[10:])]
        + [review("Down.", "down")],
    )
    ev3 = ReviewsTranslated(job_id="nomodel", target_language="en", reviews=[review("x", "x")])
    result = await handler.handle([incoming(ev1, 0), incoming(ev2, 1), incoming(ev3, 2)])

    assert llm.peak <= 5
    assert llm.calls == 22  # the empty review and the model-less job make no call
    tables = {spec.table.name: rows for spec, rows in result.upserts}
    assert len(tables["insights"]) == 20
    assert {r["review_id"] for r in tables["review_insights"]} == {
        *(f"r{i}" for i in range(20)),
        "empty",
    }
    assert {d.review_id: d.error_type for d in result.dead_letters} == {
        "bad": "LLMMalformedOutput",
        "down": "LLMUnavailable",
        "x": "JobModelMissing",
    }
    redrive = ReviewsTranslated.model_validate_json(result.dead_letters[0].value)
    assert [r.id for r in redrive.reviews] == [result.dead_letters[0].review_id]
    events = [InsightsExtracted.model_validate_json(e.value) for e in result.events]
    assert [len(e.review_ids) for e in events] == [11, 10]
    assert all(e.key == b"j1" for e in result.events)
    assert result.reviews_out == 21


async def test_handler_reads_the_original_and_stores_translation_and_client_id() -> None:
    model = JobModel.from_row([{"name": "Sound quality"}], {})
    quote = "Le son saute dans le train."
    answer = {
        "insights": [
            draft(
                quote, "Sound quality", quote_translation="The sound skips on the train."
            ).model_dump()
        ]
    }
    llm = FakeLLM({ORIGINAL: answer})  # answers only when sent the original text
    handler = InsightHandler(FakeModels({"j": model}), llm, "voc.")
    ev = ReviewsTranslated(job_id="j", target_language="en", reviews=[translated_review()])
    result = await handler.handle([incoming(ev)])
    assert not result.dead_letters
    tables = {spec.table.name: rows for spec, rows in result.upserts}
    (row,) = tables["insights"]
    assert (row["quote"], row["quote_translation"], row["external_review_id"]) == (
        quote,
        "The sound skips on the train.",
        "client-42",
    )
    (event,) = [InsightsExtracted.model_validate_json(e.value) for e in result.events]
    assert event.insights[0].external_review_id == "client-42"
    assert event.insights[0].quote_translation == "The sound skips on the train."


async def test_handler_lets_infrastructure_errors_retry_the_batch() -> None:
    model = JobModel.from_row([{"name": "Battery life"}], {})
    llm = FakeLLM({"boom": OSError("redis gone")})
    handler = InsightHandler(FakeModels({"j": model}), llm, "voc.")
    ev = ReviewsTranslated(job_id="j", target_language="en", reviews=[review("boom")])
    with pytest.raises(OSError):
        await handler.handle([incoming(ev)])


async def test_handler_dead_letters_ids_that_do_not_fit_their_columns() -> None:
    model = JobModel.from_row([{"name": "Battery life"}], {})
    llm = FakeLLM({})
    handler = InsightHandler(FakeModels({"j": model}), llm, "voc.")
    ev = ReviewsTranslated(
        job_id="j", target_language="en", reviews=[review("Fine.", "x" * 37), review("Ok.", "ok")]
    )
    result = await handler.handle([incoming(ev)])
    assert llm.calls == 1
    assert [(d.error_type, d.review_id, d.job_id) for d in result.dead_letters] == [
        ("InvalidId", None, "j")
    ]
    tables = {spec.table.name: rows for spec, rows in result.upserts}
    assert [r["review_id"] for r in tables["review_insights"]] == ["ok"]


def test_whitespace_around_a_quote_is_trimmed() -> None:
    assert locate_quote("a b c", "  b ") == (2, 3)
