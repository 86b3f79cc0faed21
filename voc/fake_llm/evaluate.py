"""`make eval-analysis`: does the bundled fake analyst read sentiment from the text alone?

    python -m voc.fake_llm.evaluate [--data ../shared/data/reviews] [--target en]

For each MARC sample language (en, de, es, fr, ja, zh: `marc_<lang>.csv`, columns
`review_id,language,rating,text`), every review rated 1-2 or 4-5 goes the way the pipeline
sends it: the fake's own translation into the target language (when the review is in
another language), `services.insight.core.llm_input` with the rating WITHHELD, the fake's
insight answer, and `build_insights`, which validates the quotes as the stage does. A
review agrees with its stars when the sign of its mean insight score is the sign of its
rating (1-2 negative, 4-5 positive); a neutral mean, or no insight, is a miss. 3-star
reviews are left out.

The reviews of each language are split into two halves by a hash of their review id. The
lexicons were tuned by reading misclassified reviews of half A only (to find missing cue
words; no per-review table, nothing learned from labels); half B was never looked at, so
its figure is the honest one. Both are printed, with the count behind each, and the last
line is `RESULT {json}`. The goal is >= 70% in every language.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from services.insight.core import JobModel, build_insights, llm_input
from shared.events import TranslatedReview
from shared.prompts.insight import InsightOutput
from voc.fake_llm.answers import answer_insight, answer_learn, answer_translate

LANGUAGES = ("en", "de", "es", "fr", "ja", "zh")
GOAL = 0.70
DEFAULT_DATA = Path("../shared/data/reviews")
LEARN_SAMPLE = 200  # reviews the learn stage reads to choose a job's dimensions


@dataclass(frozen=True)
class Row:
    """One MARC review."""

    review_id: str
    language: str
    rating: int
    text: str

    @property
    def half(self) -> str:
        """ "A" (tuning half) or "B" (held out), from a hash of the review id."""
        return "A" if hashlib.sha256(self.review_id.encode()).digest()[0] % 2 == 0 else "B"


@dataclass
class Tally:
    """Agreements out of reviews, per half."""

    agree: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    total: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})

    def add(self, half: str, ok: bool) -> None:
        """Count one review."""
        self.total[half] += 1
        self.agree[half] += int(ok)

    def share(self, half: str | None = None) -> float:
        """Agreement of one half, or of both."""
        halves = [half] if half else ["A", "B"]
        n = sum(self.total[h] for h in halves)
        return sum(self.agree[h] for h in halves) / n if n else 0.0

    def count(self, half: str | None = None) -> int:
        """Reviews behind `share(half)`."""
        return sum(self.total[h] for h in ([half] if half else ["A", "B"]))


def read_rows(path: Path) -> list[Row]:
    """The reviews of one sample file."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            Row(r["review_id"], r["language"], int(r["rating"]), r["text"])
            for r in csv.DictReader(fh)
        ]


def job_model(rows: Sequence[Row], target: str) -> JobModel:
    """The job model the fake learn stage makes of a sample of the reviews (every n-th,
    so it is the same on every run)."""
    step = max(1, len(rows) // LEARN_SAMPLE)
    sample = [{"id": r.review_id, "text": r.text} for r in rows[::step][:LEARN_SAMPLE]]
    learned = answer_learn({"product": "products", "target_language": target, "sample": sample})
    return JobModel.from_row(learned["dimensions"], learned["five_w"])


def translated(row: Row, target: str) -> TranslatedReview:
    """The review as the translate stage hands it on, rating withheld."""
    if row.language == target:
        return TranslatedReview(
            id=row.review_id, text=row.text, source_language=row.language, translated=False
        )
    item = {"id": row.review_id, "text": row.text, "source_language": row.language}
    out = answer_translate({"target_language": target, "items": [item]})
    return TranslatedReview(
        id=row.review_id,
        text=out["items"][0]["translation"],
        source_language=row.language,
        translated=True,
        original_text=row.text,
    )


def review_score(row: Row, model: JobModel, target: str) -> float:
    """The mean insight score of one review, read as the insight stage reads the answer."""
    review = translated(row, target)
    raw = answer_insight(llm_input(review, model, target))
    insights = build_insights(review, InsightOutput.model_validate(raw), model.names)
    return sum(i.score for i in insights) / len(insights) if insights else 0.0


def agrees(score: float, rating: int) -> bool:
    """The sign of the score is the sign of the stars (neutral never agrees)."""
    return score > 0 if rating >= 4 else score < 0


def evaluate(rows: Iterable[Row], model: JobModel, target: str) -> Tally:
    """Tally agreement over the 1-2 and 4-5 star reviews."""
    tally = Tally()
    for row in rows:
        if row.rating == 3:
            continue
        tally.add(row.half, agrees(review_score(row, model, target), row.rating))
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    """Print agreement per language and half, then the RESULT line."""
    p = argparse.ArgumentParser(prog="eval-analysis", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of marc_<lang>.csv")
    p.add_argument("--target", default="en", help="the job's target language (default en)")
    p.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated")
    args = p.parse_args(argv)
    langs = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    missing = [lang for lang in langs if not (args.data / f"marc_{lang}.csv").is_file()]
    if missing:
        sys.stderr.write(f"eval-analysis: no marc_{{{','.join(missing)}}}.csv in {args.data}\n")
        return 2
    out = sys.stdout
    out.write(
        f"fake analyst vs stars, rating withheld, target language {args.target}\n"
        "  (sign of each review's mean insight score; 3-star reviews excluded; neutral or no\n"
        "  insight = miss; half A tuned on, half B held out)\n"
    )
    result: dict[str, dict[str, float | int]] = {}
    for lang in langs:
        rows = read_rows(args.data / f"marc_{lang}.csv")
        tally = evaluate(rows, job_model(rows, args.target), args.target)
        result[lang] = {
            "agree_a": round(tally.share("A"), 4),
            "n_a": tally.count("A"),
            "agree_b": round(tally.share("B"), 4),
            "n_b": tally.count("B"),
            "agree": round(tally.share(), 4),
            "n": tally.count(),
        }
        out.write(
            f"  {lang}: {tally.share():6.1%} of {tally.count():>4}   "
            f"half A {tally.share('A'):6.1%} of {tally.count('A'):>4}   "
            f"half B {tally.share('B'):6.1%} of {tally.count('B'):>4}\n"
        )
    ok = all(v["agree_b"] >= GOAL and v["agree_a"] >= GOAL for v in result.values())
    doc = {"target": args.target, "goal": GOAL, "pass": ok, "languages": result}
    out.write("RESULT " + orjson.dumps(doc).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
