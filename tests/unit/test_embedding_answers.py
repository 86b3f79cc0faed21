"""An embeddings answer is untrusted: `_vectors` takes exactly one finite vector per input,
in input order, or raises ValueError (the call then counts as malformed)."""

from typing import Any

import pytest

from shared.llm.embeddings import _vectors


def _answer(*vectors: Any, order: list[int] | None = None) -> dict[str, Any]:
    idx = order or list(range(len(vectors)))
    return {"data": [{"index": i, "embedding": v} for i, v in zip(idx, vectors, strict=True)]}


def test_vectors_come_back_in_input_order() -> None:
    out = _vectors(_answer([0.0, 1.0], [1.0, 0.0], order=[1, 0]), 2)
    assert [list(v) for v in out] == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("answer", "inputs"),
    [
        ([], 1),  # not an object
        ({"data": "x"}, 1),
        ({"data": [{"index": "0", "embedding": [1.0]}]}, 1),  # index not an int
        ({"data": [{"index": 0, "embedding": "1.0"}]}, 1),  # vector not a list
        (_answer([1.0, 0.0], order=[1]), 1),  # wrong index
        (_answer([1.0, 0.0]), 2),  # one vector for two inputs
        (_answer([1.0, 0.0], [1.0]), 2),  # unequal widths
        (_answer([], []), 2),  # empty
        (_answer([1.0, "x"], [0.0, 1.0]), 2),  # not numbers
        (_answer([1e300, 0.0], [0.0, 1.0]), 2),  # beyond float32: would be inf
    ],
)
def test_a_hostile_answer_is_malformed(answer: Any, inputs: int) -> None:
    with pytest.raises(ValueError):
        _vectors(answer, inputs)
