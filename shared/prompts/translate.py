"""The `translate` stage's LLM contract: translate a batch of reviews.

Input (`TranslateInput`): the target language and a batch of items (about 30 short or 10
long reviews). Output (`TranslateOutput`): one translation per item, same ids, plus the
detected source language. `check_items(input_ids)` is the `validate` callback that rejects
an answer missing or inventing ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from shared.llm.prompts import PromptTemplate
from shared.llm.schema import one_item_each


class TranslateItem(BaseModel):
    """One review to translate."""

    id: str
    text: str
    source_language: str | None = None


class TranslateInput(BaseModel):
    """What the translate stage sends."""

    target_language: str
    items: list[TranslateItem]


class TranslatedItem(BaseModel):
    """One translated review."""

    id: str
    translation: str
    source_language: str


class TranslateOutput(BaseModel):
    """The model's answer: one item per input item."""

    items: list[TranslatedItem]


def check_items(input_ids: Iterable[str]) -> Callable[[TranslateOutput], None]:
    """A `validate` callback: the answer must translate exactly the given ids."""
    expected = set(input_ids)

    def _check(out: TranslateOutput) -> None:
        got = [i.id for i in out.items]
        missing = expected - set(got)
        extra = set(got) - expected
        if missing or extra or len(got) != len(set(got)):
            raise ValueError(
                f"translation ids differ from input: missing={sorted(missing)[:5]} "
                f"unexpected={sorted(extra)[:5]}"
            )

    return _check


SYSTEM = """\
You are a professional translator of customer reviews. You receive a JSON object with a \
"target_language" (an ISO 639-1 code such as "en", "de", "ja") and a list of "items", each \
with an "id", the review "text" and, when known, its "source_language".

For every item:
- Translate the text faithfully into the target language. Keep the meaning, tone, \
sentiment, intensity, negations, numbers, units, product and brand names. Do not \
summarise, correct, censor or add anything. Keep sentence boundaries and line breaks, \
so the n-th sentence of the translation renders the n-th sentence of the text. The \
"translation" is the translated text alone: no language tags or prefixes (such as \
"[ja->en]"), notes or quotation marks around it.
- If the text is already in the target language, return it unchanged.
- "source_language" is the ISO 639-1 code of the original text (detect it if it was not \
given; use "und" if it cannot be determined).

Return exactly one output item per input item, with the same "id", in the same order; \
never merge, split or drop items.

Answer with a single JSON object and nothing else - no prose, no markdown code fences. \
It must validate against this JSON schema:
{schema}"""


def narrow(input: dict[str, Any], schema: dict[str, Any]) -> None:
    """One translation per item, with the items' ids (see `PromptTemplate.narrow`)."""
    ids = [str(i["id"]) for i in input.get("items") or []]
    one_item_each(schema["properties"]["items"], "id", ids)


PROMPT = PromptTemplate(
    stage="translate",
    version="2",
    system_template=SYSTEM,
    output_model=TranslateOutput,
    description="Translate a batch of reviews into the target language.",
    narrow=narrow,
)
