"""JSON upload nesting is bounded (issue 12, defect 5): a body of `[[[[...` is refused at
the first level past the limit, so neither the bracket stack nor the scan grows with it."""

from __future__ import annotations

import pytest

from services.api.upload.parsing import JsonArrayParser, UploadFormatError

MAX_ROW = 256 * 1024


def test_json_nesting_deeper_than_the_limit_is_a_400_at_once() -> None:
    parser = JsonArrayParser(MAX_ROW)
    with pytest.raises(UploadFormatError) as err:
        for _ in range(100):  # 1 MB of '[' in network-sized pieces
            parser.feed(b"[" * 10_000)
    assert err.value.status_code == 400
    depth = JsonArrayParser.MAX_DEPTH
    assert err.value.message == (
        f"body: JSON nested deeper than {depth} levels at byte {depth + 1}; "
        "a review is an object of plain fields"
    )


def test_json_nesting_of_objects_is_bounded_too() -> None:
    parser = JsonArrayParser(MAX_ROW)
    with pytest.raises(UploadFormatError, match="nested deeper than"):
        parser.feed(b'[{"a":' * 5_000)


def test_json_nesting_within_the_limit_is_one_row() -> None:
    depth = JsonArrayParser.MAX_DEPTH - 1  # the element's own '{' is one level
    element = b'{"text":"deep","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    body = b"[" + element + b"]"
    for piece in (len(body), 1):  # whole (orjson's fast path) and byte by byte (the scanner)
        parser = JsonArrayParser(MAX_ROW)
        rows = [r for i in range(0, len(body), piece) for r in parser.feed(body[i : i + piece])]
        rows += parser.close()
        assert len(rows) == 1 and rows[0].error is None and rows[0].data["text"] == "deep"
