"""The `report` stage's LLM contract: write the executive summary and actions.

Input (`ReportInput`): the product and the job's aggregates (any JSON the report stage
computes: sentiment by dimension, top themes, pain points, 5W profile, languages...).
Output (`ReportOutput`): a summary and prioritised recommended actions with evidence.

The fake provider grounds its answer in `aggregates["dimensions"]` (or
`aggregates["sentiment_by_dimension"]`): a list of objects with a name and a numeric
score, or a mapping name -> score / object; it names the worst and best dimension.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.llm.prompts import PromptTemplate

Priority = Literal["high", "medium", "low"]


class ReportInput(BaseModel):
    """What the report stage sends."""

    product: str
    aggregates: dict[str, Any]


class RecommendedAction(BaseModel):
    """One thing the product team should do, and why."""

    title: str = Field(min_length=1)
    detail: str
    priority: Priority
    evidence: str


class ReportOutput(BaseModel):
    """The narrative part of the report."""

    summary: str = Field(min_length=1)
    recommended_actions: list[RecommendedAction]


SYSTEM = """\
You are the head of customer insights writing the executive part of a Voice-of-Customer \
report. You receive a JSON object with the "product" and "aggregates" computed from all \
analysed reviews (for example sentiment by dimension, top themes with size and share, \
pain points and delights with verbatim quotes, the 5W profile, rating versus sentiment \
and the language breakdown).

Write:
- "summary": 4-8 sentences for a busy product manager: overall sentiment, the biggest \
pain points and delights, who the customers are and anything surprising. Use only \
numbers and facts present in the aggregates; never invent data.
- "recommended_actions": 3-6 concrete actions, most important first, each with a short \
"title", a "detail" (what to do, 1-3 sentences), a "priority" ("high", "medium" or \
"low", by impact and the number of customers affected) and "evidence" (the figures or \
quotes from the aggregates that justify it).

Write in the language the aggregates are written in. Answer with a single JSON object and \
nothing else - no prose, no markdown code fences. It must validate against this JSON \
schema:
{schema}"""


def narrow(input: dict[str, Any], schema: dict[str, Any]) -> None:
    """At most the 6 actions the instructions ask for, enforced (`PromptTemplate.narrow`)."""
    schema["properties"]["recommended_actions"]["maxItems"] = 6


PROMPT = PromptTemplate(
    stage="report",
    version="1",
    system_template=SYSTEM,
    output_model=ReportOutput,
    description="Executive summary and recommended actions from the job's aggregates.",
    narrow=narrow,
)
