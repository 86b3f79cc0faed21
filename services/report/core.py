"""The report stage's pure core: a job's next state, and what goes into its report.

No IO here. `decide` turns a job's progress counts into a `Decision`: the job status to
move to (with the statuses it may move from, `STATUS_FROM`, so a transition written as
`UPDATE .. WHERE status = ANY(..)` never steps a job back nor overwrites an operator's
`cancelled`) and the report to build, if any. A job is `completed` only once every review
is analysed or dead-lettered; one whose reviews stop finishing for the stall timeout is
`stalled` (reason and since-when on the job; reviews waiting in retry tiers count as in
progress), which clears when a review finishes again. Reports built before completion
(`partial` on a stall, `report_ready` at the threshold) say so (`partial`, `notice`).
`assemble_report` puts aggregates and the summary together; `fallback_summary` writes a
deterministic summary when the LLM cannot; the `*_row` helpers shape what the store
writes (report, callback outbox, job events) so a replay writes the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared import textsafe
from shared.events import JobCompleted
from shared.prompts.insight import OTHER_DIMENSION

# Job statuses, as `shared.jobstatus` names them (not imported: it pulls in SQLAlchemy's
# asyncio layer, and this core stays free of IO libraries).
SEALED = "sealed"
STALLED = "stalled"
REPORT_READY = "report_ready"
COMPLETED = "completed"
# Job statuses the report stage leaves alone (set by the API or an operator; a job being
# replayed by `voc replay job` is finalised only once the replay has passed every stage).
INACTIVE_JOB_STATUSES = frozenset({"failed", "cancelled", "reprocessing", "deleted"})
REPLAYED = "replayed"  # set by `voc replay job` when the replay is through: rebuild once

# The statuses each status may be reached from. Anything else (an operator's cancel, a
# replay starting, a job further along) refuses the transition.
STATUS_FROM: dict[str, frozenset[str]] = {
    REPORT_READY: frozenset({SEALED, STALLED, REPLAYED}),
    COMPLETED: frozenset({SEALED, STALLED, REPORT_READY, COMPLETED, REPLAYED}),
    STALLED: frozenset({SEALED, REPORT_READY}),
    SEALED: frozenset({STALLED}),  # a stall cleared before any report
}

# Reports by how far they go: a partial one (the job stalled), the early one, the final.
ReportStatus = Literal["partial", "report_ready", "completed"]
_RANK: dict[str | None, int] = {None: 0, "partial": 1, "report_ready": 2, "completed": 3}
# The lifecycle steps announced (`jobs.completed` event, callback), in order.
ANNOUNCED: tuple[ReportStatus, ...] = ("report_ready", "completed")


@dataclass(frozen=True)
class JobProgress:
    """A job's completion counts as the report stage sees them.

    `done` counts reviews that are themed or dead-lettered for good; ingest is complete
    when the job is sealed and every submitted row went through ingest (accepted, dropped
    as duplicate or rejected), so `ingested` is final. `idle_s` is how long ago a review
    of the job last finished (or the job was sealed, if none has): `last_progress_at`.
    """

    job_id: str
    tenant_id: str
    product: str
    target_language: str
    callback_url: str | None
    job_status: str
    sealed: bool
    submitted: int
    rejected: int
    ingest_rows: int  # rows ingest has seen (sum over chunks)
    ingested: int  # reviews stored
    themed: int
    dead_lettered: int
    report_status: str | None = None
    report_done: int | None = None  # `done` when the current report was built
    report_themed: int | None = None  # `themed` when the current report was built
    idle_s: float = 0.0
    last_progress_at: datetime | None = None

    @property
    def done(self) -> int:
        """Reviews finished for good (themed or dead-lettered), at most `ingested`."""
        return min(self.ingested, self.themed + self.dead_lettered)

    @property
    def ratio(self) -> float:
        """Finished share of the job's reviews (1.0 for an empty job)."""
        return self.done / self.ingested if self.ingested else 1.0

    @property
    def ingest_complete(self) -> bool:
        """No more reviews can arrive: sealed, and ingest has seen every submitted row."""
        return self.sealed and self.ingest_rows >= self.submitted

    @property
    def complete(self) -> bool:
        """Every review is analysed or dead-lettered, and no more can arrive."""
        return self.ingest_complete and self.done >= self.ingested


@dataclass(frozen=True)
class Decision:
    """What to do with a job now: the status to move it to, the report to build (None:
    the status alone), and for a stall its reason."""

    status: str
    report: ReportStatus | None = None
    reason: str | None = None


def decide(
    p: JobProgress, threshold: float = 0.9, stall_timeout_s: float = 900.0
) -> Decision | None:
    """The job's next step, or None.

    - `completed` (and its report) once every review is analysed or dead-lettered; a
      completed report is rebuilt if more reviews finished since (dead letters redriven
      and now themed), or once after a replay;
    - `stalled` when a sealed, unfinished job has had no review finish for
      `stall_timeout_s`, with a partial report if it has none (or an older partial one);
    - `report_ready` once ingest is complete and >= `threshold` of the reviews are done;
    - a stalled job whose reviews finish again goes back to `report_ready` or `sealed`;
    - never a step back (a replay of old events finds nothing to do).
    """
    if p.job_status in INACTIVE_JOB_STATUSES or not p.sealed:
        return None
    built = _RANK.get(p.report_status, 0)
    if p.complete:
        healed = built == 3 and (
            (p.report_done is not None and p.done > p.report_done)
            or (p.report_themed is not None and p.themed > p.report_themed)
        )
        if built < 3 or healed or p.job_status == REPLAYED:
            return Decision(COMPLETED, "completed")
        return None
    if built == 3 or p.job_status in (COMPLETED, REPLAYED):
        return None  # finished before (a redrive is under way) or a replay still going through
    if p.idle_s >= stall_timeout_s:
        if p.job_status == STALLED:
            return None
        stale = built == 0 or (built == 1 and p.done > (p.report_done or 0))
        return Decision(STALLED, "partial" if stale else None, stall_reason(p, stall_timeout_s))
    if p.ingest_complete and p.ratio >= threshold and built < 2:
        return Decision(REPORT_READY, "report_ready")
    if p.job_status == STALLED:  # reviews finish again: the stall is over
        return Decision(REPORT_READY if built == 2 else SEALED)
    return None


def stall_reason(p: JobProgress, stall_timeout_s: float) -> str:
    """Why a job counts as stalled, in words an operator and a tenant can act on."""
    idle = f"{max(p.idle_s, stall_timeout_s):.0f} s"
    if not p.ingest_complete:
        return (
            f"ingest has seen {p.ingest_rows} of {p.submitted} submitted rows and nothing "
            f"moved for {idle}"
        )
    waiting = p.ingested - p.done
    return (
        f"no review finished for {idle}: {waiting} of {p.ingested} reviews are still in "
        f"progress (in a stage or waiting in a retry tier); {p.themed} analysed, "
        f"{p.dead_lettered} dead-lettered"
    )


def announced_steps(p: JobProgress, report: ReportStatus) -> list[ReportStatus]:
    """The lifecycle steps a build announces (event and callback per step), each once.

    A job that reaches 100% before anyone saw it at 90% still announces `report_ready`
    first, so a client always gets both, in order; a rebuild announces nothing again.
    """
    built = _RANK.get(p.report_status, 0)
    return [s for s in ANNOUNCED if built < _RANK[s] <= _RANK[report]]


def report_notice(p: JobProgress, report: ReportStatus, stall: str | None = None) -> str | None:
    """The plain-language note a report built before the job completed carries."""
    if report == "completed":
        return None
    share = f"{p.done} of {p.ingested} reviews are finished ({p.ratio:.0%})"
    if report == "partial":
        why = f" The job stalled: {stall}." if stall else " The job stalled."
        return (
            f"Partial report: {share}; the others are not analysed yet.{why} This report "
            "will be replaced when the job completes."
        )
    return (
        f"Partial report: {share}; the rest are still in progress. This report will be "
        "replaced when the job completes."
    )


@dataclass
class Summary:
    """The report's narrative part: a summary and recommended actions."""

    summary: str
    actions: list[dict[str, Any]]
    source: Literal["llm", "fallback"]
    notes: list[str] = field(default_factory=list)


def llm_input(product: str, aggregates: Mapping[str, Any]) -> dict[str, Any]:
    """The report prompt's input: the aggregates trimmed to what grounds a summary.

    Quotes are cut to one per point and lists to the top entries so the prompt stays
    small and stable (same aggregates, same input, so the LLM cache answers replays).
    """
    ov = aggregates["overview"]
    return {
        "product": product,
        "aggregates": {
            "reviews": ov["reviews"],
            "overview": {
                k: ov[k]
                for k in ("reviews", "insights", "themes", "average_rating", "coverage")
                if k in ov
            },
            "sentiment_by_dimension": [
                {
                    "name": d["dimension"],
                    "insights": d["insights"],
                    "positive": d["positive"],
                    "negative": d["negative"],
                    "score": d["mean_score"],
                }
                for d in aggregates["sentiment_by_dimension"]
                if d["insights"]
            ],
            "top_themes": [
                {
                    "name": t["name"],
                    "dimension": t["dimension"],
                    "size": t["size"],
                    "share": t["share"],
                    "mean_score": t["mean_score"],
                    "trend": t["trend"]["direction"],
                }
                for t in aggregates["top_themes"][:8]
            ],
            # ranked by impact: what moves the average rating most comes first
            "pain_points": [_point_brief(p) for p in aggregates["pain_points"][:6]],
            "delights": [_point_brief(p) for p in aggregates["delights"][:6]],
            "rating_vs_sentiment": aggregates["rating_vs_sentiment"],
            "languages": [
                {"language": x["language"], "reviews": x["reviews"]}
                for x in aggregates["languages"]
            ],
        },
    }


def _point_brief(p: Mapping[str, Any]) -> dict[str, Any]:
    quotes = p.get("quotes") or []
    impact = p.get("impact") or {}
    return {
        "theme": p["name"],
        "dimension": p["dimension"],
        "mentions": p["mentions"],
        "reviews": p["reviews"],
        "rating_impact": impact.get("rating"),
        "quote": quotes[0]["quote"] if quotes else None,
    }


def _effect(p: Mapping[str, Any], basis: str) -> str:
    """A point's impact in words: "lowers the average rating by 0.42 stars (2.1 vs 4.0)"."""
    imp = p.get("impact") or {}
    value = imp.get("rating") if basis == "rating" else None
    if value is not None and abs(value) < 0.005:
        return "leaves the average rating unchanged"
    if value is not None:
        verb = "lowers" if value < 0 else "raises"
        return (
            f"{verb} the average rating by {abs(value):.2f} stars "
            f"({imp.get('rating_with') or 0:.1f} for these reviews vs "
            f"{imp.get('rating_without') or 0:.1f} for the rest)"
        )
    value = imp.get("sentiment")
    if value is not None:
        verb = "lowers" if value < 0 else "raises"
        return f"{verb} the mean review sentiment by {abs(value):.2f}"
    return "has no measurable effect yet"


def recommended_actions(aggregates: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's priorities, ranked by impact: the top pain points to fix (the first
    "high", then "medium"), then the top delight to keep; each with its numbers, its
    theme and dimension, and a verbatim quote with the client's review id as evidence.

    Derived from the aggregates only, so it is the same for every build of the same
    rows and never depends on model prose.
    """
    basis = (aggregates.get("impact") or {}).get("basis", "rating")
    # Remarks no dimension fits ("other") are listed as points but are nothing to act on.
    pains = [p for p in aggregates.get("pain_points", []) if p["dimension"] != OTHER_DIMENSION]
    delights = [d for d in aggregates.get("delights", []) if d["dimension"] != OTHER_DIMENSION]
    actions = []
    for i, p in enumerate(pains[:3]):
        actions.append(_action(p, basis, f"Fix: {p['name']}", "high" if i == 0 else "medium"))
    for d in delights[:1]:
        actions.append(_action(d, basis, f"Keep and promote: {d['name']}", "low"))
    return actions


def _action(p: Mapping[str, Any], basis: str, title: str, priority: str) -> dict[str, Any]:
    quote = (p.get("quotes") or [{}])[0]
    return {
        "title": title,
        "detail": f"{p['reviews']} reviews ({p['share']:.0%}) raise it in {p['dimension']}; "
        f"it {_effect(p, basis)}.",
        "priority": priority,
        "evidence": quote.get("quote", ""),
        "evidence_review_id": quote.get("external_review_id") or quote.get("review_id"),
        "theme_id": p["theme_id"],
        "dimension": p["dimension"],
        "impact": p.get("impact"),
    }


def fallback_summary(product: str, aggregates: Mapping[str, Any], reason: str) -> Summary:
    """A deterministic summary from the aggregates alone (no LLM); its actions are the
    impact-ranked priorities."""
    ov = aggregates["overview"]
    dims = [d for d in aggregates["sentiment_by_dimension"] if d["insights"]]
    parts = [
        f"{ov['themed']} of {ov['reviews']} reviews of {product} were analysed "
        f"({ov['coverage']:.0%} coverage), giving {ov['insights']} insights "
        f"in {ov['themes']} themes."
    ]
    if ov.get("average_rating") is not None:
        parts.append(f"The average rating is {ov['average_rating']:.1f} of 5.")
    scored = [d for d in dims if d["mean_score"] is not None]
    if scored:
        best = max(scored, key=lambda d: (d["mean_score"], d["dimension"]))
        worst = min(scored, key=lambda d: (d["mean_score"], d["dimension"]))
        parts.append(
            f"Customers are most positive about {best['dimension']} "
            f"(mean sentiment {best['mean_score']:+.2f}) and most negative about "
            f"{worst['dimension']} ({worst['mean_score']:+.2f})."
        )
    pains = aggregates["pain_points"]
    if pains:
        top = pains[0]
        basis = (aggregates.get("impact") or {}).get("basis", "rating")
        parts.append(
            f"The complaint that weighs most is {top['name']} ({top['dimension']}, "
            f"{top['reviews']} reviews): it {_effect(top, basis)}."
        )
    return Summary(
        summary=" ".join(parts),
        actions=[],
        source="fallback",
        notes=[f"LLM summary unavailable ({reason}); summary derived from the aggregates."],
    )


def coverage_section(p: JobProgress, dead_by_stage: Mapping[str, int]) -> dict[str, Any]:
    """How much of the job the report covers, and what was left out."""
    ratio = round(min(1.0, p.themed / p.ingested), 4) if p.ingested else 1.0
    missing = p.ingested - min(p.ingested, p.themed)
    note = f"{min(p.themed, p.ingested)} of {p.ingested} reviews fully analysed."
    if p.dead_lettered:
        stages = ", ".join(f"{s}: {n}" for s, n in sorted(dead_by_stage.items()))
        note += f" {p.dead_lettered} could not be analysed and were dead-lettered ({stages})."
    pending = missing - min(missing, p.dead_lettered)
    if pending:
        note += f" {pending} still in progress when this report was built."
    return {
        "ratio": ratio,
        "ingested": p.ingested,
        "themed": p.themed,
        "dead_lettered": p.dead_lettered,
        "pending": pending,
        "note": note,
    }


def assemble_report(
    p: JobProgress,
    status: ReportStatus,
    aggregates: Mapping[str, Any],
    summary: Summary,
    stall: str | None = None,
) -> dict[str, Any]:
    """The report document (JSON): identity, coverage, every aggregate, the summary.

    `partial` is true for every report but the final one, and `notice` says so in plain
    words (with the stall's reason, `stall`, for a report built because the job stalled).
    """
    dead = aggregates["overview"].get("dead_lettered_by_stage", {})
    # Model-written text: plain, capped, quotes only if they are the job's own words.
    narrative, suggested = textsafe.safe_narrative(
        summary.summary, summary.actions, textsafe.texts_under(aggregates)
    )
    return {
        "job_id": p.job_id,
        "product": p.product,
        "target_language": p.target_language,
        "status": status,
        "final": status == "completed",
        "partial": status != "completed",
        "notice": report_notice(p, status, stall),
        "coverage": coverage_section(p, dead),
        "progress": {"done": p.done, "ingested": p.ingested, "themed": p.themed},
        **aggregates,
        "summary": narrative,
        "recommended_actions": recommended_actions(aggregates),
        "suggested_actions": suggested,  # the model's own ideas, unranked
        "summary_source": summary.source,
        "notes": summary.notes,
    }


def report_row(
    job_id: str, status: ReportStatus, doc: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The `reports` row for a built report."""
    return {
        "job_id": job_id,
        "status": status,
        "coverage": doc["coverage"]["ratio"],
        "data": dict(doc),
        "generated_at": now,
    }


@dataclass(frozen=True)
class Transition:
    """A job status change, written only if the job's status is one of `allowed_from`."""

    job_id: str
    status: str
    allowed_from: frozenset[str]
    stalled_since: datetime | None = None  # set with status `stalled`, else cleared
    stall_reason: str | None = None


def transition(p: JobProgress, d: Decision) -> Transition:
    """The status change of decision `d` (a stall records since when nothing finished)."""
    stalled = d.status == STALLED
    return Transition(
        job_id=p.job_id,
        status=d.status,
        allowed_from=STATUS_FROM[d.status],
        stalled_since=p.last_progress_at if stalled else None,
        stall_reason=d.reason if stalled else None,
    )


def job_event_row(
    p: JobProgress, status: ReportStatus, coverage: float, now: datetime
) -> dict[str, Any]:
    """The `job_events` row of one announced step (id `job_id:status`, written once)."""
    event = JobCompleted(
        job_id=p.job_id,
        tenant_id=p.tenant_id,
        status="completed" if status == "completed" else "report_ready",
        at=now.isoformat(),
        coverage=coverage,
    )
    return {"id": f"{p.job_id}:{status}", "job_id": p.job_id, "value": event.to_bytes()}


def callback_payload(
    p: JobProgress, status: ReportStatus, coverage: float, base_url: str
) -> dict[str, Any]:
    """The small JSON event a job's callback URL receives."""
    return {
        "event": f"job.{status}",
        "job_id": p.job_id,
        "status": status,
        "coverage": coverage,
        "report_url": f"{base_url.rstrip('/')}/v1/jobs/{p.job_id}/report",
    }


def outbox_row(
    p: JobProgress, status: ReportStatus, payload: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The `callback_outbox` row (id `job_id:status`), due at once."""
    assert p.callback_url is not None
    return {
        "id": f"{p.job_id}:{status}",
        "job_id": p.job_id,
        "url": p.callback_url,
        "payload": dict(payload),
        "attempts": 0,
        "next_attempt_at": now,
        "delivered_at": None,
        "last_error": None,
    }
