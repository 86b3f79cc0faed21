"""The `learn` stage's LLM contract: induce analysis dimensions and a 5W model.

Input (`LearnInput`): the product, the job's target language and a sample of reviews.
Output (`LearnOutput`): 5 to 15 dimensions (name, description, keywords) and the 5W
model (who / what / when / where / why), written in the target language.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from shared.llm.prompts import PromptTemplate


class LearnSampleReview(BaseModel):
    """One review of the sample shown to the model."""

    id: str
    text: str
    rating: int | None = None


class LearnInput(BaseModel):
    """What the learn stage sends."""

    product: str
    target_language: str
    sample: list[LearnSampleReview]


class Dimension(BaseModel):
    """An analysis dimension of the product, e.g. battery life or delivery."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    keywords: list[str] = Field(default_factory=list)


class FiveW(BaseModel):
    """The 5W model: who buys/uses the product, what for, when, where and why."""

    who: list[str] = Field(default_factory=list)
    what: list[str] = Field(default_factory=list)
    when: list[str] = Field(default_factory=list)
    where: list[str] = Field(default_factory=list)
    why: list[str] = Field(default_factory=list)


class LearnOutput(BaseModel):
    """The model the learn stage stores for a job."""

    dimensions: list[Dimension] = Field(min_length=5, max_length=15)
    five_w: FiveW

    @field_validator("dimensions")
    @classmethod
    def _unique_names(cls, dims: list[Dimension]) -> list[Dimension]:
        seen: set[str] = set()
        for d in dims:
            key = d.name.strip().casefold()
            if key in seen:
                raise ValueError(f"dimension {d.name!r} appears twice")
            seen.add(key)
        return dims


SYSTEM = """\
You are a senior Voice-of-Customer analyst. You are given a product name, a target \
language and a sample of customer reviews of that product (any language, with star \
ratings from 1 to 5 when known). Your task is to design the analysis frame that will be \
used to classify every review of this product.

1. Dimensions: propose between 5 and 15 analysis dimensions - the aspects of the product \
and of the buying experience that customers actually talk about in this sample (for \
example battery life, sound quality, fit, price/value, delivery, customer service). \
Each dimension has:
   - "name": short (1-4 words), specific to this product, in the target language;
   - "description": one sentence saying what belongs to it, in the target language;
   - "keywords": 3-12 words or short phrases that signal it, in the languages that \
appear in the sample (include the target language).
   Dimensions must not overlap; prefer the ones mentioned most often; do not invent \
aspects nobody mentions, unless you need them to reach 5.
2. Five W model, each a list of 1-6 short phrases in the target language, drawn from the \
reviews: "who" buys or uses it, "what" they use it for, "when" they use it, "where" they \
use it, "why" they bought it.

Answer with a single JSON object and nothing else - no prose, no markdown code fences. \
It must validate against this JSON schema:
{schema}"""


def narrow(input: dict[str, Any], schema: dict[str, Any]) -> None:
    """The list lengths the instructions ask for, enforced (`PromptTemplate.narrow`);
    validation stays lenient, the bounds only stop a small model's endless lists."""
    dimension = schema["properties"]["dimensions"]["items"]
    dimension["properties"]["keywords"]["maxItems"] = 12
    for values in schema["properties"]["five_w"]["properties"].values():
        values["maxItems"] = 6


PROMPT = PromptTemplate(
    stage="learn",
    version="1",
    system_template=SYSTEM,
    output_model=LearnOutput,
    description="Induce 5-15 analysis dimensions and the 5W model from a review sample.",
    narrow=narrow,
)
