"""The report page: self-contained, every section present, user text escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from services.report import core
from services.report.aggregates import RawAggregates, build_aggregates
from services.report.core import JobProgress
from shared.report_page import hbar_chart, impact_chart, rating_chart, render_report_html


def sample_report(quote: str = "dies after three hours") -> dict[str, Any]:
    """A small but complete report document, built the way the service builds it."""
    raw = RawAggregates(
        counts={
            "reviews": 12,
            "themed": 3,
            "insights": 4,
            "themes": 2,
            "average_rating": 3.0,
            "translated": 3,
            "translated_by_llm": 1,
            "with_insights": 3,
        },
        model={
            "dimensions": [
                {"name": "battery", "description": "charge"},
                {"name": "fit", "description": "comfort"},
            ],
            "five_w": {"who": ["commuters"], "why": ["focus"]},
        },
        sentiment=[
            {"dimension": "battery", "sentiment": "negative", "n": 2, "mean": -0.7},
            {"dimension": "fit", "sentiment": "positive", "n": 2, "mean": 0.8},
        ],
        themes=[
            {
                "id": "t1",
                "name": "Short battery",
                "description": "drains",
                "dimension": "battery",
                "sentiment": "negative",
                "n": 2,
                "mean": -0.7,
            },
            {
                "id": "t2",
                "name": "Comfortable",
                "description": "light",
                "dimension": "fit",
                "sentiment": "positive",
                "n": 2,
                "mean": 0.8,
            },
        ],
        theme_halves=[{"theme_id": "t1", "half": 2, "n": 2}, {"theme_id": "t2", "half": 1, "n": 2}],
        points=[
            {
                "theme_id": "t1",
                "name": "Short battery",
                "description": "drains",
                "dimension": "battery",
                "aspect": "battery life",
                "sentiment": "negative",
                "n": 4,
                "mean": -0.7,
                "quotes": [
                    {
                        "quote": quote,
                        "review_id": "r1",
                        "external_review_id": "shop-17",
                        "score": -0.7,
                    }
                ],
            },
            {
                "theme_id": "t2",
                "name": "Comfortable",
                "description": "light",
                "dimension": "fit",
                "aspect": "comfort",
                "sentiment": "positive",
                "n": 4,
                "mean": 0.8,
                "quotes": [
                    {
                        "quote": "léger comme l'air",
                        "quote_translation": "light as air",
                        "review_id": "r2",
                        "score": 0.8,
                    }
                ],
            },
        ],
        impact=[
            {
                "kind": "all",
                "key": "",
                "reviews": 12,
                "rated": 12,
                "rating_sum": 42.0,
                "scored": 12,
                "sentiment_sum": 1.2,
            },
            {
                "kind": "theme:negative",
                "key": "t1",
                "reviews": 4,
                "rated": 4,
                "rating_sum": 6.0,
                "scored": 4,
                "sentiment_sum": -2.8,
            },
            {
                "kind": "theme:positive",
                "key": "t2",
                "reviews": 4,
                "rated": 4,
                "rating_sum": 20.0,
                "scored": 4,
                "sentiment_sum": 3.2,
            },
            {
                "kind": "theme",
                "key": "t1",
                "reviews": 4,
                "rated": 4,
                "rating_sum": 6.0,
                "scored": 4,
                "sentiment_sum": -2.8,
            },
        ],
        five_w_tags=[{"w": "who", "value": "runners", "n": 2}],
        ratings=[
            {"rating": 1, "reviews": 1, "mean": -0.7, "insights": 2},
            {"rating": 5, "reviews": 2, "mean": 0.8, "insights": 2},
        ],
        languages=[
            {"language": "en", "reviews": 2, "translated": 0, "mean": 0.1},
            {"language": "de", "reviews": 1, "translated": 1, "mean": -0.7},
        ],
    )
    p = JobProgress("job-1", "t", "Aurora <Buds>", "en", None, "sealed", True, 3, 0, 3, 3, 3, 0)
    aggregates = build_aggregates(raw, {"submitted": 3})
    summary = core.Summary(
        summary="Battery is the main complaint.",
        actions=[
            {
                "title": "Fix battery",
                "detail": "Improve it.",
                "priority": "high",
                "evidence": "2 mentions",
            }
        ],
        source="llm",
    )
    return core.assemble_report(p, "completed", aggregates, summary)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_page_has_every_section_and_charts() -> None:
    page = render_report_html(sample_report())
    assert page.startswith("<!doctype html>")
    for heading in (
        "Summary",
        "Recommended actions",
        "Impact",
        "Sentiment by dimension",
        "Top themes",
        "Pain points",
        "Delights",
        "Who, what, when, where, why",
        "Rating vs sentiment",
        "Languages",
    ):
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count("<svg") == 5  # impact, dimensions, themes, ratings, languages
    assert "dies after three hours" in page and "light as air" in page
    assert "léger comme l&#x27;air" in page  # the customer's words, the translation beside
    assert "shop-17" in page  # the client's review id beside its quote
    assert "Battery is the main complaint." in page
    assert "Fix: Short battery" in page  # the impact-ranked priority
    assert "Fix battery" in page  # the model's suggestion, listed after
    assert "Impact on the average rating" in page
    assert "<h2>Themes by dimension</h2>" in page
    assert "commuters" in page and "runners (2)" in page


def test_page_is_self_contained() -> None:
    page = render_report_html(sample_report())
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "link" not in parser.tags
    assert "img" not in parser.tags
    urls = [v for k, v in parser.attrs if k in ("src", "href") and v]
    assert urls == []
    # The only URL is the SVG namespace, never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_user_text_is_escaped() -> None:
    page = render_report_html(sample_report(quote='<script>alert("x")</script>'))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Aurora &lt;Buds&gt;" in page


def test_preliminary_badge_and_empty_sections() -> None:
    doc = sample_report()
    doc.update(status="report_ready", top_themes=[], pain_points=[], languages=[])
    page = render_report_html(doc)
    assert "preliminary" in page
    assert "None found." in page
    assert render_report_html({})  # even an empty document renders


def test_partial_reports_carry_their_notice() -> None:
    doc = sample_report()
    doc.update(partial=True, notice="Job stalled: 3 reviews still missing.")
    assert '<p class="notice">Job stalled: 3 reviews still missing.</p>' in render_report_html(doc)
    assert 'class="notice"' not in render_report_html(sample_report())


def test_impact_chart_puts_pain_left_and_delight_right() -> None:
    points = [
        {"name": "pain", "reviews": 9, "impact": {"rating": -0.5}},
        {"name": "joy", "reviews": 4, "impact": {"rating": 0.25}},
        {"name": "unmeasured", "reviews": 1, "impact": {"rating": None, "sentiment": None}},
    ]
    svg = impact_chart(points, "rating")
    rects = re.findall(r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    (x_pain, w_pain), (x_joy, w_joy) = [(float(x), float(w)) for x, w in rects]
    assert x_pain + w_pain == x_joy  # both start at the zero line, on either side
    assert w_pain == 2 * w_joy
    assert "unmeasured" not in svg and "n=9" in svg
    assert "Not enough reviews" in impact_chart([], "rating")


def test_charts_scale_bars_to_the_largest_value() -> None:
    svg = hbar_chart([("a", 10, "10", "#000"), ("b", 5, "5", "#000")], "t")
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="([\d.]+)"', svg)]
    assert widths[0] == 2 * widths[1]
    assert "No ratings." in rating_chart([])
