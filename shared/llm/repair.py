"""Turn a model's text answer into a JSON object, repairing the usual damage.

Real models wrap JSON in markdown fences, prefix it with prose or a `<think>` block,
append trailing commas, or stop mid-object when they hit `max_tokens`. `parse_json_reply`
tries, in order: the text as is; without fences and reasoning blocks; the outermost
balanced `{...}`; the same with trailing commas removed; and finally, for a truncated
answer, the longest prefix that ends after a complete value, with the open brackets
closed. Everything here is pure and synchronous.

`describe_error` and `echo_hint` write what a corrective retry tells the model: every
validation error (bounded), and whether the answer was the schema or the input echoed
back, as weak models under JSON mode do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA_RE = re.compile(r",(\s*[}\]])")


class RepairFailed(ValueError):
    """No JSON object could be recovered from the text."""


def strip_wrappers(text: str) -> str:
    """Remove `<think>` blocks and markdown code fences around the JSON."""
    text = _THINK_RE.sub("", text).strip()
    m = _FENCE_RE.search(text)
    if m and m.group(1).strip():
        return m.group(1).strip()
    return text


def outermost_object(text: str) -> str | None:
    """The first balanced `{...}` in `text` (string-aware), or None if it never closes."""
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    in_str = False
    esc = False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def close_truncated(text: str) -> list[str]:
    """Cut a truncated JSON object back to a complete value and close the brackets.

    Returns candidates, most data first: for each nesting depth, the text cut after the
    last complete value at that depth (so a half-written list element is either kept
    partially or dropped whole), with the open brackets closed. Empty if the text holds
    no object start.
    """
    start = text.find("{")
    if start < 0:
        return []
    stack: list[str] = []  # "{" or "["
    obj_state: list[str] = []  # per open container: "k" key, "c" colon, "v" value, "a" array
    in_str = False
    esc = False
    str_is_key = False
    best: dict[int, tuple[int, list[str]]] = {}  # depth -> (cut position, open stack)
    prim_start = -1

    def value_done(end: int) -> None:
        nonlocal best
        if not stack:
            return
        if stack[-1] == "{" and obj_state[-1] != "v":
            return
        if stack[-1] == "{":
            obj_state[-1] = "d"  # a value is complete; next is "," or "}"
        best[len(stack)] = (end, list(stack))

    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
                if str_is_key:
                    obj_state[-1] = "c"
                else:
                    value_done(i + 1)
            i += 1
            continue
        if prim_start >= 0 and (c in ",}] \t\r\n"):
            value_done(i)
            prim_start = -1
        if c == '"':
            in_str = True
            str_is_key = bool(stack) and stack[-1] == "{" and obj_state[-1] == "k"
        elif c in "{[":
            stack.append(c)
            obj_state.append("k" if c == "{" else "a")
        elif c in "}]":
            if not stack:
                break
            stack.pop()
            obj_state.pop()
            if not stack:
                return [text[start : i + 1]]
            # cuts inside the container that just closed are superseded by this one
            for depth in [d for d in best if d > len(stack)]:
                del best[depth]
            value_done(i + 1)
        elif c == ":":
            if stack and stack[-1] == "{":
                obj_state[-1] = "v"
        elif c == ",":
            if stack and stack[-1] == "{":
                obj_state[-1] = "k"
        elif c not in " \t\r\n" and prim_start < 0:
            prim_start = i
        i += 1
    out = []
    for depth in sorted(best, reverse=True):
        end, open_stack = best[depth]
        closers = "".join("}" if s == "{" else "]" for s in reversed(open_stack))
        out.append(text[start:end] + closers)
    out.append("{}")
    return out


def _loads_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_candidates(text: str | None) -> list[tuple[dict[str, Any], bool]]:
    """Every JSON object recoverable from a model's answer, best first.

    Each entry is (object, repaired). The first entry is the answer itself when it is
    valid JSON; truncated answers give several cuts (most data first), so a caller can
    take the first one that its schema accepts.
    """
    if not text or not text.strip():
        return []
    direct = _loads_object(text)
    if direct is not None:
        return [(direct, False)]
    body = strip_wrappers(text)
    candidates: list[str] = [body]
    outer = outermost_object(body)
    if outer is not None:
        candidates.append(outer)
    for cand in list(candidates):
        fixed = _TRAILING_COMMA_RE.sub(r"\1", cand)
        if fixed != cand:
            candidates.append(fixed)
    for cand in candidates:
        obj = _loads_object(cand)
        if obj is not None:
            return [(obj, True)]
    found: list[tuple[dict[str, Any], bool]] = []
    if outer is None:
        for closed in close_truncated(_TRAILING_COMMA_RE.sub(r"\1", body)):
            obj = _loads_object(closed)
            if obj is not None and obj not in [f[0] for f in found]:
                found.append((obj, True))
    return found


def parse_json_reply(text: str | None) -> tuple[dict[str, Any], bool]:
    """Parse a model's answer into a JSON object (the best candidate).

    Returns the object and whether it had to be repaired. Raises `RepairFailed` when
    nothing usable is in the text.
    """
    found = json_candidates(text)
    if not found:
        raise RepairFailed(f"no JSON object in answer: {(text or '')[:120]!r}")
    return found[0]


def validate_reply(
    text: str | None,
    output_model: type[M],
    validate: Callable[[M], None] | None = None,
) -> tuple[M, bool]:
    """The first repair candidate of `text` that `output_model` (and `validate`) accept.

    Returns (result, repaired). Raises `RepairFailed` if the text holds no JSON object,
    or the first candidate's `ValueError` (pydantic's `ValidationError` is one) when
    none is accepted.
    """
    found = json_candidates(text)
    if not found:
        raise RepairFailed(f"no JSON object in answer: {(text or '')[:120]!r}")
    first_error: ValueError | None = None
    for obj, repaired in found:
        try:
            result = output_model.model_validate(obj)
            if validate is not None:
                validate(result)
        except ValueError as exc:
            first_error = first_error or exc
            continue
        return result, repaired
    assert first_error is not None
    raise first_error


def describe_error(exc: BaseException, limit: int = 1500) -> str:
    """Every validation error of `exc`, one line each (`loc: message (got input)`), at most
    `limit` characters; other errors as their message."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        lines = [f"{len(errors)} validation error(s) for {exc.title}:"]
        for e in errors:
            loc = ".".join(str(p) for p in e.get("loc", ())) or "(the whole answer)"
            got = json.dumps(e.get("input"), ensure_ascii=False, default=str)
            if len(got) > 80:
                got = got[:77] + "..."
            lines.append(f"- {loc}: {e.get('msg', '')} (got {got})")
        text = "\n".join(lines)
    else:
        text = str(exc) or type(exc).__name__
    if len(text) > limit:
        text = text[: max(0, limit - 12)] + " ... (more)"
    return text


_SCHEMA_KEYS = frozenset({"$defs", "properties", "$schema"})


def echo_hint(text: str | None, input: dict[str, Any]) -> str | None:
    """What to tell a model whose answer is the JSON schema or the input sent back, or None."""
    found = json_candidates(text)
    if not found:
        return None
    obj = found[0][0]
    if obj == input:
        return "You sent the input back unchanged instead of answering it."
    if _SCHEMA_KEYS & obj.keys() or (obj.get("type") == "object" and "required" in obj):
        return (
            "You sent back the JSON schema itself. Do not repeat the schema: answer with "
            "data, an object whose keys are the schema's properties."
        )
    return None


def repeating_tail(text: str | None, *, min_unit: int = 8, times: int = 4) -> str | None:
    """The passage an answer was repeating when it ended, or None.

    A small model under an enforced schema often loops inside a string ("It is a battery
    life indicator. It is a battery life indicator. ...") until `max_tokens` cuts it
    off; a larger `max_tokens` only buys a longer loop. Found as the shortest period
    `p` (`min_unit` characters or more) for which the last `(times - 1) * p`
    characters each equal the one `p` before them, wherever the cut fell in the unit.
    """
    if not text:
        return None
    tail = text[-1500:]
    n = len(tail)
    for period in range(min_unit, n // times + 1):
        need = (times - 1) * period
        k = n - 1 - period
        run = 0
        while run < need and k >= 0 and tail[k] == tail[k + period]:
            run += 1
            k -= 1
        if run >= need:
            return tail[n - period :]
    return None
