"""The client's own ids, impact-ranked priorities and CSV exports, through the API.

One job of the shipped sample (unique texts per run) with a few extra rows: two without
a `review_id`, one whose id contains a slash, and one whose text starts like a spreadsheet
formula. Then:

- `GET /v1/jobs/{id}/reviews/{review_id}` answers by the client's id (and by the internal
  id for rows uploaded without one) with translation, insights and themes; odd ids get a
  precise 422, unknown ones 404, another tenant's job 404;
- insights and report quotes carry the client's `review_id` next to the internal one;
- the report's pain points, delights and recommended actions are ranked by impact;
- `insights.csv` and `themes.csv` stream (chunked), hold every insight and theme, carry
  both review ids, and neutralise formula cells.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
import pytest
from e2e_kit import create_job, sample_rows, upload, wait_completed

from services.api.exports import PAGE_ROWS
from shared.prompts.insight import OTHER_DIMENSION

FORMULA = '=HYPERLINK("http://evil.example","click") the sound is great'


@pytest.fixture(scope="module")
def job(api: httpx.Client) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    rows: list[dict[str, Any]] = sample_rows(tag)
    rows += [
        {"text": f"The battery died after a week, so disappointing #{tag}", "rating": 1},
        {"text": f"Great sound and the battery lasts #{tag}", "rating": 5},
        {"review_id": f"shop/{tag}/1", "text": f"Bass is weak #{tag}", "rating": 2},
        {"review_id": f"formula-{tag}", "text": f"{FORMULA} #{tag}", "rating": 5},
    ]
    job_id = create_job(api)
    assert upload(api, job_id, rows)["accepted"] == len(rows)
    assert api.post(f"/v1/jobs/{job_id}/seal").status_code == 200
    status = wait_completed(api, job_id)
    return {"id": job_id, "rows": rows, "tag": tag, "status": status}


def all_insights(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/v1/jobs/{job_id}/insights", params=params).json()
        out.extend(page["data"])
        cursor = page["next"]
        if not cursor:
            return out


def test_a_review_by_the_clients_id_with_translation_insights_and_themes(
    api: httpx.Client, job: dict[str, Any]
) -> None:
    jid = job["id"]
    foreign = next(r for r in job["rows"] if r.get("language") not in (None, "en"))
    resp = api.get(f"/v1/jobs/{jid}/reviews/{foreign['review_id']}")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["review_id"] == foreign["review_id"] and doc["text"] == foreign["text"]
    assert doc["translation"]["translated"] is True
    assert doc["translation"]["target_language"] == "en"
    assert doc["analysed"] and doc["themed"] and doc["insights"]
    for ins in doc["insights"]:  # quoted from the original or from the translation
        texts = (doc["text"], doc["translation"]["text"])
        assert ins["quote"] in [t[ins["quote_start"] : ins["quote_end"]] for t in texts]
    assert {i["theme_id"] for i in doc["insights"]} == {t["id"] for t in doc["themes"]}
    assert all(t["name"] and t["dimension"] for t in doc["themes"])

    slash = api.get(f"/v1/jobs/{jid}/reviews/shop%2F{job['tag']}%2F1")
    assert slash.status_code == 200 and slash.json()["review_id"] == f"shop/{job['tag']}/1"

    # rows without a client id: reachable by the internal id the insights carry
    insights = all_insights(api, jid)
    anonymous = {i["review_id"] for i in insights if i["external_review_id"] is None}
    assert len(anonymous) == 2
    for internal in anonymous:
        one = api.get(f"/v1/jobs/{jid}/reviews/{internal}")
        assert one.status_code == 200 and one.json()["review_id"] is None


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("no-such-review", 404, None),
        ("%00", 422, "review_id"),
        ("x" * 201, 422, "review_id"),
        ("%20%20", 422, "review_id"),
    ],
)
def test_odd_review_ids_get_precise_answers(
    api: httpx.Client, job: dict[str, Any], path: str, status: int, field: str | None
) -> None:
    resp = api.get(f"/v1/jobs/{job['id']}/reviews/{path}")
    assert resp.status_code == status, resp.text
    if field:
        assert resp.json()["detail"][0]["loc"] == ["path", field]


def test_another_tenant_sees_nothing(stack: Any, job: dict[str, Any]) -> None:
    key = stack.create_api_key(f"other-{uuid.uuid4().hex[:8]}")
    with httpx.Client(
        base_url=stack["VOC_API_URL"], headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as other:
        first = job["rows"][0]["review_id"]
        for path in (f"reviews/{first}", "insights.csv", "themes.csv"):
            assert other.get(f"/v1/jobs/{job['id']}/{path}").status_code == 404, path


def test_insights_and_report_quotes_carry_the_clients_ids(
    api: httpx.Client, job: dict[str, Any]
) -> None:
    insights = all_insights(api, job["id"])
    uploaded = {r["review_id"] for r in job["rows"] if r.get("review_id")}
    assert {i["external_review_id"] for i in insights} - {None} == uploaded
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    for point in report["pain_points"] + report["delights"]:
        for q in point["quotes"]:
            assert q["external_review_id"] is None or q["external_review_id"] in uploaded


def test_priorities_are_ranked_by_impact(api: httpx.Client, job: dict[str, Any]) -> None:
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    basis = report["impact"]["basis"]
    assert basis == "rating"  # the sample is rated
    floor = report["impact"]["min_support"]
    pains = report["pain_points"]
    assert pains, "the sample has complaints"
    values = [p["impact"][basis] for p in pains if p["impact"][basis] is not None]
    assert values == sorted(values)  # most harmful first
    assert all(p["reviews"] >= floor for p in pains + report["delights"])
    delights = [d["impact"][basis] for d in report["delights"] if d["impact"][basis] is not None]
    assert delights == sorted(delights, reverse=True)
    fixes = [a for a in report["recommended_actions"] if a["title"].startswith("Fix:")]
    # remarks no dimension fits ("other") are listed but are nothing to act on
    actionable = [p for p in pains if p["dimension"] != OTHER_DIMENSION]
    assert [a["theme_id"] for a in fixes] == [p["theme_id"] for p in actionable[: len(fixes)]]
    assert fixes[0]["priority"] == "high" and fixes[0]["evidence"]
    # every dimension with insights lists its themes
    listed = {t["id"] for d in report["themes_by_dimension"] for t in d["themes"]}
    assert listed >= {t["id"] for t in report["top_themes"]}


def _csv(api: httpx.Client, url: str) -> tuple[httpx.Headers, list[dict[str, str]], int]:
    with api.stream("GET", url) as resp:
        assert resp.status_code == 200, resp.read()
        chunks = list(resp.iter_raw())
        headers = resp.headers
    body = b"".join(chunks).decode("utf-8")
    assert body.startswith("\ufeff")
    return headers, list(csv.DictReader(io.StringIO(body[1:]))), len(chunks)


def test_insights_csv_streams_every_insight_with_both_ids_and_safe_cells(
    api: httpx.Client, job: dict[str, Any]
) -> None:
    insights = {i["id"]: i for i in all_insights(api, job["id"])}
    headers, rows, _ = _csv(api, f"/v1/jobs/{job['id']}/insights.csv")
    assert headers["content-type"].startswith("text/csv")
    assert "content-length" not in headers  # streamed, not built whole
    assert "attachment" in headers["content-disposition"]
    assert len(rows) == len(insights) > PAGE_ROWS  # more than one page
    by_text = {r["text"]: r for r in job["rows"]}
    for row in rows:
        ins = insights[row["insight_id"]]
        assert row["internal_review_id"] == ins["review_id"]
        assert row["review_id"] == (ins["external_review_id"] or "")
        assert (row["theme_id"], row["dimension"], row["quote"]) == (
            ins["theme_id"],
            ins["dimension"],
            ins["quote"],
        )
        assert row["theme"] and int(row["quote_end"]) > int(row["quote_start"])
        if not row["original_text"].startswith("'"):
            a, b = int(row["quote_start"]), int(row["quote_end"])
            texts = (row["original_text"], row["translation"])
            assert row["quote"] in [t[a:b] for t in texts]
            assert row["original_text"] in by_text
    formula = [r for r in rows if r["review_id"] == f"formula-{job['tag']}"]
    assert formula and all(r["original_text"].startswith("'=HYPERLINK") for r in formula)
    assert not any(r[c].startswith("=") for r in rows for c in r)


def test_themes_csv_lists_every_theme_with_impact(api: httpx.Client, job: dict[str, Any]) -> None:
    themes = api.get(f"/v1/jobs/{job['id']}/themes", params={"limit": 200}).json()
    headers, rows, _ = _csv(api, f"/v1/jobs/{job['id']}/themes.csv")
    assert "content-length" not in headers
    assert {r["theme_id"] for r in rows} == {t["id"] for t in themes["data"]}
    assert sum(int(r["insights"]) for r in rows) == len(all_insights(api, job["id"]))
    assert any(r["rating_impact"] for r in rows)
    assert all(r["example_quote"] for r in rows if int(r["insights"]))
