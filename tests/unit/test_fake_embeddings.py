"""The fake LLM's embeddings: deterministic, unit length, synonyms across languages close."""

from __future__ import annotations

import base64
import math
from array import array

import pytest

from voc.fake_llm.embeddings import (
    DEFAULT_DIMENSIONS,
    EmbeddingRequestError,
    embed_text,
    embeddings_response,
)


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_deterministic_unit_float32() -> None:
    v = embed_text("sound: the sound is great")
    assert v == embed_text("sound: the sound is great")
    assert len(v) == DEFAULT_DIMENSIONS
    assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)
    assert list(array("f", v)) == v  # exactly float32 values
    assert len(embed_text("x", 64)) == 64


def test_synonyms_in_other_languages_are_close_other_concepts_far() -> None:
    sound = embed_text("sound: The sound is great.")
    for other in ("son: Le son est génial.", "音: 音がとても良い。", "Klang: Der Klang ist gut."):
        assert cos(sound, embed_text(other)) > 0.92, other
    assert cos(sound, embed_text("battery: The battery is great.")) < 0.4
    # the same concept with the opposite sentiment is clearly further away
    bad = embed_text("sound: The sound is terrible and disappointing.")
    assert cos(sound, bad) < 0.9


def test_the_answer_has_openai_shape_in_both_encodings() -> None:
    doc = embeddings_response({"input": ["a", "b"], "model": "m"}, "default")
    assert [d["index"] for d in doc["data"]] == [0, 1] and doc["model"] == "m"
    assert doc["usage"]["prompt_tokens"] == doc["usage"]["total_tokens"] > 0
    packed = embeddings_response({"input": "a", "encoding_format": "base64", "dimensions": 16}, "m")
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert len(raw) == 16 * 4
    assert list(array("f", raw)) == embed_text("a", 16)


@pytest.mark.parametrize(
    "req",
    [
        {"input": []},
        {"input": [1, 2]},
        {"input": [""]},
        {"input": "a", "dimensions": 3},
        {"input": "a", "dimensions": True},
        {"input": "a", "encoding_format": "hex"},
        [],
    ],
)
def test_bad_requests_are_refused(req: object) -> None:
    with pytest.raises(EmbeddingRequestError):
        embeddings_response(req, "m")
