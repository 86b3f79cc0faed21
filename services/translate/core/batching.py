"""The pure core of `translate`: who needs the LLM, how calls are packed, how answers match.

1. `plan_reviews` splits a job's reviews into those already in the target language
   (skipped: text unchanged, `translated=False`) and those to translate.
2. `pack` (or `OpenPack`, item by item) groups the latter into LLM calls of about 30
   short or 10 long reviews: a short review costs `long_per_call` units, a long one
   `short_per_call` units, a call holds `short_per_call * long_per_call` units (so 30
   short, 10 long or any mix in between), and a character budget keeps one call's prompt
   and answer bounded.
3. `match_answer` matches the model's items back to the reviews by id; what is missing,
   unknown, duplicated or empty comes back as `missing`, to be retried alone.
4. `translated_event` / `translation_row` build what the stage emits and upserts.

No IO here: the service does the LLM calls and the runner the writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.translate.core.langdetect import normalise_language, review_language
from shared.events import Review, ReviewsLearned, ReviewsTranslated, TranslatedReview
from shared.prompts.translate import TranslateOutput

UNDETERMINED = "und"


@dataclass(frozen=True)
class PackLimits:
    """How many reviews one translate call takes (see the module docstring)."""

    short_per_call: int = 30
    long_per_call: int = 10
    short_chars: int = 200
    max_chars: int = 24_000

    def cost(self, text: str) -> int:
        """Units one review takes of a call's `capacity`."""
        return self.long_per_call if len(text) < self.short_chars else self.short_per_call

    @property
    def capacity(self) -> int:
        """Units one call holds."""
        return self.short_per_call * self.long_per_call


@dataclass(frozen=True)
class ToTranslate:
    """A review that needs the LLM, with its language if we could tell it."""

    review_id: str
    text: str
    source_language: str | None

    def as_input(self) -> dict[str, Any]:
        """The item as the translate prompt takes it."""
        return {"id": self.review_id, "text": self.text, "source_language": self.source_language}


@dataclass(frozen=True)
class Translated:
    """A review's final text in the target language (or its original when skipped)."""

    review_id: str
    text: str
    source_language: str
    translated: bool


class AnswerItem(Protocol):
    """One item of the model's answer (`shared.prompts.translate.TranslatedItem`)."""

    id: str
    translation: str
    source_language: str


def plan_reviews(
    reviews: Iterable[Review], target_language: str
) -> tuple[list[Translated], list[ToTranslate]]:
    """Split reviews into skipped ones (already in the target language) and ones to translate.

    A row's own `language` is trusted; otherwise it is detected from the text. A review
    whose language cannot be told goes to the LLM, which reports the language it saw.
    """
    target = normalise_language(target_language)
    skipped: list[Translated] = []
    todo: list[ToTranslate] = []
    for r in reviews:
        lang = review_language(r.language, r.text)
        if lang is not None and lang == target:
            skipped.append(Translated(r.id, r.text, lang, translated=False))
        else:
            todo.append(ToTranslate(r.id, r.text, lang))
    return skipped, todo


class OpenPack:
    """One call being filled item by item, within the unit and character budgets."""

    def __init__(self, limits: PackLimits) -> None:
        self.limits = limits
        self.items: list[ToTranslate] = []
        self.units = 0
        self.chars = 0

    def fits(self, item: ToTranslate) -> bool:
        """Whether `item` may join (an empty call takes anything, however long)."""
        if not self.items:
            return True
        return (
            self.units + self.limits.cost(item.text) <= self.limits.capacity
            and self.chars + len(item.text) <= self.limits.max_chars
        )

    def add(self, item: ToTranslate) -> None:
        """Add an item (check `fits` first)."""
        self.items.append(item)
        self.units += self.limits.cost(item.text)
        self.chars += len(item.text)

    @property
    def full(self) -> bool:
        """No further review of any length fits."""
        return (
            self.units + self.limits.long_per_call > self.limits.capacity
            or self.chars >= self.limits.max_chars
        )


def pack(items: Sequence[ToTranslate], limits: PackLimits) -> list[list[ToTranslate]]:
    """Group items into calls, in order, each within the unit and character budgets.

    Greedy in input order: the number of calls is what costs quota, and input order keeps
    the packing of a replayed batch identical (so the LLM cache answers it).
    """
    calls: list[list[ToTranslate]] = []
    current = OpenPack(limits)
    for item in items:
        if not current.fits(item):
            calls.append(current.items)
            current = OpenPack(limits)
        current.add(item)
    if current.items:
        calls.append(current.items)
    return calls


def match_answer(
    call: Sequence[ToTranslate], answer: Sequence[AnswerItem], target_language: str
) -> tuple[list[Translated], list[ToTranslate]]:
    """Match the model's items to the call's reviews by id.

    Returns the matched translations (in call order) and the reviews whose item is
    missing or mangled: absent, empty, or given twice with different texts. Items with
    ids the call did not send are ignored.
    """
    by_id: dict[str, AnswerItem | None] = {}
    wanted = {item.review_id for item in call}
    for a in answer:
        if a.id not in wanted:
            continue
        if a.id in by_id:
            prev = by_id[a.id]
            if prev is not None and prev.translation != a.translation:
                by_id[a.id] = None  # two different answers: trust neither
            continue
        by_id[a.id] = a if a.translation.replace("\x00", "").strip() else None
    done: list[Translated] = []
    missing: list[ToTranslate] = []
    for item in call:
        found = by_id.get(item.review_id)
        if found is None:
            missing.append(item)
        else:
            done.append(to_translated(item, found, target_language))
    return done, missing


def to_translated(item: ToTranslate, answer: AnswerItem, target_language: str) -> Translated:
    """The final record of one review given the model's item for it.

    Our own language decision wins over the model's; when we could not tell, the model's
    says, and if the model found the text already in the target language the original is
    kept untouched (`translated=False`).
    """
    source = item.source_language or normalise_language(answer.source_language)
    target = normalise_language(target_language)
    if item.source_language is None and source is not None and source == target:
        return Translated(item.review_id, item.text, source, translated=False)
    # Postgres text cannot hold NUL: one in an answer would fail the whole batch's upsert.
    text = answer.translation.replace("\x00", "")
    return Translated(item.review_id, text, source or UNDETERMINED, translated=True)


def check_single(review_id: str) -> Callable[[TranslateOutput], None]:
    """A `validate` callback for a one-item call: exactly that id, a non-empty text."""

    def _check(out: TranslateOutput) -> None:
        items = [i for i in out.items if i.id == review_id]
        if len(items) != 1 or not items[0].translation.strip():
            raise ValueError(f"no usable translation for item {review_id!r}")

    return _check


def translated_event(
    event: ReviewsLearned, done: Mapping[str, Translated]
) -> ReviewsTranslated | None:
    """The output event of one input event: its reviews that have a result, in order."""
    reviews = [
        TranslatedReview(
            id=r.id,
            text=t.text,
            source_language=t.source_language,
            translated=t.translated,
            rating=r.rating,
            # Quotes are taken from the original; the translation is shown beside them.
            original_text=r.text if t.translated else None,
            external_id=r.external_id,
        )
        for r in event.reviews
        if (t := done.get(r.id)) is not None
    ]
    if not reviews:
        return None
    return ReviewsTranslated(
        job_id=event.job_id, target_language=event.target_language, reviews=reviews
    )


def translation_row(job_id: str, target_language: str, t: Translated) -> dict[str, Any]:
    """The `translations` row of one review."""
    return {
        "review_id": t.review_id,
        "job_id": job_id,
        "source_language": t.source_language[:16],
        "target_language": target_language[:16],
        "text": t.text,
        "translated": t.translated,
    }
