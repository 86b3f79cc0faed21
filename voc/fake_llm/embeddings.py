"""Deterministic embeddings of the fake LLM (`POST /v1/embeddings`).

A vector is made of three parts, then normalised to unit length and rounded to float32
(what real providers send):

- **concept** (weight 2): the direction of each `LEXICON` dimension whose keywords occur
  in the text, in any of its languages ("sound", "son", "Klang", "音" all point the same
  way); the first concept found counts fully, later ones a quarter, so "sound: the bass
  and battery are fine" is mostly about sound. A text without any lexicon keyword points
  along one shared "general" direction, as real models put vague remarks near each other;
- **sentiment** (weight 1): a positive or a negative direction from the sign of the text's
  opinion score, read by the fake analyst's own sentiment model (`sentiment.py`: negation,
  intensifiers, contrast), none when it is neutral;
- **wording** (weight 0.5): a hash-based component of the text's words (CJK characters
  one by one), so different wordings of one concept are close but not identical.

With these weights two texts about one concept with the same sentiment have a cosine of
about 0.95, with different sentiments 0.78-0.87, and texts about different concepts
about 0.1 - which is what lets tests assert that "sound", "son" and "音" share a theme.
Directions are pseudo-random unit vectors seeded by a hash of their name: the same on
every machine and run.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import sys
from array import array
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

from voc.fake_llm.answers import LEXICON, KeywordIndex, detect_language
from voc.fake_llm.sentiment import opinion_marks, passage_score

DEFAULT_DIMENSIONS = 256
MIN_DIMENSIONS = 8
MAX_DIMENSIONS = 4096
MAX_INPUTS = 2048
CONCEPT_WEIGHT = 2.0
LATER_CONCEPT_WEIGHT = 0.25
SENTIMENT_WEIGHT = 1.0
WORDING_WEIGHT = 0.5
WORD_FEATURES = 8
GENERAL = "\x00general"

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


class EmbeddingRequestError(ValueError):
    """The request is not one the endpoint can answer (the server replies 400)."""


@cache
def _index() -> KeywordIndex:
    entries: list[tuple[tuple[str, str], Sequence[str]]] = [
        (("dim", d.name), d.keywords) for d in LEXICON
    ]
    return KeywordIndex(entries)


@lru_cache(maxsize=65_536)
def direction(name: str, dims: int) -> tuple[float, ...]:
    """The unit vector of a concept or sentiment: seeded by a hash of its name."""
    seed = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    v = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return tuple(x / norm for x in v)


@lru_cache(maxsize=65_536)
def _hashed(token: str, dims: int) -> tuple[tuple[int, float], ...]:
    """A word's sparse random direction: `WORD_FEATURES` signed positions from its hash
    (feature hashing: as good as a dense random vector for cosines, and cheap)."""
    digest = hashlib.blake2b(token.encode(), digest_size=4 * WORD_FEATURES).digest()
    out = []
    for k in range(WORD_FEATURES):
        n = int.from_bytes(digest[4 * k : 4 * k + 4], "big")
        out.append((n % dims, 1.0 if n & 0x80000000 else -1.0))
    return tuple(out)


def _tokens(text: str) -> list[str]:
    """Words, casefolded; CJK runs split into characters (they have no spaces)."""
    out: list[str] = []
    for w in _WORD_RE.findall(text.casefold()):
        if _CJK_RE.search(w):
            out.extend(ch for ch in w if not ch.isspace())
        else:
            out.append(w)
    return out


def _add(acc: list[float], v: Sequence[float], weight: float) -> None:
    for i, x in enumerate(v):
        acc[i] += weight * x


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm else v


def embed_text(text: str, dims: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake's embedding of one text: unit length, float32 values."""
    concepts: list[str] = []
    for h in _index().find(text):
        if h.label[1] not in concepts:
            concepts.append(h.label[1])
    opinion = passage_score(opinion_marks(text, detect_language(text)), 0, len(text))
    concept = [0.0] * dims
    for i, name in enumerate(concepts or [GENERAL]):
        _add(concept, direction(name, dims), 1.0 if i == 0 else LATER_CONCEPT_WEIGHT)
    wording = [0.0] * dims
    for tok in _tokens(text):
        for i, sign in _hashed(tok, dims):
            wording[i] += sign
    v = [0.0] * dims
    _add(v, _unit(concept), CONCEPT_WEIGHT)
    if opinion:
        _add(v, direction("positive" if opinion > 0 else "negative", dims), SENTIMENT_WEIGHT)
    _add(v, _unit(wording), WORDING_WEIGHT)
    return list(array("f", _unit(v)))


def _inputs(req: Any) -> list[str]:
    if not isinstance(req, dict):
        raise EmbeddingRequestError("request body must be a JSON object")
    raw = req.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise EmbeddingRequestError("'input' must be a string or a non-empty list of strings")
    if len(raw) > MAX_INPUTS:
        raise EmbeddingRequestError(f"at most {MAX_INPUTS} inputs per request")
    if not all(isinstance(t, str) and t for t in raw):
        raise EmbeddingRequestError("every input must be a non-empty string")
    return raw


def _dimensions(req: dict[str, Any]) -> int:
    dims = req.get("dimensions")
    if dims is None:
        return DEFAULT_DIMENSIONS
    if isinstance(dims, bool) or not isinstance(dims, int):
        raise EmbeddingRequestError("'dimensions' must be an integer")
    if not MIN_DIMENSIONS <= dims <= MAX_DIMENSIONS:
        raise EmbeddingRequestError(f"'dimensions' must be {MIN_DIMENSIONS}-{MAX_DIMENSIONS}")
    return dims


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def embeddings_response(req: Any, default_model: str) -> dict[str, Any]:
    """The `/v1/embeddings` answer to a parsed request body (OpenAI's shape)."""
    texts = _inputs(req)
    dims = _dimensions(req)
    encoding = req.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise EmbeddingRequestError("'encoding_format' must be 'float' or 'base64'")
    tokens = sum(len(t) // 4 + 1 for t in texts)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encoded(embed_text(t, dims), encoding),
            }
            for i, t in enumerate(texts)
        ],
        "model": str(req.get("model") or default_model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
