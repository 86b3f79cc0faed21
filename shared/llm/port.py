"""The port through which stages call the LLM (`shared.llm.client.LLM` implements it).

Stages type their dependency with it, so a unit test can hand them a small fake instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from shared.llm.prompts import PromptTemplate

T = TypeVar("T", bound=BaseModel)


class CompletesLLM(Protocol):
    """Port: `complete`, the one call stages make (see `shared.llm.client.LLM.complete`)."""

    async def complete(
        self,
        stage: str,
        prompt: PromptTemplate,
        input: dict[str, Any],
        output_model: type[T],
        *,
        job_id: str | None = None,
        cache: bool = True,
        validate: Callable[[T], None] | None = None,
    ) -> T:
        """A validated structured answer."""
        ...
