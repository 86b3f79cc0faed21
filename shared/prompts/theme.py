"""The `theme` stage's LLM contract: name clusters of insights as themes.

Input (`ThemeInput`): the product, one dimension and its clusters (key, aspects, sample
quotes). Output (`ThemeOutput`): one theme (name, description) per cluster, same keys.
`check_keys(keys)` is the `validate` callback requiring exactly those keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import BaseModel, Field

from shared.llm.prompts import PromptTemplate


class ThemeCluster(BaseModel):
    """A group of similar insights to be named."""

    key: str
    aspects: list[str]
    quotes: list[str] = Field(default_factory=list)


class ThemeInput(BaseModel):
    """What the theme stage sends."""

    product: str
    dimension: str
    clusters: list[ThemeCluster]


class Theme(BaseModel):
    """The name and description of one cluster."""

    key: str
    name: str = Field(min_length=1, max_length=120)
    description: str


class ThemeOutput(BaseModel):
    """The model's answer: one theme per cluster."""

    themes: list[Theme]


def check_keys(keys: Iterable[str]) -> Callable[[ThemeOutput], None]:
    """A `validate` callback: exactly one theme per given cluster key."""
    expected = set(keys)

    def _check(out: ThemeOutput) -> None:
        got = [t.key for t in out.themes]
        if set(got) != expected or len(got) != len(expected):
            raise ValueError(f"theme keys differ from clusters: {sorted(set(got) ^ expected)[:5]}")

    return _check


SYSTEM = """\
You are a Voice-of-Customer analyst naming themes. You receive a JSON object with the \
"product", one analysis "dimension" and a list of "clusters". Each cluster has a "key", \
the "aspects" customers mentioned and a few verbatim "quotes"; all insights in a cluster \
are about the same thing.

For every cluster write a theme:
- "key": the cluster's key, unchanged;
- "name": 2-6 words a product manager would recognise, specific and concrete (e.g. \
"Battery drains overnight", not "Battery issues"), stating the sentiment when it is \
clear;
- "description": one or two sentences summarising what customers say, grounded only in \
the aspects and quotes given.

Return exactly one theme per cluster, in the same order, no more and no fewer. Write in \
the language of the aspects. Answer with a single JSON object and nothing else - no \
prose, no markdown code fences. It must validate against this JSON schema:
{schema}"""

PROMPT = PromptTemplate(
    stage="theme",
    version="1",
    system_template=SYSTEM,
    output_model=ThemeOutput,
    description="Name and describe clusters of insights of one dimension.",
)
