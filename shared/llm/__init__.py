"""The LLM layer: structured-output calls to any OpenAI-compatible endpoint, with a shared
Redis rate limiter, a result cache, retries and metrics.

Stages use `build_llm(settings, redis)` and `await llm.complete(...)`; see
`shared.llm.client`. Prompts and output models of each stage live in `shared.prompts`.
"""

from __future__ import annotations

from shared.llm.client import LLM, build_llm
from shared.llm.errors import (
    LLMError,
    LLMMalformedOutput,
    LLMRateLimited,
    LLMRequestRejected,
    LLMTimeout,
    LLMUnavailable,
)
from shared.llm.prompts import PromptTemplate
from shared.llm.settings import LLMSettings, StageConfig

__all__ = [
    "LLM",
    "LLMError",
    "LLMMalformedOutput",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMSettings",
    "LLMTimeout",
    "LLMUnavailable",
    "PromptTemplate",
    "StageConfig",
    "build_llm",
]
