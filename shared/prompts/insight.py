"""The `insight` stage's LLM contract: extract insights from one review.

Input (`InsightInput`): the review (id, text, rating), the job's learned dimensions and
5W model. Output (`InsightOutput`): a list of insights, each on one dimension (or
"other"), with aspect, sentiment, score, a verbatim quote and 5W tags.
`check_quotes(text)` is the `validate` callback that rejects a quote that is not an exact
substring of the review text (the model paraphrased), so the call is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

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
    text: str
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
    who: str | None = None
    what: str | None = None
    when: str | None = None
    where: str | None = None
    why: str | None = None


class InsightOutput(BaseModel):
    """The model's answer for one review (may be empty for an empty review)."""

    insights: list[Insight]


def check_quotes(text: str) -> Callable[[InsightOutput], None]:
    """A `validate` callback: every quote must appear verbatim in `text`."""

    def _check(out: InsightOutput) -> None:
        for ins in out.insights:
            if ins.quote not in text:
                raise ValueError(f"quote is not verbatim in the review: {ins.quote[:80]!r}")

    return _check


SYSTEM = """\
You are an expert Voice-of-Customer analyst. You receive one customer review as JSON: \
"review_id", "text", the star "rating" (1-5, or null), the product's analysis \
"dimensions" (name and description) and its "five_w" model (typical who / what / when / \
where / why).

Extract every distinct opinion the customer expresses. For each one produce an insight:
- "dimension": exactly one of the given dimension names; use "other" only if none fits.
- "aspect": 1-4 words naming the specific thing judged (e.g. "battery drain", "strap \
comfort").
- "sentiment": "positive", "negative" or "neutral", as the customer feels it (consider \
the rating, sarcasm and negation).
- "score": a number from -1.0 (very negative) to 1.0 (very positive); 0 for neutral.
- "quote": the exact words of the review that support the insight, copied verbatim - \
character for character, same language, same punctuation - as one contiguous substring \
of "text", usually one sentence. Never translate, paraphrase, shorten inside or join \
separate passages.
- "who", "what", "when", "where", "why": a short phrase when the review says it (prefer \
the wording of the five_w model), otherwise null.

Do not invent opinions that are not in the text. An empty or meaningless review yields \
an empty list. Answer with a single JSON object and nothing else - no prose, no markdown \
code fences. It must validate against this JSON schema:
{schema}"""

PROMPT = PromptTemplate(
    stage="insight",
    version="1",
    system_template=SYSTEM,
    output_model=InsightOutput,
    description="Extract dimension/aspect/sentiment/quote/5W insights from one review.",
)
