"""Report aggregates and the report core: shaping of SQL rows, decisions, summaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from services.report import core
from services.report.aggregates import (
    RawAggregates,
    build_aggregates,
    build_five_w,
    build_languages,
    build_overview,
    build_points,
    build_rating_vs_sentiment,
    build_sentiment_by_dimension,
    build_theme_hierarchy,
    build_top_themes,
    theme_trend,
)
from services.report.core import JobProgress
from shared.impact import ImpactIndex, impact_delta


def _progress(**kw: Any) -> JobProgress:
    base: dict[str, Any] = {
        "job_id": "j1",
        "tenant_id": "t1",
        "product": "Buds",
        "target_language": "en",
        "callback_url": None,
        "job_status": "sealed",
        "sealed": True,
        "submitted": 100,
        "rejected": 0,
        "ingest_rows": 100,
        "ingested": 100,
        "themed": 0,
        "dead_lettered": 0,
    }
    base.update(kw)
    return JobProgress(**base)


# -- decide -----------------------------------------------------------------------------------


READY = core.Decision("report_ready", "report_ready")
DONE = core.Decision("completed", "completed")


def test_nothing_before_seal_or_before_ingest_finished() -> None:
    assert core.decide(_progress(sealed=False, themed=100)) is None
    assert core.decide(_progress(ingest_rows=90, ingested=90, themed=90)) is None


def test_report_ready_at_ninety_percent_then_completed() -> None:
    assert core.decide(_progress(themed=89)) is None
    assert core.decide(_progress(themed=90)) == READY
    assert core.decide(_progress(themed=95, report_status="report_ready")) is None
    assert core.decide(_progress(themed=100, report_status="report_ready")) == DONE


def test_dead_lettered_reviews_count_as_done() -> None:
    p = _progress(themed=93, dead_lettered=7)
    assert p.done == 100
    assert core.decide(p) == DONE


def test_never_a_step_back_and_replays_do_nothing() -> None:
    done = _progress(themed=100, report_status="completed", report_done=100)
    assert core.decide(done) is None
    assert core.decide(_progress(themed=95, report_status="completed", report_done=100)) is None
    # A completed job whose dead letters are being redriven waits for them, never stalls.
    redriving = _progress(job_status="completed", themed=95, report_status="completed")
    assert core.decide(replace(redriving, idle_s=10_000.0), stall_timeout_s=900) is None


def test_a_stalled_job_is_stalled_not_completed() -> None:
    p = _progress(themed=50, idle_s=899.0)
    assert core.decide(p, stall_timeout_s=900) is None
    stalled = core.decide(replace(p, idle_s=900.0), stall_timeout_s=900)
    assert stalled is not None
    assert (stalled.status, stalled.report) == ("stalled", "partial")
    assert stalled.reason == (
        "no review finished for 900 s: 50 of 100 reviews are still in progress (in a stage "
        "or waiting in a retry tier); 50 analysed, 0 dead-lettered"
    )
    # Stalled already: nothing more until a review finishes.
    again = replace(p, idle_s=5000.0, job_status="stalled", report_status="partial", report_done=50)
    assert core.decide(again, stall_timeout_s=900) is None


def test_a_stall_keeps_an_existing_early_report_and_rebuilds_a_stale_partial_one() -> None:
    ready = _progress(themed=92, report_status="report_ready", report_done=92, idle_s=1000.0)
    assert core.decide(ready, stall_timeout_s=900) == core.Decision(
        "stalled", None, core.stall_reason(ready, 900)
    )
    stale = _progress(themed=60, report_status="partial", report_done=50, idle_s=1000.0)
    decided = core.decide(stale, stall_timeout_s=900)
    assert decided is not None and decided.report == "partial"


def test_a_stall_clears_when_reviews_finish_again() -> None:
    p = _progress(job_status="stalled", themed=60, report_status="partial", idle_s=2.0)
    assert core.decide(p, stall_timeout_s=900) == core.Decision("sealed")
    ready = replace(p, themed=95, report_status="report_ready")
    assert core.decide(ready, stall_timeout_s=900) == core.Decision("report_ready")
    # Finishing past the threshold out of a stall builds the early report on the way.
    assert core.decide(replace(p, themed=95), stall_timeout_s=900) == READY
    assert core.decide(replace(p, themed=100), stall_timeout_s=900) == DONE


def test_an_unfinished_ingest_stalls_with_its_own_reason() -> None:
    p = _progress(submitted=100, ingest_rows=80, ingested=80, themed=80, idle_s=1000.0)
    decided = core.decide(p, stall_timeout_s=900)
    assert decided is not None and decided.status == "stalled"
    assert decided.reason is not None and decided.reason.startswith(
        "ingest has seen 80 of 100 submitted rows"
    )


def test_transitions_allow_only_their_predecessors() -> None:
    p = _progress(themed=100, last_progress_at=datetime(2024, 1, 1, tzinfo=UTC))
    done = core.transition(p, DONE)
    assert done.allowed_from == {"sealed", "stalled", "report_ready", "completed", "replayed"}
    assert done.stalled_since is None and done.stall_reason is None
    stall = core.transition(p, core.Decision("stalled", None, "why"))
    assert stall.allowed_from == {"sealed", "report_ready"}
    assert (stall.stalled_since, stall.stall_reason) == (p.last_progress_at, "why")
    for status in core.STATUS_FROM.values():
        assert not status & {"cancelled", "failed", "reprocessing", "created", "receiving"}
    assert "completed" not in core.STATUS_FROM["report_ready"]


def test_empty_sealed_job_completes() -> None:
    p = _progress(submitted=0, ingest_rows=0, ingested=0)
    assert p.ratio == 1.0
    assert core.decide(p) == DONE


def test_inactive_jobs_are_left_alone() -> None:
    assert core.decide(_progress(job_status="cancelled", themed=100)) is None
    assert core.decide(_progress(job_status="cancelled", idle_s=10_000.0)) is None


# -- sections ---------------------------------------------------------------------------------


def test_overview_and_coverage() -> None:
    ov = build_overview(
        {"reviews": 10, "themed": 8, "insights": 20, "themes": 3, "average_rating": 3.456},
        [{"stage": "insight", "n": 2}],
        {"submitted": 12, "rejected": 1},
    )
    assert ov["coverage"] == 0.8
    assert ov["dead_lettered"] == 2
    assert ov["dead_lettered_by_stage"] == {"insight": 2}
    assert ov["average_rating"] == 3.46
    assert ov["submitted"] == 12


def test_sentiment_by_dimension_counts_means_and_empty_dimensions() -> None:
    rows = [
        {"dimension": "battery", "sentiment": "positive", "n": 3, "mean": 0.8},
        {"dimension": "battery", "sentiment": "negative", "n": 1, "mean": -0.6},
        {"dimension": "fit", "sentiment": "neutral", "n": 1, "mean": 0.0},
    ]
    dims = [{"name": "battery", "description": "charge"}, {"name": "price"}]
    out = build_sentiment_by_dimension(rows, dims)
    assert [d["dimension"] for d in out] == ["battery", "fit", "price"]
    battery = out[0]
    assert (battery["positive"], battery["negative"], battery["insights"]) == (3, 1, 4)
    assert battery["mean_score"] == round((3 * 0.8 - 0.6) / 4, 3)
    assert battery["net_sentiment"] == 0.5
    assert battery["description"] == "charge"
    assert out[2]["insights"] == 0 and out[2]["mean_score"] is None


def test_theme_trend_directions() -> None:
    assert theme_trend(10, 30, 100, 100)["direction"] == "rising"
    assert theme_trend(30, 10, 100, 100)["direction"] == "falling"
    assert theme_trend(10, 10, 100, 100)["direction"] == "stable"
    assert theme_trend(1, 2, 5, 5)["direction"] == "n/a"  # too few to tell
    t = theme_trend(10, 30, 100, 100)
    assert (t["earlier_share"], t["later_share"], t["delta"]) == (0.1, 0.3, 0.2)


def test_top_themes_size_share_mix_and_trend() -> None:
    rows = [
        {
            "id": "a",
            "name": "Dropouts",
            "description": "d",
            "dimension": "connectivity",
            "sentiment": "negative",
            "n": 6,
            "mean": -0.7,
        },
        {
            "id": "a",
            "name": "Dropouts",
            "description": "d",
            "dimension": "connectivity",
            "sentiment": "neutral",
            "n": 2,
            "mean": 0.0,
        },
        {
            "id": "b",
            "name": "Battery life",
            "description": "d",
            "dimension": "battery",
            "sentiment": "positive",
            "n": 2,
            "mean": 0.9,
        },
    ]
    halves = [
        {"theme_id": "a", "half": 1, "n": 2},
        {"theme_id": "a", "half": 2, "n": 6},
        {"theme_id": "b", "half": 1, "n": 2},
    ]
    out = build_top_themes(rows, halves)
    assert [t["id"] for t in out] == ["a", "b"]
    a = out[0]
    assert a["size"] == 8 and a["share"] == 0.8
    assert a["sentiment"] == {"positive": 0, "negative": 6, "neutral": 2}
    assert a["mean_score"] == round(-0.7 * 6 / 8, 3)
    assert a["trend"]["earlier_share"] == 0.5 and a["trend"]["later_share"] == 1.0
    assert out[1]["trend"]["later_share"] == 0.0
    assert len(build_top_themes(rows, halves, limit=1)) == 1


def _impact_rows(whole: tuple[int, int, float], **parts: tuple[int, int, float]) -> list[Any]:
    """`Q_IMPACT` rows: (reviews, rated, rating sum) for the job and per kind/key part
    (keyword `neg_a` = kind "theme:negative", key "a"; sentiment sums mirror ratings)."""
    kinds = {"neg": "theme:negative", "pos": "theme:positive", "theme": "theme", "dim": "dimension"}
    rows = [
        {
            "kind": "all",
            "key": "",
            "reviews": whole[0],
            "rated": whole[1],
            "rating_sum": whole[2],
            "scored": whole[0],
            "sentiment_sum": whole[2] - 3 * whole[1],
        }
    ]
    for name, (n, rated, total) in parts.items():
        kind, key = name.split("_", 1)
        rows.append(
            {
                "kind": kinds[kind],
                "key": key,
                "reviews": n,
                "rated": rated,
                "rating_sum": total,
                "scored": n,
                "sentiment_sum": total - 3 * rated,
            }
        )
    return rows


def test_impact_is_the_mean_minus_the_mean_without() -> None:
    assert impact_delta(40.0, 10, 4.0, 2) == 4.0 - 36.0 / 8  # two 2-star reviews of ten
    assert impact_delta(40.0, 10, 0.0, 0) is None  # nothing carries it
    assert impact_delta(40.0, 10, 40.0, 10) is None  # everything does: no "without"
    index = ImpactIndex.of_rows(_impact_rows((100, 100, 400.0), neg_a=(20, 20, 40.0)))
    effect = index.of("theme:negative", "a")
    assert effect["rating"] == round(4.0 - 360 / 80, 4) == -0.5
    assert (effect["reviews"], effect["rated_reviews"]) == (20, 20)
    assert (effect["rating_with"], effect["rating_without"]) == (2.0, 4.5)
    assert index.basis == "rating"
    unrated = ImpactIndex.of_rows(_impact_rows((100, 3, 12.0), neg_a=(20, 0, 0.0)))
    assert unrated.basis == "sentiment" and unrated.of("theme:negative", "a")["rating"] is None


def _point(tid: str, name: str, sentiment: str, n: int, dim: str = "battery") -> dict[str, Any]:
    q = [
        {"quote": "dies fast", "review_id": "r1", "external_review_id": "c-1", "score": -0.9},
        {"quote": "Dies fast", "review_id": "r2", "external_review_id": None, "score": -0.8},
        {"quote": "three hours", "review_id": "r3", "external_review_id": "c-3", "score": -0.7},
    ]
    return {
        "theme_id": tid,
        "name": name,
        "description": "",
        "dimension": dim,
        "aspect": name.lower(),
        "sentiment": sentiment,
        "n": n,
        "mean": -0.8 if sentiment == "negative" else 0.8,
        "quotes": q,
    }


def test_points_rank_by_impact_with_a_minimum_support() -> None:
    # 300 reviews averaging 4 stars. "Performance" is harsh but rare (2 reviews); sound
    # complaints are milder but in 60 reviews: they cost the rating far more.
    rows = [
        _point("perf", "Performance", "negative", 2, "performance"),
        _point("sound", "Sound drops out", "negative", 70, "sound"),
        _point("case", "Case scratches", "negative", 9, "build"),
        _point("fit", "Comfortable fit", "positive", 40, "fit"),
    ]
    impact = ImpactIndex.of_rows(
        _impact_rows(
            (300, 300, 1200.0),
            neg_perf=(2, 2, 2.0),
            neg_sound=(60, 60, 180.0),
            neg_case=(8, 8, 16.0),
            pos_fit=(40, 40, 200.0),
        )
    )
    pains = build_points(rows, "negative", impact, 300)
    assert [p["theme_id"] for p in pains] == ["sound", "case"]  # perf: below support
    assert pains[0]["impact"]["rating"] < pains[1]["impact"]["rating"] < 0
    assert (pains[0]["reviews"], pains[0]["mentions"], pains[0]["share"]) == (60, 70, 0.2)
    assert [x["quote"] for x in pains[0]["quotes"]] == ["dies fast", "three hours"]
    assert [x["external_review_id"] for x in pains[0]["quotes"]] == ["c-1", "c-3"]
    delights = build_points(rows, "positive", impact, 300)
    assert [p["theme_id"] for p in delights] == ["fit"] and delights[0]["impact"]["rating"] > 0


def test_unrated_jobs_rank_by_sentiment_impact() -> None:
    rows = [_point("a", "A", "negative", 5), _point("b", "B", "negative", 5)]
    whole = {
        "kind": "all",
        "key": "",
        "reviews": 50,
        "rated": 0,
        "rating_sum": 0.0,
        "scored": 50,
        "sentiment_sum": 0.0,
    }
    a = {
        "kind": "theme:negative",
        "key": "a",
        "reviews": 5,
        "rated": 0,
        "rating_sum": 0.0,
        "scored": 5,
        "sentiment_sum": -1.0,
    }
    b = {**a, "key": "b", "sentiment_sum": -4.0}
    pains = build_points(rows, "negative", ImpactIndex.of_rows([whole, a, b]), 50)
    assert [p["theme_id"] for p in pains] == ["b", "a"]
    assert pains[0]["impact"]["rating"] is None and pains[0]["impact"]["sentiment"] < 0


def test_theme_hierarchy_nests_themes_under_their_dimension() -> None:
    dims = [
        {"dimension": "battery", "insights": 5, "share": 0.5},
        {"dimension": "fit", "insights": 0, "share": 0.0},
        {"dimension": "price", "insights": 5, "share": 0.5},
    ]
    themes = [
        {"id": "a", "name": "A", "dimension": "battery", "size": 3, "share": 0.3},
        {"id": "b", "name": "B", "dimension": "battery", "size": 2, "share": 0.2},
        {"id": "c", "name": "C", "dimension": "gone", "size": 1, "share": 0.1},
    ]
    out = build_theme_hierarchy(dims, themes)
    assert [(d["dimension"], [t["id"] for t in d["themes"]]) for d in out] == [
        ("battery", ["a", "b"]),
        ("price", []),
        ("gone", ["c"]),
    ]


def test_five_w_learned_and_observed() -> None:
    model = {"five_w": {"who": ["commuters"], "why": "focus"}}
    tags = [
        {"w": "who", "value": "runners", "n": 3},
        {"w": "who", "value": "commuters", "n": 1},
    ]
    out = build_five_w(model, tags)
    assert set(out) == {"who", "what", "when", "where", "why"}
    assert out["who"]["learned"] == ["commuters"]
    assert out["who"]["observed"][0] == {"value": "runners", "count": 3, "share": 0.75}
    assert out["why"]["learned"] == ["focus"]
    assert out["what"] == {"learned": [], "observed": []}


def test_rating_vs_sentiment_fills_every_star() -> None:
    out = build_rating_vs_sentiment(
        [
            {"rating": 5, "reviews": 4, "mean": 0.7, "insights": 6},
            {"rating": None, "reviews": 1, "mean": None, "insights": 0},
        ]
    )
    assert [r["rating"] for r in out] == [1, 2, 3, 4, 5, None]
    assert out[0] == {"rating": 1, "reviews": 0, "insights": 0, "mean_score": None}
    assert out[4]["mean_score"] == 0.7


def test_languages_shares_sorted() -> None:
    out = build_languages(
        [
            {"language": "de", "reviews": 1, "translated": 1, "mean": -0.2},
            {"language": "en", "reviews": 3, "translated": 0, "mean": 0.4},
        ]
    )
    assert [x["language"] for x in out] == ["en", "de"]
    assert out[0]["share"] == 0.75 and out[1]["translated"] == 1


# -- whole document ---------------------------------------------------------------------------


def _raw() -> RawAggregates:
    return RawAggregates(
        counts={
            "reviews": 4,
            "themed": 3,
            "insights": 5,
            "themes": 1,
            "average_rating": 3.0,
            "translated": 4,
            "translated_by_llm": 1,
            "with_insights": 3,
        },
        dead_by_stage=[{"stage": "insight", "n": 1}],
        model={"dimensions": [{"name": "battery", "description": "d"}], "five_w": {}},
        sentiment=[{"dimension": "battery", "sentiment": "negative", "n": 5, "mean": -0.5}],
        themes=[
            {
                "id": "a",
                "name": "Short battery",
                "description": "",
                "dimension": "battery",
                "sentiment": "negative",
                "n": 5,
                "mean": -0.5,
            }
        ],
        theme_halves=[{"theme_id": "a", "half": 1, "n": 2}, {"theme_id": "a", "half": 2, "n": 3}],
        points=[_point("a", "Short battery", "negative", 5)],
        impact=_impact_rows(
            (4, 4, 14.0), neg_a=(3, 3, 9.0), theme_a=(3, 3, 9.0), dim_battery=(3, 3, 9.0)
        ),
        ratings=[{"rating": 2, "reviews": 4, "mean": -0.5, "insights": 5}],
        languages=[{"language": "en", "reviews": 4, "translated": 1, "mean": -0.5}],
    )


def test_assembled_report_has_every_section_and_fallback_summary() -> None:
    p = _progress(submitted=4, ingest_rows=4, ingested=4, themed=3, dead_lettered=1)
    aggregates = build_aggregates(_raw(), {"submitted": 4, "rejected": 0})
    summary = core.fallback_summary("Buds", aggregates, "LLMMalformedOutput")
    doc = core.assemble_report(p, "completed", aggregates, summary)
    for key in (
        "overview",
        "coverage",
        "sentiment_by_dimension",
        "top_themes",
        "pain_points",
        "delights",
        "five_w",
        "rating_vs_sentiment",
        "languages",
        "summary",
        "recommended_actions",
        "notes",
    ):
        assert key in doc, key
    assert doc["final"] is True
    assert doc["coverage"]["ratio"] == 0.75
    assert doc["coverage"]["dead_lettered"] == 1
    assert "dead-lettered (insight: 1)" in doc["coverage"]["note"]
    assert doc["summary_source"] == "fallback"
    assert "LLMMalformedOutput" in doc["notes"][0]
    assert (
        "Short battery" in doc["summary"] and "lowers the mean review sentiment" in doc["summary"]
    )
    action = doc["recommended_actions"][0]
    assert action["priority"] == "high" and action["title"] == "Fix: Short battery"
    assert (action["evidence"], action["evidence_review_id"]) == ("dies fast", "c-1")
    assert action["theme_id"] == "a" and action["impact"]["rating"] == -1.5  # 3.5 - 5.0
    assert doc["suggested_actions"] == []
    assert doc["themes_by_dimension"][0]["themes"][0]["id"] == "a"
    assert doc["impact"]["basis"] == "sentiment"  # 4 rated reviews: too few for stars


def test_same_rows_same_report() -> None:
    p = _progress(submitted=4, ingest_rows=4, ingested=4, themed=4)
    a = build_aggregates(_raw(), {"submitted": 4})
    b = build_aggregates(_raw(), {"submitted": 4})
    s = core.fallback_summary("Buds", a, "x")
    assert core.assemble_report(p, "completed", a, s) == core.assemble_report(p, "completed", b, s)


def test_llm_input_is_compact_and_grounded() -> None:
    aggregates = build_aggregates(_raw(), {})
    doc = core.llm_input("Buds", aggregates)
    assert doc["product"] == "Buds"
    dims = doc["aggregates"]["sentiment_by_dimension"]
    assert dims == [{"name": "battery", "insights": 5, "positive": 0, "negative": 5, "score": -0.5}]
    pain = doc["aggregates"]["pain_points"][0]
    assert (pain["theme"], pain["quote"], pain["reviews"]) == ("Short battery", "dies fast", 3)


def test_rows_for_upsert() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    p = _progress(callback_url="https://hooks.example.com/x", themed=100)
    payload = core.callback_payload(p, "completed", 1.0, "https://api.example.com/")
    assert payload == {
        "event": "job.completed",
        "job_id": "j1",
        "status": "completed",
        "coverage": 1.0,
        "report_url": "https://api.example.com/v1/jobs/j1/report",
    }
    row = core.outbox_row(p, "completed", payload, now)
    assert row["id"] == "j1:completed" and row["attempts"] == 0 and row["delivered_at"] is None
    event = core.job_event_row(p, "completed", 1.0, now)
    assert event["id"] == "j1:completed" and event["job_id"] == "j1"
    assert orjson.loads(event["value"]) == {
        "v": 1,
        "job_id": "j1",
        "tenant_id": "t1",
        "status": "completed",
        "at": "2024-01-01T00:00:00+00:00",
        "coverage": 1.0,
    }


def test_both_lifecycle_steps_are_announced_once() -> None:
    assert core.announced_steps(_progress(themed=100), "completed") == [
        "report_ready",
        "completed",
    ]
    assert core.announced_steps(_progress(themed=90), "report_ready") == ["report_ready"]
    ready = _progress(themed=100, report_status="report_ready")
    assert core.announced_steps(ready, "completed") == ["completed"]
    partial = _progress(themed=100, report_status="partial")
    assert core.announced_steps(partial, "completed") == ["report_ready", "completed"]
    assert core.announced_steps(_progress(themed=10), "partial") == []
    rebuilt = _progress(themed=100, report_status="completed")
    assert core.announced_steps(rebuilt, "completed") == []


def test_reports_before_completion_say_they_are_partial() -> None:
    aggregates = build_aggregates(_raw(), {"submitted": 4, "rejected": 0})
    summary = core.fallback_summary("Buds", aggregates, "x")
    p = _progress(submitted=4, ingest_rows=4, ingested=4, themed=1)
    doc = core.assemble_report(p, "partial", aggregates, summary, stall="nothing moved")
    assert doc["partial"] is True and doc["final"] is False
    assert doc["notice"].startswith("Partial report: 1 of 4 reviews are finished (25%)")
    assert "The job stalled: nothing moved." in doc["notice"]
    ready = core.assemble_report(replace(p, themed=4), "report_ready", aggregates, summary)
    assert ready["partial"] is True and "still in progress" in ready["notice"]
    final = core.assemble_report(replace(p, themed=4), "completed", aggregates, summary)
    assert final["partial"] is False and final["notice"] is None


def test_redriven_reviews_that_now_have_themes_rebuild_the_final_report() -> None:
    # built at 95 themed + 5 dead-lettered; after a redrive all 100 are themed: same `done`
    p = _progress(
        themed=100, dead_lettered=0, report_status="completed", report_done=100, report_themed=95
    )
    assert core.decide(p) == DONE
    assert core.decide(replace(p, report_themed=100)) is None


def test_a_replayed_job_waits_while_reprocessing_then_rebuilds_once() -> None:
    p = _progress(themed=100, report_status="completed", report_done=100, report_themed=100)
    assert core.decide(replace(p, job_status="reprocessing")) is None
    assert core.decide(replace(p, job_status="replayed")) == DONE
    # A replay still going through is not stalled by the report stage: voc replay waits.
    assert core.decide(replace(p, job_status="replayed", themed=50, idle_s=10_000.0)) is None


def test_actions_follow_impact_and_skip_remarks_no_dimension_fits() -> None:
    def point(tid: str, dim: str, rating: float) -> dict[str, Any]:
        return {
            "theme_id": tid,
            "name": tid,
            "dimension": dim,
            "reviews": 9,
            "share": 0.1,
            "impact": {"rating": rating, "rating_with": 2.0, "rating_without": 4.0},
            "quotes": [{"quote": "q", "review_id": "r", "external_review_id": "c"}],
        }

    aggregates = {
        "impact": {"basis": "rating"},
        "pain_points": [
            point("vague", "other", -0.5),
            point("a", "x", -0.3),
            point("b", "y", -0.1),
        ],
        "delights": [point("c", "z", 0.2)],
    }
    actions = core.recommended_actions(aggregates)
    assert [(a["theme_id"], a["priority"]) for a in actions] == [
        ("a", "high"),
        ("b", "medium"),
        ("c", "low"),
    ]
    assert "lowers the average rating by 0.30 stars (2.0" in actions[0]["detail"]
    assert actions[0]["evidence_review_id"] == "c"
