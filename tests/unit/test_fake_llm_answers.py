"""The fake LLM's answers are valid stage outputs, and its faults are what they claim."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from shared.prompts import PROMPTS
from shared.prompts.insight import InsightOutput, check_quotes
from shared.prompts.learn import LearnOutput
from shared.prompts.report import ReportOutput
from shared.prompts.theme import ThemeOutput, check_keys
from shared.prompts.translate import TranslateOutput, check_items
from voc.fake_llm.answers import (
    LEXICON,
    answer,
    answer_insight,
    answer_learn,
    answer_report,
    answer_theme,
    answer_translate,
    detect_language,
    drop_one_item,
    paraphrase_quotes,
    split_sentences,
)
from voc.fake_llm.config import FakeConfig, config_from_env
from voc.fake_llm.server import FakeLLMApp, TokenBucket

REVIEWS = [
    ("Battery died after two days. The price was great though!", 2, "en"),
    ("Der Akku hält nicht lange. Die Lieferung war schnell und die Verpackung gut.", 3, "de"),
    ("La batería dura poco... Pero el precio es bueno!  El envío llegó tarde.", 2, "es"),
    ("La livraison était rapide. Le son est excellent, mais la batterie est nulle.", 4, "fr"),
    ("バッテリーがすぐ切れる。配送は早い。デザインが好き！", 3, "ja"),
    ("电池续航太差了。价格便宜。客服态度很好。", 2, "zh"),
    ("Perfect fit, very comfortable!\nThe strap broke after a month though.", 4, "en"),
    ("ok", None, "en"),
    ("   ", 5, "en"),
    ("", None, "en"),
    ("Wi-Fi keeps dropping; customer service never answered my emails?!", 1, "en"),
]

DIMS = [{"name": d.name, "description": d.description} for d in LEXICON[:10]]


def random_text(rng: random.Random) -> str:
    words = [
        "battery",
        "Akku",
        "price",
        "precio",
        "quality",
        "delivery",
        "size",
        "support",
        "design",
        "box",
        "great",
        "bad",
        "not",
        "very",
        "the",
        "was",
        "電池",
        "价格",
        "和",
        "es",
        "ist",
        "!",
        "?",
        ".",
        "。",
        " ",
        "\n",
        "...",
        "-",
        "'",
    ]
    return "".join(rng.choice(words) + rng.choice([" ", "", ". ", "。"]) for _ in range(40))


def test_learn_answers_validate_with_5_to_15_dimensions() -> None:
    sample = [{"id": str(i), "text": t, "rating": r} for i, (t, r, _) in enumerate(REVIEWS)]
    out = LearnOutput.model_validate(
        answer_learn({"product": "Headphones", "target_language": "en", "sample": sample})
    )
    names = [d.name for d in out.dimensions]
    assert 5 <= len(names) <= 15
    assert "Battery life" in names and "Delivery and shipping" in names
    assert all(out.five_w.model_dump().values())
    # an empty sample still yields a usable frame
    empty = LearnOutput.model_validate(
        answer_learn({"product": "x", "target_language": "de", "sample": []})
    )
    assert len(empty.dimensions) == 5


def test_translate_answers_are_checkable_glosses_without_a_prefix() -> None:
    items: list[dict[str, Any]] = [
        {"id": f"i{i}", "text": t, "source_language": None} for i, (t, _, _) in enumerate(REVIEWS)
    ]
    items[0]["source_language"] = "en"
    out = TranslateOutput.model_validate(
        answer_translate({"target_language": "en", "items": items})
    )
    check_items([i["id"] for i in items])(out)
    for got, (text, _, lang) in zip(out.items, REVIEWS, strict=True):
        assert not got.translation.startswith("["), got.translation
        assert len(split_sentences(got.translation)) == len(split_sentences(text))
        if lang == "en":
            assert got.translation == text  # already in the target language
        if text.strip():
            assert got.source_language == lang, text
    glossed = {i.id: i.translation for i in out.items}
    assert glossed["i1"].startswith("The battery hält nicht lange.")
    assert glossed["i4"] == "battery がすぐ切れる. delivery は fast. design が好き!"
    again = answer_translate({"target_language": "en", "items": items})
    assert [i["translation"] for i in again["items"]] == list(glossed.values())


@pytest.mark.parametrize(("text", "rating", "lang"), REVIEWS)
def test_insight_quotes_are_exact_substrings(text: str, rating: int | None, lang: str) -> None:
    out = InsightOutput.model_validate(
        answer_insight(
            {"review_id": "r", "text": text, "rating": rating, "dimensions": DIMS, "five_w": {}}
        )
    )
    check_quotes(text)(out)
    if not text.strip():
        assert out.insights == []
    else:
        assert out.insights


def test_insight_quotes_are_substrings_for_arbitrary_text() -> None:
    rng = random.Random(7)
    for _ in range(300):
        text = random_text(rng)
        raw = answer_insight(
            {"review_id": "r", "text": text, "rating": rng.choice([None, 1, 5]), "dimensions": DIMS}
        )
        check_quotes(text)(InsightOutput.model_validate(raw))


def test_insight_content_is_plausible() -> None:
    text = "Battery died after two days. The price was great though! My son loves it."
    out = InsightOutput.model_validate(
        answer_insight({"review_id": "r", "text": text, "rating": 2, "dimensions": DIMS})
    )
    by_dim = {i.dimension: i for i in out.insights}
    assert by_dim["Battery life"].sentiment == "negative"
    assert by_dim["Battery life"].quote == "Battery died after two days."
    assert by_dim["Price and value"].sentiment == "positive"
    assert by_dim["Price and value"].score > 0
    # nothing matches a dimension -> one "other" insight on the first sentence
    other = answer_insight({"review_id": "r", "text": "Meh. Whatever.", "dimensions": DIMS})
    assert [(i["dimension"], i["quote"]) for i in other["insights"]] == [("other", "Meh.")]
    # a learned dimension the lexicon does not know matches its own words
    custom = answer_insight(
        {
            "review_id": "r",
            "text": "The hinge squeaks.",
            "dimensions": [{"name": "Hinge", "description": "hinge noise"}],
        }
    )
    assert custom["insights"][0]["dimension"] == "Hinge"


def test_sentences_keep_exact_spans() -> None:
    text = "  One.  Two!\nThree？ 四。 "
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["One.", "Two!", "Three？", "四。"]


def test_theme_answers_one_theme_per_cluster() -> None:
    inp = {
        "product": "p",
        "dimension": "Battery life",
        "clusters": [
            {
                "key": "c1",
                "aspects": ["battery drain", "battery drain", "charging"],
                "quotes": ["Battery died after two days."],
            },
            {"key": "c2", "aspects": [], "quotes": []},
        ],
    }
    out = ThemeOutput.model_validate(answer_theme(inp))
    check_keys(["c1", "c2"])(out)
    assert out.themes[0].name == "Battery drain - mentions"
    # keywords of the lexicon are named by their concept, in whatever language they came
    many = {"clusters": [{"key": "t1", "dimension": "Price and value", "aspects": ["価格"]}]}
    assert answer_theme(many)["themes"][0]["name"] == "Price - mentions"


@pytest.mark.parametrize(
    "aggregates",
    [
        {
            "total_reviews": 120,
            "sentiment_by_dimension": {"Battery": -0.5, "Price": 0.4, "Design": 0.1},
        },
        {
            "dimensions": [
                {"dimension": "Battery", "avg_score": -0.5},
                {"dimension": "Price", "avg_score": 0.4},
            ]
        },
        {
            "dimensions": [
                {"name": "Battery", "positive": 2, "negative": 10, "count": 12},
                {"name": "Price", "positive": 8, "negative": 1, "count": 9},
            ]
        },
    ],
)
def test_report_names_the_worst_dimension(aggregates: dict[str, Any]) -> None:
    out = ReportOutput.model_validate(answer_report({"product": "P", "aggregates": aggregates}))
    assert "Battery" in out.summary
    assert out.recommended_actions[0].priority == "high"
    assert "Battery" in out.recommended_actions[0].title


def test_report_without_dimension_data_is_still_valid() -> None:
    ReportOutput.model_validate(answer_report({"product": "P", "aggregates": {"x": [1]}}))


def test_every_stage_prompt_has_a_fake_answer() -> None:
    for stage, prompt in PROMPTS.items():
        assert "{schema}" not in prompt.system and '"properties"' in prompt.system
        assert prompt.output_model is not None
        assert stage in ("learn", "translate", "insight", "theme", "report")
    assert answer("theme", {"clusters": []}) == {"themes": []}


def test_fault_variants_fail_the_stage_checks() -> None:
    items = [{"id": str(i), "text": "Guten Tag"} for i in range(5)]
    dropped = TranslateOutput.model_validate(
        drop_one_item(answer_translate({"target_language": "en", "items": items}), seed=3)
    )
    with pytest.raises(ValueError):
        check_items([i["id"] for i in items])(dropped)
    text = "Battery died after two days."
    bad = InsightOutput.model_validate(
        paraphrase_quotes(
            answer_insight({"review_id": "r", "text": text, "dimensions": DIMS}), text
        )
    )
    with pytest.raises(ValueError):
        check_quotes(text)(bad)


def test_language_detection() -> None:
    assert detect_language("C'est très bien mais cher") == "fr"
    assert detect_language("Das ist nicht gut") == "de"
    assert detect_language("バッテリー") == "ja"
    assert detect_language("电池") == "zh"
    assert detect_language("") == "en"


def test_config_from_env_and_patches() -> None:
    c = config_from_env(
        {
            "VOC_FAKE_LLM_ERROR_RATE": "0.2",
            "VOC_FAKE_LLM_LATENCY_MS": "10-20",
            "VOC_FAKE_LLM_URL": "ignored",
        }
    )
    assert (c.error_rate, c.latency_min_ms, c.latency_max_ms) == (0.2, 10, 20)
    c2 = c.updated({"latency_ms": "5", "fault_match": "FAULT"})
    assert (c2.latency_min_ms, c2.latency_max_ms, c2.fault_match) == (5, 5, "FAULT")
    with pytest.raises(ValueError):
        c.updated({"error_rate": 2})
    with pytest.raises(ValueError):
        c.updated({"no_such_field": 1})
    assert FakeConfig(rate_limit_rps=200).burst == 20


def test_token_bucket_refuses_beyond_the_burst() -> None:
    b = TokenBucket(rate=10, burst=2)
    assert b.take()[0] and b.take()[0]
    allowed, _, wait = b.take()
    assert not allowed and 0 < wait <= 0.1


async def _post(app: FakeLLMApp, stage: str, inp: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        return await c.post(
            "/v1/chat/completions",
            headers={"X-Voc-Stage": stage},
            json={
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": json.dumps(inp)},
                ],
            },
        )


async def test_app_answers_counts_and_injects_faults_by_marker() -> None:
    app = FakeLLMApp(FakeConfig(malformed_rate=1.0, fault_match="FAULT", rate_limit_rps=1000))
    ok = await _post(
        app, "insight", {"review_id": "r", "text": "Battery died.", "dimensions": DIMS}
    )
    assert ok.status_code == 200
    body = ok.json()
    InsightOutput.model_validate_json(body["choices"][0]["message"]["content"])
    assert body["usage"]["total_tokens"] > 0
    assert ok.headers["x-ratelimit-remaining-requests"]
    bad = await _post(
        app, "insight", {"review_id": "r", "text": "FAULT battery.", "dimensions": DIMS}
    )
    content = bad.json()["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        InsightOutput.model_validate_json(content)
    stats = app.stats.snapshot()
    assert stats["requests"] == 2 and stats["faults"]["malformed"] == 1
    assert stats["by_stage"]["insight"]["requests"] == 2


async def test_app_rate_limit_answers_429_with_retry_after() -> None:
    app = FakeLLMApp(FakeConfig(rate_limit_rps=1, rate_limit_burst=1))
    inp = {"target_language": "en", "items": []}
    assert (await _post(app, "translate", inp)).status_code == 200
    r = await _post(app, "translate", inp)
    assert r.status_code == 429
    assert 0 < int(r.headers["retry-after-ms"]) <= 1000
    assert r.headers["retry-after"] == "1"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert app.stats.snapshot()["rate_limited"] == 1
