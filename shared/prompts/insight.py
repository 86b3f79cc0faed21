"""The `insight` stage's LLM contract: extract insights from one review.

Input (`InsightInput`): the review as written (id, original text and its language, rating),
its translation into the job's target language (null when the review is already in it),
the job's learned dimensions and 5W model. Output (`InsightOutput`): a list of insights,
each on one dimension (or "other"), with aspect, sentiment, score, a quote copied verbatim
from the ORIGINAL text, that quote in the target language (`quote_translation`, null when
the review is in it) and 5W tags. A reader sees the customer's own words with the
translation beside them, never a translation passed off as a quote.
`check_quotes(text)` is the `validate` callback that rejects a quote that is not an exact
substring of the original text (the model paraphrased, or quoted the translation), so the
call is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.llm.prompts import PromptTemplate

Sentiment = Literal["positive", "negative", "neutral"]
OTHER_DIMENSION = "other"


class DimensionRef(BaseModel):
    """A learned dimension as shown to the model."""

    name: str
    description: str = ""


class FiveWModel(BaseModel):
    """The job's 5W model (see `shared.prompts.learn.FiveW`)."""

    who: list[str] = Field(default_factory=list)
    what: list[str] = Field(default_factory=list)
    when: list[str] = Field(default_factory=list)
    where: list[str] = Field(default_factory=list)
    why: list[str] = Field(default_factory=list)


class InsightInput(BaseModel):
    """What the insight stage sends for one review."""

    review_id: str
    text: str = Field(description="the review as the customer wrote it")
    language: str | None = Field(default=None, description="ISO 639-1 code of `text`")
    target_language: str | None = None
    translation: str | None = Field(
        default=None, description="`text` in the target language; null when it is in it"
    )
    rating: int | None = None
    dimensions: list[DimensionRef]
    five_w: FiveWModel = Field(default_factory=FiveWModel)


class Insight(BaseModel):
    """One opinion found in a review."""

    dimension: str
    aspect: str
    sentiment: Sentiment
    score: float = Field(ge=-1.0, le=1.0)
    quote: str = Field(min_length=1)
    quote_translation: str | None = None
    who: str | None = None
    what: str | None = None
    when: str | None = None
    where: str | None = None
    why: str | None = None


class InsightOutput(BaseModel):
    """The model's answer for one review (may be empty for an empty review)."""

    insights: list[Insight]


def check_quotes(text: str) -> Callable[[InsightOutput], None]:
    """A `validate` callback: every quote must appear verbatim in `text` (the original)."""

    def _check(out: InsightOutput) -> None:
        for ins in out.insights:
            if ins.quote not in text:
                raise ValueError(f"quote is not verbatim in the review: {ins.quote[:80]!r}")

    return _check


SYSTEM = """\
You are an expert Voice-of-Customer analyst. You receive one customer review as JSON: \
"review_id", "text" (the review exactly as the customer wrote it), its "language", the \
job's "target_language", "translation" (the text translated into the target language, or \
null when the review is already in it), the star "rating" (1-5, or null), the product's \
analysis "dimensions" (name and description) and its "five_w" model (typical who / what / \
when / where / why).

Read the original text; use the translation only to help you understand it. Extract every \
distinct opinion the customer expresses. For each one produce an insight:
- "dimension": exactly one of the given dimension names; use "other" only if none fits.
- "aspect": 1-4 words in the target language naming the specific thing judged (e.g. \
"battery drain", "strap comfort"). Never take an aspect from a function word.
- "sentiment": "positive", "negative" or "neutral", as the customer feels it about that \
aspect, judged from the words of the quoted passage (negation, complaints, intensity, \
sarcasm); the rating is only a weak hint for the review as a whole.
- "score": a number from -1.0 (very negative) to 1.0 (very positive); 0 for neutral.
- "quote": the exact words of the ORIGINAL "text" that support the insight, copied \
verbatim - character for character, in the original language, same punctuation - as one \
contiguous substring of "text", usually one sentence. Never quote the translation, never \
translate, paraphrase, shorten inside or join separate passages.
- "quote_translation": the same passage in the target language (taken from "translation" \
when it is given, otherwise translated faithfully), or null when "translation" is null.
- "who", "what", "when", "where", "why": a short phrase when the review says it (prefer \
the wording of the five_w model), otherwise null.

Do not invent opinions that are not in the text. An empty or meaningless review yields \
an empty list. Answer with a single JSON object and nothing else - no prose, no markdown \
code fences. It must validate against this JSON schema:
{schema}"""


def max_insights(text: str) -> int:
    """The most insights a review of `text` is asked for: a couple per ~50 characters, at
    most 20 (a small model otherwise lists insights until it runs out of tokens)."""
    return min(20, 2 + len(text) // 50)


def narrow(input: dict[str, Any], schema: dict[str, Any]) -> None:
    """Insights only on the given dimensions or "other", and no more than the review's
    length can carry (`max_insights`; see `PromptTemplate.narrow`)."""
    insights = schema["properties"]["insights"]
    insights["maxItems"] = max_insights(str(input.get("text") or ""))
    names = [str(d["name"]) for d in input.get("dimensions") or []]
    if names:
        enum = list(dict.fromkeys([*names, OTHER_DIMENSION]))
        insights["items"]["properties"]["dimension"] = {"type": "string", "enum": enum}


PROMPT = PromptTemplate(
    stage="insight",
    version="2",
    system_template=SYSTEM,
    output_model=InsightOutput,
    description="Extract dimension/aspect/sentiment/quote/5W insights from one review.",
    narrow=narrow,
)
