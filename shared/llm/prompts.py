"""Versioned prompt templates.

Each stage defines one `PromptTemplate` in `shared/prompts/<stage>.py`. The system text
carries the instructions and the JSON schema of the answer (the `{schema}` placeholder is
filled from the output model); the user message is the stage's input as compact JSON.
Bump `version` whenever the meaning of the prompt changes: the version is sent to the
provider (`X-Voc-Prompt-Version`) and is part of the result-cache key, as is a fingerprint
of the system text, so an edited prompt never serves stale cached answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from shared.llm.schema import response_schema

SCHEMA_PLACEHOLDER = "{schema}"


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the same data always gives the same text."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class PromptTemplate:
    """A stage's prompt: stage name, version, system text and output model.

    `system_template` may contain `{schema}`, replaced by the compact JSON schema of
    `output_model`. The user message is the input dict serialised as JSON.

    `narrow(input, schema)` tightens, in place, the schema a provider is asked to enforce
    for one input (`answer_schema`): how many items the answer has and which ids or names
    it may use. A small model that a fixed schema lets write a theme after theme until
    `max_tokens`, or invent ids, cannot do so under the narrowed one.
    """

    stage: str
    version: str
    system_template: str
    output_model: type[BaseModel]
    description: str = ""
    narrow: Callable[[dict[str, Any], dict[str, Any]], None] | None = None

    @property
    def name(self) -> str:
        """The prompt's name: the stage it belongs to."""
        return self.stage

    @cached_property
    def schema_json(self) -> str:
        """The output model's JSON schema, compact."""
        return json.dumps(self.output_model.model_json_schema(), separators=(",", ":"))

    @cached_property
    def system(self) -> str:
        """The system message with the answer schema filled in."""
        return self.system_template.replace(SCHEMA_PLACEHOLDER, self.schema_json)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the system text, part of the cache key."""
        return hashlib.sha256(self.system.encode()).hexdigest()[:12]

    def answer_schema(self, input: dict[str, Any]) -> dict[str, Any]:
        """The schema to enforce for `input`: the output model's portable schema
        (`shared.llm.schema`), narrowed for this input when the prompt says how."""
        schema = response_schema(self.output_model)
        if self.narrow is not None:
            self.narrow(input, schema)
        return schema

    def user(self, input: dict[str, Any]) -> str:
        """The user message: the input as JSON (keys in the caller's order)."""
        return json.dumps(input, ensure_ascii=False, separators=(",", ":"))

    def messages(self, input: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages of a first attempt."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user(input)},
        ]
