"""The insight stage's pure core: LLM input, quote location, dimension mapping, results.

No IO here. `service.py` calls the LLM once per review with `llm_input(...)` and
`answer_validator(review.original)`, then hands the answers to `build_insights` and the
per-review outcomes of a record to `assemble`, which returns the rows to upsert and the
event to emit.

Quotes are the customer's own words: the model reads the original text (with the
translation beside it) and quotes the ORIGINAL, so a quote and its offsets always refer to
the review as written; the model's `quote_translation` (the quote in the job's target
language) is kept beside it, whitespace-tidied and capped, and dropped when the review is
already in the target language. Every insight also carries the client's own review id.

Why quotes are located, not trusted: the LLM returns a quote, the report needs character
offsets into the review, and a quote that is not in the review is a hallucination. A quote
is found verbatim first (`str.find`); failing that, after normalising whitespace runs and
typographic quote marks on both sides, in which case the exact substring of the review
at the found offsets is stored instead of the model's spelling.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import Failure
from shared.events import Insight, InsightsExtracted, TranslatedReview
from shared.prompts.insight import OTHER_DIMENSION, InsightOutput
from shared.prompts.insight import Insight as DraftInsight

INSIGHT_NS = uuid.UUID("8d3c1f52-6a0e-4f0b-9a51-2b7e4c9d1a03")
MAX_ID = 36  # job and review ids are VARCHAR(36): a longer one would fail the whole upsert
FIVE_W = ("who", "what", "when", "where", "why")
# A quote's translation is a display string next to the quote: a translation runs up to a
# few times the length of its source (CJK -> English), so it is capped relative to the
# quote, and absolutely, so a runaway answer cannot bloat rows and events.
MAX_QUOTE_TRANSLATION = 2000
QUOTE_TRANSLATION_RATIO = 4
QUOTE_TRANSLATION_SLACK = 200

# Typographic quote marks the model may "correct" the review's straight ones to (or back).
_QUOTE_MARKS = str.maketrans(
    {
        "\u2018": "'",  # left single
        "\u2019": "'",  # right single / apostrophe
        "\u201a": "'",  # single low-9
        "\u201b": "'",  # single high-reversed-9
        "\u2032": "'",  # prime
        "`": "'",
        "\u00b4": "'",  # acute accent used as apostrophe
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',  # double prime
        "\u00ab": '"',  # guillemets
        "\u00bb": '"',
    }
)
# What may wrap a quote without being part of it: whitespace and quote marks.
_WRAPPING = " \t\r\n'\""
_DIM_SEP = re.compile(r"[\s_\-/&]+")


@dataclass(frozen=True)
class JobModel:
    """What the insight stage needs of a job's learned model."""

    dimensions: tuple[tuple[str, str], ...]  # (name, description), in learned order
    five_w: Mapping[str, list[str]]

    @classmethod
    def from_row(cls, dimensions: Iterable[Any], five_w: Mapping[str, Any] | None) -> JobModel:
        """Build from the `job_models` JSONB columns, skipping malformed entries."""
        dims: list[tuple[str, str]] = []
        seen: set[str] = set()
        for d in dimensions or ():
            if isinstance(d, Mapping):
                name, desc = d.get("name"), d.get("description") or ""
            else:
                name, desc = d, ""
            if not isinstance(name, str) or not name.strip() or name in seen:
                continue
            seen.add(name)
            dims.append((name.strip(), str(desc)))
        fw = {k: [str(v) for v in (five_w or {}).get(k) or [] if v] for k in FIVE_W}
        return cls(tuple(dims), fw)

    @property
    def names(self) -> tuple[str, ...]:
        """The dimension names, learned order."""
        return tuple(name for name, _ in self.dimensions)


@dataclass(frozen=True)
class ReviewOutcome:
    """What became of one review: its insights, or why it failed for good."""

    review: TranslatedReview
    insights: tuple[Insight, ...] = ()
    failure: Failure | None = None

    @property
    def failed(self) -> bool:
        """True when the review is to be dead-lettered."""
        return self.failure is not None


@dataclass
class Assembled:
    """Rows and the event of one input record's reviews (failed reviews excluded)."""

    insight_rows: list[dict[str, Any]] = field(default_factory=list)
    review_rows: list[dict[str, Any]] = field(default_factory=list)
    event: InsightsExtracted | None = None
    failed: list[ReviewOutcome] = field(default_factory=list)


class QuoteNotFound(ValueError):
    """An answer quoted words that are not in the review (it is rejected and retried)."""


def storable_id(value: str | None) -> bool:
    """True if `value` fits the id columns (1..36 characters)."""
    return value is not None and 0 < len(value) <= MAX_ID


def insight_id(review_id: str, index: int) -> str:
    """The deterministic id of the `index`-th insight of a review."""
    return str(uuid.uuid5(INSIGHT_NS, f"{review_id}\x00{index}"))


def llm_input(
    review: TranslatedReview, model: JobModel, target_language: str | None = None
) -> dict[str, Any]:
    """The insight prompt's input for one review (see `shared.prompts.insight`): the
    original text, and its translation when the review was translated."""
    return {
        "review_id": review.id,
        "text": review.original,
        "language": review.source_language,
        "target_language": target_language,
        "translation": review.text if review.translated else None,
        "rating": review.rating,
        "dimensions": [{"name": n, "description": d} for n, d in model.dimensions],
        "five_w": {k: list(model.five_w.get(k, [])) for k in FIVE_W},
    }


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """Text with quote marks unified and whitespace runs collapsed to one space, plus
    the index in `text` of every character of the result."""
    out: list[str] = []
    where: list[int] = []
    prev_space = False
    for i, ch in enumerate(text.translate(_QUOTE_MARKS)):
        if ch.isspace():
            if prev_space:
                continue
            prev_space = True
            out.append(" ")
        else:
            prev_space = False
            out.append(ch)
        where.append(i)
    return "".join(out), where


def locate_quote(text: str, quote: str) -> tuple[int, int] | None:
    """Where `quote` occurs in `text` as `(start, end)`, or None if it does not.

    The first exact occurrence (whitespace around the quote trimmed) if there is one;
    otherwise the first match after unifying quote marks, collapsing whitespace and
    trimming wrapping quote marks off the quote. `text[start:end]` is then the review's
    own spelling of the quote.
    """
    exact = quote.strip()  # surrounding whitespace is never worth keeping
    if not exact:
        return None
    start = text.find(exact)
    if start >= 0:
        return start, start + len(exact)
    norm_text, where = _normalise_with_map(text)
    # Reviews are stored NFC (ingest normalises them); the model may answer decomposed.
    norm_quote, _ = _normalise_with_map(unicodedata.normalize("NFC", quote))
    norm_quote = norm_quote.strip(_WRAPPING)
    if not norm_quote:
        return None
    pos = norm_text.find(norm_quote)
    if pos < 0:
        return None
    return where[pos], where[pos + len(norm_quote) - 1] + 1


def _dimension_key(name: str) -> str:
    return _DIM_SEP.sub(" ", name.casefold()).strip()


def map_dimension(name: str, dimensions: Sequence[str]) -> str:
    """The job's dimension `name` refers to: exact, then ignoring case and separators
    ("Battery_Life" -> "battery life"), then a simple plural; otherwise "other"."""
    if name in dimensions:
        return name
    key = _dimension_key(name)
    if not key or key == OTHER_DIMENSION:
        return OTHER_DIMENSION
    by_key = {_dimension_key(d): d for d in dimensions}
    if key in by_key:
        return by_key[key]
    for variant in (key + "s", key[:-1] if key.endswith("s") else None):
        if variant and variant in by_key:
            return by_key[variant]
    return OTHER_DIMENSION


def answer_validator(text: str) -> Callable[[InsightOutput], None]:
    """The `validate` callback for `llm.complete`: every quote must be locatable in `text`
    (the review's original: a quote of the translation is rejected and asked again)."""

    def _validate(answer: InsightOutput) -> None:
        for ins in answer.insights:
            if locate_quote(text, ins.quote) is None:
                raise QuoteNotFound(f"quote is not in the review: {ins.quote[:80]!r}")

    return _validate


def _five_w(draft: DraftInsight) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k in FIVE_W:
        v = getattr(draft, k)
        v = v.strip() if isinstance(v, str) else None
        out[k] = v or None
    return out


def quote_translation(review: TranslatedReview, quote: str, draft: str | None) -> str | None:
    """The stored translation of a quote: None when the review is in the target language
    (the quote is already readable) or the model gave none; whitespace runs collapsed, NUL
    removed (Postgres text cannot hold it) and the length capped (see the constants)."""
    if not review.translated or draft is None:
        return None
    text = " ".join(draft.replace("\x00", "").split())
    if not text:
        return None
    cap = min(MAX_QUOTE_TRANSLATION, QUOTE_TRANSLATION_RATIO * len(quote) + QUOTE_TRANSLATION_SLACK)
    if len(text) > cap:
        text = text[: cap - 1].rstrip() + "\u2026"
    return text


def build_insights(
    review: TranslatedReview, answer: InsightOutput, dimensions: Sequence[str]
) -> tuple[Insight, ...]:
    """Turn the model's answer for one review into stored insights with ids and offsets.

    Quotes are located in the review's original text (`review.original`). Raises
    `QuoteNotFound` if a quote is not in it (the validator let it through only if it is,
    so this guards against a caller skipping validation). Exact repeats
    (same dimension, aspect, sentiment and quote span) are kept once; ids number the
    remaining insights in answer order, so the same answer always gives the same ids.
    """
    out: list[Insight] = []
    seen: set[tuple[str, str, str, int, int]] = set()
    original = review.original
    for draft in answer.insights:
        span = locate_quote(original, draft.quote)
        if span is None:
            raise QuoteNotFound(f"quote is not in the review: {draft.quote[:80]!r}")
        start, end = span
        dimension = map_dimension(draft.dimension.strip(), dimensions)
        aspect = " ".join(draft.aspect.split())[:200] or dimension
        ident = (dimension, aspect.casefold(), draft.sentiment, start, end)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(
            Insight(
                id=insight_id(review.id, len(out)),
                review_id=review.id,
                dimension=dimension,
                aspect=aspect,
                sentiment=draft.sentiment,
                score=max(-1.0, min(1.0, float(draft.score))),
                quote=original[start:end],
                quote_start=start,
                quote_end=end,
                five_w=_five_w(draft),
                quote_translation=quote_translation(
                    review, original[start:end], draft.quote_translation
                ),
                external_review_id=review.external_id,
            )
        )
    return tuple(out)


def assemble(job_id: str, outcomes: Sequence[ReviewOutcome]) -> Assembled:
    """Rows (`insights`, `review_insights`) and the `InsightsExtracted` event of the
    reviews of one input record; failed reviews are returned apart, for dead-lettering,
    and left out of rows and event so each review is counted once (done or dead)."""
    result = Assembled()
    done: list[ReviewOutcome] = []
    for o in outcomes:
        (result.failed if o.failed else done).append(o)
    insights = [ins for o in done for ins in o.insights]
    result.insight_rows = [insight_row(job_id, ins) for ins in insights]
    result.review_rows = [
        {"review_id": o.review.id, "job_id": job_id, "n_insights": len(o.insights)} for o in done
    ]
    if done:
        result.event = InsightsExtracted(
            job_id=job_id, review_ids=[o.review.id for o in done], insights=insights
        )
    return result


def insight_row(job_id: str, ins: Insight) -> dict[str, Any]:
    """The `insights` table row of an insight."""
    return {
        "id": ins.id,
        "job_id": job_id,
        "review_id": ins.review_id,
        "dimension": ins.dimension,
        "aspect": ins.aspect,
        "sentiment": ins.sentiment,
        "score": ins.score,
        "quote": ins.quote,
        "quote_start": ins.quote_start,
        "quote_end": ins.quote_end,
        "five_w": ins.five_w,
        "quote_translation": ins.quote_translation,
        "external_review_id": ins.external_review_id,
    }
