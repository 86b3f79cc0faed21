"""The JSON Schema a provider is asked to enforce, derived from a stage's pydantic output
model, in the subset that OpenAI's strict structured outputs, vLLM, llama.cpp (its server's
and llama-cpp-python's grammar converter) and Ollama all accept.

pydantic's `model_json_schema()` is richer than that subset: `$defs`/`$ref`, `title`,
`default`, string lengths and number ranges, and optional properties. `response_schema`
turns it into a self-contained schema:

- references are inlined (no `$defs`: some converters resolve only a few ref forms);
- only structural keywords are kept: `type`, `properties`, `required`, `items`, `enum`,
  `const`, `anyOf`, `additionalProperties`, `minItems`, `maxItems`. Lengths, ranges,
  formats and patterns are dropped: not every server accepts them (OpenAI strict mode
  refuses `minLength`), and pydantic still validates every answer against the full model;
- every object lists all of its properties in `required` and sets
  `additionalProperties: false`, as strict mode demands. A field with a default is then
  required in the answer; its type already says what it may be (`anyOf` with `null` for
  an optional value), so the model can always write the default.

`response_format(mode, stage, model, strict, schema)` builds the request's `response_format`;
a prompt may narrow the schema for each input (`PromptTemplate.answer_schema`: exact item
counts, the ids and names the answer must use).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pydantic import BaseModel

KEPT = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "const",
        "anyOf",
        "additionalProperties",
        "minItems",
        "maxItems",
    }
)
_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]")
# The `VOC_LLM_STRUCTURED` modes that send a schema.
SCHEMA_MODES = frozenset({"json_schema", "json_object_schema"})


class UnsupportedSchema(ValueError):
    """The output model cannot be expressed in the portable subset."""


def _resolve(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    """`node` with every `#/$defs/...` reference replaced by its definition."""
    if isinstance(node, list):
        return [_resolve(v, defs, seen) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rpartition("/")[2]
        if not ref.startswith("#/$defs/") or name not in defs:
            raise UnsupportedSchema(f"unresolvable reference {ref!r}")
        if name in seen:
            raise UnsupportedSchema(f"recursive model {name!r} cannot be inlined")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs, (*seen, name))
    return {k: _resolve(v, defs, seen) for k, v in node.items() if k != "$defs"}


def _portable(node: Any, path: str) -> Any:
    """Keep the portable keywords and close every object (see the module docstring)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEPT:
            continue
        if key == "properties":
            out[key] = {name: _portable(v, f"{path}.{name}") for name, v in value.items()}
        elif key == "items":
            out[key] = _portable(value, f"{path}[]")
        elif key == "anyOf":
            out[key] = [_portable(v, path) for v in value]
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        props = out.get("properties")
        if not props:
            raise UnsupportedSchema(f"{path or 'root'}: an object without fixed properties")
        out["type"] = "object"
        out["required"] = list(props)
        out["additionalProperties"] = False
    return out


@functools.cache
def _derived(model: type[BaseModel]) -> str:
    raw = model.model_json_schema()
    inlined = _resolve(raw, raw.get("$defs", {}), ())
    return json.dumps(_portable(inlined, ""), separators=(",", ":"))


def response_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The portable JSON Schema of `model` (a fresh copy; derived once per model)."""
    schema: dict[str, Any] = json.loads(_derived(model))
    return schema


def schema_name(stage: str) -> str:
    """A `json_schema.name` providers accept: [a-zA-Z0-9_-], at most 64 characters."""
    return (_NAME_RE.sub("_", stage) or "answer")[:57] + "_output"


def response_format(
    mode: str,
    stage: str,
    model: type[BaseModel],
    *,
    strict: bool = True,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The `response_format` of a request in `mode` (`VOC_LLM_STRUCTURED`), or None;
    `schema` (one derived from `model` and narrowed for the request) replaces the model's
    own."""
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {
                "name": schema_name(stage),
                "schema": schema if schema is not None else response_schema(model),
                "strict": strict,
            },
        }
    if mode == "json_object_schema":
        return {
            "type": "json_object",
            "schema": schema if schema is not None else response_schema(model),
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def one_item_each(array: dict[str, Any], key: str, values: list[str]) -> None:
    """Narrow an array schema (in place) to exactly one item per value of `values`, its
    `key` property one of them: the answer then has one entry per input item, under the
    input's own ids (see `PromptTemplate.narrow`)."""
    array["minItems"] = array["maxItems"] = len(values)
    if values:
        array["items"]["properties"][key] = {"type": "string", "enum": values}
