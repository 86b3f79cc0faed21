"""LLM free text made safe to put in a report: plain, short, and grounded.

The report's summary and recommended actions come from a model that was shown raw review
quotes, so a review can steer them (a prompt injection that adds a link, markup, an
invented "customer quote", or invisible characters that reorder what a reader sees).
Everything here is pure and total (any string in, a string out):

- `clean_text`: HTML entities decoded once, then `<script>`/`<style>` blocks, comments and
  tags removed; markdown links and images keep only their text; URLs (`http(s)`, `ftp`,
  `file`, `mailto`, `javascript:`, `vbscript:`, `data:`, `www.`) become `[link removed]`;
  markdown syntax (headings, quotes, bullets, emphasis, code marks, rules) is dropped;
  control characters, bidi overrides and isolates, zero-width and other invisible
  characters (and Unicode tag characters) are removed; whitespace collapses to single
  spaces; the result is cut at a word boundary to `max_chars` with an ellipsis.
- `Grounding` / `ground_quotes`: a span in quotation marks ("...", “...”, „...“, «...»,
  「...」) survives only if it occurs verbatim (whitespace, apostrophes and case aside) in
  the job's own texts: its insights' quotes, aspects, dimensions and theme names.
  Fragments joined by an ellipsis must all occur in one of them. Anything else becomes
  `[unverified quote removed]`. Unquoted words are the model's own and are only cleaned.
- `safe_narrative`: both applied to a summary and its actions, with per-field caps.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_SUMMARY_CHARS = 2000
MAX_TITLE_CHARS = 120
MAX_DETAIL_CHARS = 600
MAX_EVIDENCE_CHARS = 400
MAX_ACTIONS = 8
PRIORITIES = ("high", "medium", "low")
LINK_REMOVED = "[link removed]"
QUOTE_REMOVED = "[unverified quote removed]"
# Keys under which the report's aggregates hold the job's own words.
GROUNDING_KEYS = ("quote", "aspect", "dimension", "name")

# C0/C1 controls (tab, newline and CR are turned into spaces first), soft hyphen, Arabic
# letter mark, Mongolian vowel separator, zero-width space, LRM/RLM, bidi embeddings and
# overrides, word joiner and invisible operators, bidi isolates and deprecated format
# controls, BOM, interlinear annotations, Unicode tags, lone surrogates. ZWJ and ZWNJ
# stay: scripts and emoji need them.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
    "\ud800-\udfff]"
)
_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?(-->|$)", re.DOTALL)
_MD_TARGET = r"\((?:[^()\n]|\([^()\n]*\))*\)"  # `(url)`, one level of parentheses inside
_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]" + _MD_TARGET)
_MD_LINK = re.compile(r"\[([^\]\n]+)\](?:" + _MD_TARGET + r"|\[[^\]\n]*\])")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
# Web URLs anywhere (also glued to a word); the script schemes even spelled with spaces
# inside ("java script:"), as a browser reads them in a link; other schemes when a value
# follows the colon at once (so prose like "Key data: 40%" stays).
_URL = re.compile(
    r"(?:(?:https?|ftp)\s*:\s*//|\bwww\.|\b(?:"
    + "|".join(r"\s*".join(scheme) for scheme in ("javascript", "vbscript"))
    + r")\s*:|\b(?:data|file|mailto):(?=\S))\S*",
    re.IGNORECASE,
)
_MD_FENCE = re.compile(r"```[^\n]*")
_MD_LINE = re.compile(r"^[ \t]{0,3}(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+|[-*_]{3,}[ \t]*$)", re.M)
_MD_MARKS = re.compile(r"\*\*|__|~~|`")
_MD_EMPHASIS = re.compile(r"(?<![\w*])[*_](?=\S)([^*_\n]*?\S)[*_](?![\w*])")
_SPACES = re.compile(r"\s+")
_QUOTED = re.compile(
    r'"([^"\n]{1,2000})"|“([^”\n]{1,2000})”|„([^“”\n]{1,2000})[“”]'
    r"|«([^»\n]{1,2000})»|「([^」\n]{1,2000})」"
)
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|…)\s*")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'"})


def _plain(text: str) -> str:
    """`clean_text` without the length cap (and keeping quotation marks)."""
    text = html.unescape(text)
    text = text.replace("\t", " ").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _BLOCKS.sub(" ", text)
    text = _COMMENT.sub(" ", text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)  # also `<http://...>` autolinks, as a whole
    text = _URL.sub(LINK_REMOVED, text)
    text = _MD_FENCE.sub(" ", text)
    text = _MD_LINE.sub("", text)
    text = _MD_MARKS.sub("", text)
    text = _MD_EMPHASIS.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


def cap(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars`, at a word boundary, with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def clean_text(text: object, max_chars: int) -> str:
    """Plain, visible, link-free text of at most `max_chars` (see the module docstring)."""
    return cap(_plain("" if text is None else str(text)), max_chars)


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text.translate(_APOSTROPHES)).strip().casefold()


class Grounding:
    """The job's own texts, normalised for looking quotes up in them."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = [n for n in (_norm(_plain(t)) for t in texts) if n]

    def has(self, quote: str) -> bool:
        """Whether every ellipsis-separated fragment of `quote` is in one of the texts."""
        fragments = [_norm(f) for f in _ELLIPSIS.split(quote)]
        fragments = [f for f in fragments if f]
        if not fragments:
            return False
        return any(all(f in t for f in fragments) for t in self.texts)


def ground_quotes(text: str, grounding: Grounding) -> str:
    """`text` with every quoted span that is not in `grounding` replaced by a marker."""

    def keep_or_drop(m: re.Match[str]) -> str:
        inner = next(g for g in m.groups() if g is not None)
        return m.group(0) if grounding.has(inner) else QUOTE_REMOVED

    return _QUOTED.sub(keep_or_drop, text)


def texts_under(doc: Any, keys: Sequence[str] = GROUNDING_KEYS) -> list[str]:
    """Every string value under one of `keys`, anywhere in a JSON-like document."""
    out: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k in keys and isinstance(v, str):
                    out.append(v)
                else:
                    stack.append(v)
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return out


def safe_text(text: object, max_chars: int, grounding: Grounding) -> str:
    """Cleaned, quotes grounded, then capped."""
    return cap(ground_quotes(_plain("" if text is None else str(text)), grounding), max_chars)


def safe_narrative(
    summary: str, actions: Sequence[Mapping[str, Any]], grounding_texts: Iterable[str]
) -> tuple[str, list[dict[str, Any]]]:
    """A report's summary and actions as they may be shown: each field cleaned, its
    quotes grounded in `grounding_texts`, capped; at most `MAX_ACTIONS` actions, those
    left without a title dropped, an unknown priority read as medium."""
    grounding = Grounding(grounding_texts)
    out: list[dict[str, Any]] = []
    for action in actions[:MAX_ACTIONS]:
        title = safe_text(action.get("title"), MAX_TITLE_CHARS, grounding)
        if not title:
            continue
        priority = action.get("priority")
        out.append(
            {
                "title": title,
                "detail": safe_text(action.get("detail"), MAX_DETAIL_CHARS, grounding),
                "priority": priority if priority in PRIORITIES else "medium",
                "evidence": safe_text(action.get("evidence"), MAX_EVIDENCE_CHARS, grounding),
            }
        )
    return safe_text(summary, MAX_SUMMARY_CHARS, grounding), out
