"""The LLM contracts of the pipeline stages: one module per stage with its `PROMPT`
(a versioned `shared.llm.prompts.PromptTemplate`), its input model and output model(s).

`PROMPTS` maps a stage name to its prompt.
"""

from __future__ import annotations

from shared.llm.prompts import PromptTemplate
from shared.prompts import insight, learn, report, theme, translate

PROMPTS: dict[str, PromptTemplate] = {
    m.PROMPT.stage: m.PROMPT for m in (learn, translate, insight, theme, report)
}

__all__ = ["PROMPTS"]
