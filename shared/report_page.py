"""The report as a self-contained HTML page: a pure function of the report JSON.

No external JS, CSS or fonts: charts are inline SVG bar charts drawn here, server-side.
The API serves this page at `/v1/jobs/{id}/report.html` and `voc demo` writes the same
page to disk, so it lives in `shared` (no service imports another). Every value from the
report is HTML-escaped (review quotes and model text are untrusted input).

The page leads with what to act on: the recommended actions (ranked by impact) and an
impact chart - how much each complaint and each kind of praise moves the average rating -
then the dimension -> theme hierarchy, pain points and delights with their quotes (and the
client's review ids), and the descriptive sections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

POS = "#2e9d5b"
NEU = "#a7adb5"
NEG = "#d64545"
BAR = "#3f6fd8"
LABEL_W = 190
CHART_W = 640
ROW_H = 26

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0; color: #1d2430; background: #f4f6f9; }
main { max-width: 980px; margin: 0 auto; padding: 24px 20px 60px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.sub { color: #5b6573; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-size: 13px;
  font-weight: 600; color: #fff; background: #5b6573; vertical-align: middle; }
.badge.completed { background: #2e9d5b; } .badge.report_ready { background: #d08a18; }
section { background: #fff; border-radius: 10px; padding: 18px 22px; margin: 18px 0;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); }
h2 { font-size: 19px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 14px 0 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
.card { background: #f4f6f9; border-radius: 8px; padding: 10px 12px; }
.card b { display: block; font-size: 22px; }
.card span { color: #5b6573; font-size: 13px; }
.note { color: #5b6573; font-size: 14px; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
@media (max-width: 760px) { .cols { grid-template-columns: 1fr; } }
.point { border-left: 4px solid #ccc; padding: 4px 0 4px 12px; margin: 10px 0; }
.point.neg { border-color: #d64545; } .point.pos { border-color: #2e9d5b; }
.point .meta { color: #5b6573; font-size: 13px; }
blockquote { margin: 4px 0; font-style: italic; color: #333; }
blockquote .tr { display: block; font-style: normal; color: #666; font-size: 13px; }
.analyst { background: #fff4d6; border: 1px solid #e0b94a; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e6e9ee;
  vertical-align: top; }
th { font-size: 13px; color: #5b6573; font-weight: 600; }
.prio { font-size: 12px; font-weight: 700; text-transform: uppercase; }
.prio.high { color: #d64545; } .prio.medium { color: #d08a18; } .prio.low { color: #2e9d5b; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2430; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.notice { background: #fff4d6; border-left: 4px solid #d08a18; padding: 10px 14px;
  border-radius: 6px; }
tr.dim td { background: #f4f6f9; } td.theme { padding-left: 22px; }
blockquote .tr { display: block; font-style: normal; color: #666; font-size: 13px; }
blockquote .rid { font-style: normal; color: #8a93a0; font-size: 12px; margin-left: 8px; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _trunc(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def score_colour(score: float | None) -> str:
    """Red for negative, grey near zero, green for positive mean sentiment."""
    if score is None or -0.15 < score < 0.15:
        return NEU
    return POS if score > 0 else NEG


def hbar_chart(rows: Sequence[tuple[str, float, str, str]], title: str) -> str:
    """A horizontal bar chart: rows of (label, value, value text, colour)."""
    if not rows:
        return '<p class="note">No data yet.</p>'
    top = max((v for _, v, _, _ in rows), default=0) or 1
    plot_w = CHART_W - LABEL_W - 70
    height = ROW_H * len(rows) + 8
    parts = [
        f'<svg role="img" aria-label="{_e(title)}" viewBox="0 0 {CHART_W} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
    ]
    for i, (label, value, text, colour) in enumerate(rows):
        y = 4 + i * ROW_H
        w = max(1.0, plot_w * value / top) if value > 0 else 0
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end">{_e(_trunc(label, 28))}'
            f"</text>"
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 8}" rx="3" '
            f'fill="{colour}"/>'
            f'<text x="{LABEL_W + w + 6:.1f}" y="{y + 16}">{_e(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_sentiment_chart(dims: Sequence[Mapping[str, Any]]) -> str:
    """Per dimension: one bar split into positive / neutral / negative insight counts."""
    dims = [d for d in dims if d.get("insights")]
    if not dims:
        return '<p class="note">No insights yet.</p>'
    top = max(int(d["insights"]) for d in dims) or 1
    plot_w = CHART_W - LABEL_W - 70
    height = ROW_H * len(dims) + 8
    parts = [
        f'<svg role="img" aria-label="Sentiment by dimension" viewBox="0 0 {CHART_W} {height}" '
        'width="100%" xmlns="http://www.w3.org/2000/svg"><title>Sentiment by dimension</title>'
    ]
    for i, d in enumerate(dims):
        y = 4 + i * ROW_H
        x = float(LABEL_W)
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end">'
            f"{_e(_trunc(str(d['dimension']), 28))}</text>"
        )
        for key, colour in (("positive", POS), ("neutral", NEU), ("negative", NEG)):
            n = int(d.get(key) or 0)
            if not n:
                continue
            w = plot_w * n / top
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 8}" '
                f'fill="{colour}"><title>{key}: {n}</title></rect>'
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 16}">{int(d["insights"])} · '
            f"{_e(_score(d.get('mean_score')))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def rating_chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per star rating: a bar of mean sentiment around a zero line, with review counts."""
    rows = [r for r in rows if r.get("rating") is not None]
    if not rows:
        return '<p class="note">No ratings.</p>'
    width, height, mid, half = 420, 200, 95, 75
    slot = (width - 40) / len(rows)
    parts = [
        f'<svg role="img" aria-label="Rating vs sentiment" viewBox="0 0 {width} {height}" '
        'width="100%" style="max-width:520px" xmlns="http://www.w3.org/2000/svg">'
        "<title>Mean sentiment per star rating</title>",
        f'<line x1="30" y1="{mid}" x2="{width - 5}" y2="{mid}" stroke="#8a93a0"/>',
        f'<text x="2" y="{mid - half + 4}">+1</text><text x="8" y="{mid + 4}">0</text>'
        f'<text x="2" y="{mid + half + 4}">-1</text>',
    ]
    for i, r in enumerate(rows):
        cx = 40 + slot * i + slot / 2
        score = r.get("mean_score")
        if score is not None:
            h = abs(float(score)) * half
            y = mid - h if score >= 0 else mid
            parts.append(
                f'<rect x="{cx - 16:.1f}" y="{y:.1f}" width="32" height="{max(h, 1):.1f}" '
                f'rx="2" fill="{score_colour(score)}"><title>{_e(_score(score))}</title></rect>'
            )
        parts.append(
            f'<text x="{cx:.1f}" y="{height - 22}" text-anchor="middle">{"★" * int(r["rating"])}'
            f'</text><text x="{cx:.1f}" y="{height - 6}" text-anchor="middle">'
            f"n={int(r.get('reviews') or 0)} · {_e(_score(score))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def impact_chart(points: Sequence[Mapping[str, Any]], basis: str) -> str:
    """A diverging bar chart: each pain point (left, red) and delight (right, green) by its
    impact on the average rating (or sentiment), labelled with the reviews behind it."""
    rows = []
    for p in points:
        imp = p.get("impact") or {}
        value = imp.get(basis) if imp.get(basis) is not None else imp.get("sentiment")
        if value is not None:
            rows.append((str(p.get("name") or p.get("aspect") or ""), float(value), p))
    if not rows:
        return '<p class="note">Not enough reviews yet to measure impact.</p>'
    rows.sort(key=lambda r: r[1])
    top = max(abs(v) for _, v, _ in rows) or 1
    mid = LABEL_W + (CHART_W - LABEL_W) / 2
    half = (CHART_W - LABEL_W) / 2 - 60
    unit = "stars" if basis == "rating" else "sentiment"
    height = ROW_H * len(rows) + 8
    title = f"Impact on the average rating ({unit})"
    parts = [
        f'<svg role="img" aria-label="{_e(title)}" viewBox="0 0 {CHART_W} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>',
        f'<line x1="{mid:.1f}" y1="0" x2="{mid:.1f}" y2="{height}" stroke="#8a93a0"/>',
    ]
    for i, (label, value, p) in enumerate(rows):
        y = 4 + i * ROW_H
        w = max(1.0, half * abs(value) / top)
        x = mid - w if value < 0 else mid
        colour = NEG if value < 0 else POS
        text_x = x - 6 if value < 0 else x + w + 6
        anchor = "end" if value < 0 else "start"
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end">{_e(_trunc(label, 28))}'
            f'</text><rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 8}" '
            f'rx="3" fill="{colour}"><title>{_e(label)}: {value:+.3f}</title></rect>'
            f'<text x="{text_x:.1f}" y="{y + 16}" text-anchor="{anchor}">{value:+.2f} · '
            f"n={_e(p.get('reviews'))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _hierarchy(dims: Sequence[Mapping[str, Any]], basis: str) -> str:
    """Dimension -> theme table: volume, share, sentiment and impact of each."""
    if not dims:
        return '<p class="note">No themes yet.</p>'

    def impact(x: Mapping[str, Any]) -> str:
        imp = x.get("impact") or {}
        value = imp.get(basis) if imp.get(basis) is not None else imp.get("sentiment")
        return "-" if value is None else f"{value:+.2f}"

    rows = []
    for d in dims:
        rows.append(
            f'<tr class="dim"><td><b>{_e(d.get("dimension"))}</b></td>'
            f"<td>{_e(d.get('insights'))}</td><td>{_pct(d.get('share'))}</td>"
            f"<td>{_e(_score(d.get('mean_score')))}</td><td>{impact(d)}</td>"
            f"<td>{_e((d.get('impact') or {}).get('reviews', '-'))}</td></tr>"
        )
        for t in d.get("themes") or []:
            rows.append(
                f'<tr><td class="theme">{_e(t.get("name"))}</td><td>{_e(t.get("size"))}</td>'
                f"<td>{_pct(t.get('share'))}</td><td>{_e(_score(t.get('mean_score')))}</td>"
                f"<td>{impact(t)}</td><td>{_e(t.get('reviews', '-'))}</td></tr>"
            )
    return (
        "<table><tr><th>Dimension / theme</th><th>Insights</th><th>Share</th>"
        "<th>Sentiment</th><th>Impact</th><th>Reviews</th></tr>" + "".join(rows) + "</table>"
    )


def _notice(report: Mapping[str, Any]) -> str:
    """A banner for a partial report (e.g. a stalled job), if the report says so."""
    notice = report.get("notice")
    if not report.get("partial") and not notice:
        return ""
    text = notice if isinstance(notice, str) and notice else "This report is partial."
    return f'<p class="notice">{_e(text)}</p>'


def _cards(ov: Mapping[str, Any], cov: Mapping[str, Any]) -> str:
    items = [
        ("Reviews", ov.get("reviews")),
        ("Insights", ov.get("insights")),
        ("Themes", ov.get("themes")),
        ("Coverage", _pct(cov.get("ratio"))),
        ("Translated", ov.get("translated_by_llm")),
        ("Dead-lettered", ov.get("dead_lettered")),
        ("Avg rating", "-" if ov.get("average_rating") is None else f"{ov['average_rating']:.2f}"),
        ("Rejected rows", ov.get("rejected")),
    ]
    return (
        '<div class="cards">'
        + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v in items)
        + "</div>"
    )


def _points(points: Sequence[Mapping[str, Any]], cls: str) -> str:
    if not points:
        return '<p class="note">None found.</p>'
    out = []
    for p in points:
        quotes = "".join(_quote(q) for q in p.get("quotes") or [])
        imp = (p.get("impact") or {}).get("rating")
        effect = "" if imp is None else f" · impact {imp:+.2f} stars"
        out.append(
            f'<div class="point {cls}"><b>{_e(p.get("name") or p.get("aspect"))}</b> '
            f'<span class="meta">{_e(p.get("dimension"))} · {_e(p.get("reviews"))} reviews · '
            f"{_e(p.get('mentions'))} mentions · {_e(_score(p.get('mean_score')))}"
            f"{_e(effect)}</span>{quotes}</div>"
        )
    return "".join(out)


def _quote(q: Mapping[str, Any]) -> str:
    """A quote in the customer's words, its translation (if any) beside it, and the
    review it is from (the client's id when there is one)."""
    tr = q.get("quote_translation")
    beside = f'<span class="tr">{_e(tr)}</span>' if tr else ""
    rid = _e(q.get("external_review_id") or q.get("review_id"))
    return f'<blockquote>“{_e(q.get("quote"))}”{beside}<span class="rid">{rid}</span></blockquote>'


def _analyst(analyst: Any) -> str:
    """The banner of a report the bundled fake LLM wrote."""
    if not isinstance(analyst, Mapping) or not analyst.get("fake"):
        return ""
    return (
        f'<p class="analyst"><b>Written by a fake LLM</b> ({_e(analyst.get("model"))}). '
        f"{_e(analyst.get('note'))} {_e(analyst.get('real_model'))}</p>"
    )


def _five_w(five_w: Mapping[str, Any]) -> str:
    rows = []
    for w in ("who", "what", "when", "where", "why"):
        entry = five_w.get(w) or {}
        learned = ", ".join(str(x) for x in entry.get("learned") or []) or "-"
        observed = (
            ", ".join(f"{o['value']} ({o['count']})" for o in entry.get("observed") or []) or "-"
        )
        rows.append(
            f"<tr><th>{w.capitalize()}</th><td>{_e(learned)}</td><td>{_e(observed)}</td></tr>"
        )
    return (
        "<table><tr><th></th><th>Learned profile</th><th>Mentioned in insights</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _actions(actions: Sequence[Mapping[str, Any]]) -> str:
    if not actions:
        return '<p class="note">No actions proposed.</p>'
    rows = "".join(
        f'<tr><td><span class="prio {_e(a.get("priority"))}">{_e(a.get("priority"))}</span></td>'
        f"<td><b>{_e(a.get('title'))}</b><br>{_e(a.get('detail'))}"
        f'<br><span class="note">Evidence: {_e(a.get("evidence"))}'
        + (f" (review {_e(a.get('evidence_review_id'))})" if a.get("evidence_review_id") else "")
        + "</span></td></tr>"
        for a in actions
    )
    return f"<table>{rows}</table>"


def _suggestions(actions: Sequence[Mapping[str, Any]]) -> str:
    if not actions:
        return ""
    items = "".join(f"<li><b>{_e(a.get('title'))}</b>: {_e(a.get('detail'))}</li>" for a in actions)
    return f'<h3>Further suggestions from the model</h3><ul class="note">{items}</ul>'


def _themes_table(themes: Sequence[Mapping[str, Any]]) -> str:
    if not themes:
        return ""
    arrows = {"rising": "▲ rising", "falling": "▼ falling", "stable": "● stable", "n/a": "–"}
    rows = "".join(
        f"<tr><td><b>{_e(t.get('name'))}</b><br><span class=note>{_e(t.get('description'))}"
        f"</span></td><td>{_e(t.get('dimension'))}</td><td>{_e(t.get('size'))}</td>"
        f"<td>{_pct(t.get('share'))}</td>"
        f"<td>+{_e(t['sentiment']['positive'])} / ={_e(t['sentiment']['neutral'])} / "
        f"-{_e(t['sentiment']['negative'])}</td>"
        f"<td>{_e(arrows.get(t['trend']['direction'], t['trend']['direction']))}</td></tr>"
        for t in themes
    )
    return (
        "<table><tr><th>Theme</th><th>Dimension</th><th>Size</th><th>Share</th>"
        f"<th>Sentiment +/=/-</th><th>Trend</th></tr>{rows}</table>"
    )


def _impact_note(impact: Mapping[str, Any]) -> str:
    if impact.get("basis") == "sentiment":
        return (
            "Impact: the mean review sentiment minus the mean without the reviews that "
            "carry a point (too few star ratings to use stars). Bars: pain points left, "
            "delights right; n = reviews behind each."
        )
    return (
        "Impact: the average star rating minus the average without the reviews that carry "
        "a point - what it costs or earns in stars. Bars: pain points left, delights right; "
        f"n = reviews behind each (at least {impact.get('min_support', '-')})."
    )


def render_report_html(report: Mapping[str, Any]) -> str:
    """The whole page for one report document (as stored in `reports.data`)."""
    ov = report.get("overview") or {}
    cov = report.get("coverage") or {}
    status = str(report.get("status") or "")
    themes = report.get("top_themes") or []
    langs = report.get("languages") or []
    theme_rows = [
        (
            str(t["name"]),
            float(t["size"]),
            f"{t['size']} · {_pct(t.get('share'))}",
            score_colour(t.get("mean_score")),
        )
        for t in themes
    ]
    lang_rows = [
        (str(x["language"]), float(x["reviews"]), f"{x['reviews']} · {_pct(x.get('share'))}", BAR)
        for x in langs
    ]
    notes = "".join(f"<li>{_e(n)}</li>" for n in report.get("notes") or [])
    legend = (
        f'<p class="legend"><span><i style="background:{POS}"></i>positive</span>'
        f'<span><i style="background:{NEU}"></i>neutral</span>'
        f'<span><i style="background:{NEG}"></i>negative</span></p>'
    )
    basis = str((report.get("impact") or {}).get("basis") or "rating")
    impact_points = [*(report.get("pain_points") or []), *(report.get("delights") or [])]
    label = "final" if status == "completed" else "preliminary"
    title = f"{report.get('product', '')} - Voice of Customer report"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body><main>
<header><h1>{_e(report.get("product"))}</h1>
<div class="sub">Voice-of-Customer report · job {_e(report.get("job_id"))} ·
target language {_e(report.get("target_language"))}
<span class="badge {_e(status)}">{_e(label)}</span></div></header>
{_notice(report)}
<section><h2>Summary</h2>{_analyst(report.get("analyst"))}<p>{_e(report.get("summary"))}</p>
{_cards(ov, cov)}<p class="note">{_e(cov.get("note"))}</p>
{f"<ul class=note>{notes}</ul>" if notes else ""}</section>
<section><h2>Recommended actions</h2>{_actions(report.get("recommended_actions") or [])}
{_suggestions(report.get("suggested_actions") or [])}</section>
<section><h2>Impact</h2>{impact_chart(impact_points, basis)}
<p class="note">{_e(_impact_note(report.get("impact") or {}))}</p></section>
<section><h2>Sentiment by dimension</h2>{legend}
{stacked_sentiment_chart(report.get("sentiment_by_dimension") or [])}
<p class="note">Bar length: insights per dimension; label: count · mean sentiment (-1..+1).</p>
</section>
<section><h2>Top themes</h2>{hbar_chart(theme_rows, "Top themes by size")}
{_themes_table(themes)}</section>
<section><h2>Themes by dimension</h2>{_hierarchy(report.get("themes_by_dimension") or [], basis)}
</section>
<section class="cols"><div><h2>Pain points</h2>
{_points(report.get("pain_points") or [], "neg")}</div>
<div><h2>Delights</h2>{_points(report.get("delights") or [], "pos")}</div></section>
<section><h2>Who, what, when, where, why</h2>{_five_w(report.get("five_w") or {})}</section>
<section class="cols"><div><h2>Rating vs sentiment</h2>
{rating_chart(report.get("rating_vs_sentiment") or [])}</div>
<div><h2>Languages</h2>{hbar_chart(lang_rows, "Reviews per source language")}</div></section>
</main></body></html>
"""
