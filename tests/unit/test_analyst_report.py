"""A report says who wrote it, and shows quotes in their language with the translation
beside them: `shared.analyst`, the report's quote rows and HTML, and the demo's last words."""

from __future__ import annotations

from typing import Any

from services.report.aggregates import build_points
from shared.analyst import FAKE_MODEL, describe_analyst
from shared.impact import ImpactIndex
from shared.llm.settings import LLMSettings, StageOverride
from shared.report_page import render_report_html
from voc.demo import analyst_lines


def settings(**kw: Any) -> LLMSettings:
    return LLMSettings(stages={}, **kw)


def test_the_fake_is_recognised_by_its_url_or_its_model() -> None:
    fake_url = {"VOC_FAKE_LLM_URL": "http://127.0.0.1:21080"}
    by_url = describe_analyst(
        settings(base_url="http://127.0.0.1:21080/v1", model="anything"), fake_url
    )
    assert by_url["fake"] is True and by_url["model"] == "anything"
    assert "VOC_LLM_BASE_URL" in by_url["real_model"] and "fake LLM" in by_url["note"]
    by_model = describe_analyst(settings(base_url="http://elsewhere/v1", model=FAKE_MODEL), {})
    assert by_model["fake"] is True


def test_a_real_provider_is_not_called_fake() -> None:
    real = describe_analyst(
        settings(base_url="https://api.openai.com/v1", model="gpt-4o-mini"),
        {"VOC_FAKE_LLM_URL": "http://127.0.0.1:21080"},
    )
    assert real == {"model": "gpt-4o-mini", "fake": False}


def test_the_insight_stages_own_model_decides() -> None:
    s = LLMSettings(
        model=FAKE_MODEL,
        stages={"insight": StageOverride(base_url="https://dashscope.example/v1", model="qwen")},
    )
    assert describe_analyst(s, {}) == {"model": "qwen", "fake": False}


def test_quote_rows_keep_the_translation_and_the_clients_id() -> None:
    rows = [
        {
            "theme_id": "t-sound",
            "name": "Sound drops out",
            "description": "",
            "dimension": "Sound quality",
            "aspect": "son",
            "sentiment": "negative",
            "n": 3,
            "mean": -0.6,
            "quotes": [
                {
                    "quote": "Le son saute.",
                    "quote_translation": "The sound skips.",
                    "review_id": "internal-1",
                    "external_review_id": "client-1",
                    "score": -0.6,
                }
            ],
        }
    ]
    whole = {"kind": "all", "key": "", "reviews": 3, "rated": 3, "rating_sum": 9.0}
    part = {"kind": "theme:negative", "key": "t-sound", "reviews": 3, "rated": 3}
    impact = ImpactIndex.of_rows(
        [
            {**whole, "scored": 3, "sentiment_sum": 0.0},
            {**part, "rating_sum": 9.0, "scored": 3, "sentiment_sum": -1.8},
        ]
    )
    (point,) = build_points(rows, "negative", impact, 3)
    (quote,) = point["quotes"]
    assert quote["quote"] == "Le son saute." and quote["quote_translation"] == "The sound skips."
    assert (quote["review_id"], quote["external_review_id"]) == ("internal-1", "client-1")


def report(analyst: dict[str, Any] | None) -> dict[str, Any]:
    quote = {"quote": "音がとぎれる。", "quote_translation": "<b>The sound</b> cuts out."}
    point = {"dimension": "Sound quality", "aspect": "sound", "mentions": 1, "mean_score": -0.5}
    doc: dict[str, Any] = {
        "product": "Earbuds",
        "status": "completed",
        "pain_points": [{**point, "quotes": [quote]}],
    }
    if analyst is not None:
        doc["analyst"] = analyst
    return doc


def test_html_shows_the_translation_beside_the_quote_escaped() -> None:
    page = render_report_html(report(None))
    assert "“音がとぎれる。”" in page
    assert '<span class="tr">&lt;b&gt;The sound&lt;/b&gt; cuts out.</span>' in page


def test_html_says_plainly_when_a_fake_llm_wrote_it() -> None:
    fake = describe_analyst(settings(model=FAKE_MODEL), {})
    page = render_report_html(report(fake))
    assert "Written by a fake LLM" in page and "VOC_LLM_BASE_URL" in page
    real = render_report_html(report({"model": "gpt-4o-mini", "fake": False}))
    assert "fake LLM" not in real and 'class="analyst"' not in real


def test_the_demo_ends_by_naming_the_fake_and_the_way_to_a_real_model() -> None:
    lines = "\n".join(analyst_lines(describe_analyst(settings(model=FAKE_MODEL), {})))
    assert "FAKE LLM" in lines and "VOC_LLM_BASE_URL=" in lines and "make down" in lines
    assert analyst_lines({"model": "gpt-4o-mini", "fake": False}) == [
        "voc: analysis written by gpt-4o-mini"
    ]
