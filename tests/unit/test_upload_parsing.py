"""Upload body parsing and chunking: incremental JSON array, NDJSON, CSV, row errors."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from services.api.upload.chunks import Chunk, ChunkBuilder
from services.api.upload.parsing import (
    BOM,
    BodyFormat,
    CsvParser,
    JsonArrayParser,
    LineSplitter,
    NdjsonParser,
    RawRow,
    RowParser,
    UnsupportedMediaType,
    UploadFormatError,
    body_format,
    ends_in_quoted_field,
    make_parser,
)
from shared.events import ReviewsSubmitted, SubmittedRow
from shared.reviews import normalise_row

MAX = 4096


def parse(parser: RowParser, body: bytes, piece: int | None = None) -> list[RawRow]:
    """Feed `body` in pieces of `piece` bytes (all at once if None), then close."""
    rows: list[RawRow] = []
    step = piece or max(1, len(body))
    for i in range(0, len(body), step):
        rows += parser.feed(body[i : i + step])
    return rows + parser.close()


def every_split(fmt: BodyFormat, body: bytes) -> list[list[RawRow]]:
    """The rows of `body` fed whole, byte by byte and in a few odd piece sizes."""
    return [parse(make_parser(fmt, MAX), body, piece) for piece in (None, 1, 2, 3, 7, 64)]


def assert_split_invariant(fmt: BodyFormat, body: bytes) -> list[RawRow]:
    results = every_split(fmt, body)
    for other in results[1:]:
        assert other == results[0]
    return results[0]


# -- content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "fmt"),
    [
        ("application/json", BodyFormat.JSON),
        ("application/json; charset=utf-8", BodyFormat.JSON),
        ("Application/X-NDJSON", BodyFormat.NDJSON),
        ("application/ndjson", BodyFormat.NDJSON),
        ("text/csv; charset=UTF-8; header=present", BodyFormat.CSV),
    ],
)
def test_body_format_from_content_type(header: str, fmt: BodyFormat) -> None:
    assert body_format(header) is fmt


@pytest.mark.parametrize(
    "header", [None, "", "text/plain", "application/xml", "text/csv; charset=latin-1"]
)
def test_unsupported_content_types(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        body_format(header)


# -- line splitting --------------------------------------------------------------------------


def test_line_splitter_bounds_lines_and_keeps_the_last_one() -> None:
    splitter = LineSplitter(max_line_bytes=5)
    out = splitter.feed(b"ab\ncdefgh") + splitter.feed(b"ij\nkl\n") + splitter.feed(b"mn")
    assert out + splitter.close() == [b"ab", None, b"kl", b"mn"]


# -- JSON array ------------------------------------------------------------------------------


def test_json_array_elements_in_any_split() -> None:
    docs = [
        {"text": "plain", "rating": 5},
        {"text": 'quotes " and \\ backslash, commas, [brackets] {braces}'},
        {"text": "unicode ✓ 好评 \u00e9", "nested": {"a": [1, {"b": "]"}]}},
    ]
    body = b"  [\n" + b" ,\n".join(orjson.dumps(d) for d in docs) + b"\n]  \n"
    rows = assert_split_invariant(BodyFormat.JSON, body)
    assert [r.row for r in rows] == [1, 2, 3]
    assert [r.data for r in rows] == docs
    assert all(r.error is None for r in rows)


def test_json_array_escaped_quote_split_between_backslash_and_quote() -> None:
    body = b'[{"text": "a \\" b"}, {"text": "c"}]'
    cut = body.index(b"\\") + 1
    parser = JsonArrayParser(MAX)
    rows = parser.feed(body[:cut]) + parser.feed(body[cut:]) + parser.close()
    assert [r.data for r in rows] == [{"text": 'a " b'}, {"text": "c"}]


def test_json_array_bad_element_is_rejected_alone() -> None:
    body = b'[{"text": "ok"}, {"text": "a"]}, {"text": "after"}]'
    rows = assert_split_invariant(BodyFormat.JSON, body)
    assert [r.data for r in rows] == [{"text": "ok"}, None, {"text": "after"}]
    assert rows[1].row == 2 and (rows[1].error or "").startswith("row: invalid JSON")
    # An unterminated string swallows the rest of the body: reported on the row it starts in.
    body = b'[{"text": "ok"}, {"text": "no closing quote}, {"text": "after"}]'
    rows = assert_split_invariant(BodyFormat.JSON, body)
    assert rows == [
        RawRow(1, {"text": "ok"}),
        RawRow(2, error="row: incomplete JSON value (the body ended inside it)"),
    ]


def test_json_array_invalid_elements_get_row_numbers() -> None:
    body = b'[{"text": "a"}, {"text": }, 42, , {"text": "b"},]'
    rows = assert_split_invariant(BodyFormat.JSON, body)
    assert [(r.row, r.error is None) for r in rows] == [
        (1, True),
        (2, False),
        (3, True),  # a number is valid JSON; normalise_row rejects it later
        (4, False),
        (5, True),
    ]
    assert rows[1].error is not None and rows[1].error.startswith("row: invalid JSON")
    assert rows[3].error == "row: empty array element"


def test_json_array_nested_values_and_missing_commas() -> None:
    body = b'[{"text": "}", "meta": {"a": {"b": [1, "}"]}}}, [1, 2] {"text": "x"}, "s", 3]'
    rows = assert_split_invariant(BodyFormat.JSON, body)
    assert [(r.row, r.data, r.error) for r in rows] == [
        (1, {"text": "}", "meta": {"a": {"b": [1, "}"]}}}, None),
        (2, [1, 2], None),
        (3, None, "row: missing ',' before it"),
        (4, "s", None),
        (5, 3, None),
    ]


def test_json_array_with_bom_and_empty() -> None:
    rows = assert_split_invariant(BodyFormat.JSON, BOM + b'[{"text": "x"}]')
    assert rows == [RawRow(1, {"text": "x"})]
    assert parse(JsonArrayParser(MAX), b" [ ] ") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"text": "an object"}', "starts with an object at byte 0"),
        (b"\n  nope", "starts with 'n' at byte 3"),
        (b"", "body is empty"),
        (b"   \n", "body is empty"),
    ],
)
def test_json_not_an_array_is_a_format_error(body: bytes, message: str) -> None:
    with pytest.raises(UploadFormatError, match=message):
        parse(JsonArrayParser(MAX), body)


def test_json_truncated_or_trailing_data_is_reported_as_a_row() -> None:
    rows = parse(JsonArrayParser(MAX), b'[{"text": "a"}, {"text": "b"')
    assert rows[0].data == {"text": "a"}
    assert rows[1] == RawRow(2, error="row: incomplete JSON value (the body ended inside it)")
    rows = parse(JsonArrayParser(MAX), b'[{"text": "a"}')
    assert rows[1] == RawRow(2, error="body: the JSON array is not closed (missing ']')")
    rows = parse(JsonArrayParser(MAX), b'[{"text": "a"}] [{"text": "b"}]', piece=5)
    assert rows[1].row == 2 and "after the closing ']' at byte 16" in (rows[1].error or "")
    assert len(rows) == 2


def test_json_oversize_element_is_dropped_while_streaming() -> None:
    parser = JsonArrayParser(max_row_bytes=100)
    big = orjson.dumps({"text": "x" * 10_000})
    body = b'[{"text": "small"},' + big + b',{"text": "after"}]'
    rows = []
    for i in range(0, len(body), 50):
        rows += parser.feed(body[i : i + 50])
        assert len(parser._buf) < 300  # never holds the big element
    rows += parser.close()
    assert [r.data for r in rows] == [{"text": "small"}, None, {"text": "after"}]
    assert rows[1].error == "row: longer than 100 bytes"


# -- NDJSON ----------------------------------------------------------------------------------


def test_ndjson_rows_blank_lines_crlf_bom_and_errors() -> None:
    body = BOM + b'{"text": "a"}\r\n\n  \n{"text": bad}\n{"text": "c"}'
    rows = assert_split_invariant(BodyFormat.NDJSON, body)
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].data == {"text": "a"}
    assert rows[1].error is not None and rows[1].error.startswith("row: invalid JSON")
    assert rows[2].data == {"text": "c"}


def test_ndjson_invalid_utf8_and_oversize_lines_are_row_errors() -> None:
    body = b'{"text": "\xff\xfe"}\n' + b'{"text": "' + b"y" * 200 + b'"}\n{"text": "ok"}\n'
    rows = parse(NdjsonParser(max_row_bytes=100), body, piece=16)
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].error is not None and "invalid JSON" in rows[0].error
    assert rows[1].error == "row: longer than 100 bytes"
    assert rows[2].data == {"text": "ok"}


# -- CSV -------------------------------------------------------------------------------------


def test_csv_quoted_multiline_fields_bom_and_crlf() -> None:
    body = (
        BOM + b"Review_ID,text,rating,extra\r\n"
        b'r1,"Great sound,\r\nbut ""tight"" fit",4,x\r\n'
        b'r2,"line one\n\nline three",,y\r\n'
        b"r3,simple,5,z"
    )
    rows = assert_split_invariant(BodyFormat.CSV, body)
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].data == {
        "review_id": "r1",
        "text": 'Great sound,\r\nbut "tight" fit',
        "rating": "4",
        "extra": "x",
    }
    assert rows[1].data["text"] == "line one\n\nline three"
    assert rows[2].data["text"] == "simple"


def test_csv_bad_rows_are_rejected_alone() -> None:
    body = b'text,rating\nok,5\ntoo,many,fields\n\nfew\n"bad \xff utf8",3\nlast,1\n'
    rows = assert_split_invariant(BodyFormat.CSV, body)
    assert [(r.row, r.error) for r in rows] == [
        (1, None),
        (2, "row: has 3 fields but the header has 2"),
        (3, "row: has 1 fields but the header has 2"),
        (4, "row: not valid UTF-8 (byte 5 of a line)"),
        (5, None),
    ]


def test_csv_unterminated_quote_is_bounded_and_reported() -> None:
    body = b'text\n"never closed\nmore\n'
    rows = parse(CsvParser(MAX), body)
    assert rows == [
        RawRow(1, error="row: unterminated quoted field (the body ended inside quotes)")
    ]
    parser = CsvParser(max_row_bytes=64)
    rows = parse(parser, b'text\n"open\n' + b"filler line\n" * 10 + b"good\n", piece=10)
    assert rows[0].error is not None and "unterminated quoted field?" in rows[0].error
    assert rows[-1].data == {"text": "good"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"review_id,rating\nr1,5\n", "no 'text' column"),
        (b"", "no header row"),
        (b"text,TEXT\na,b\n", "names the column 'text' twice"),
    ],
)
def test_csv_header_problems_are_format_errors(body: bytes, message: str) -> None:
    with pytest.raises(UploadFormatError, match=message) as info:
        parse(CsvParser(MAX), body)
    assert info.value.status_code == 422


@pytest.mark.parametrize(
    ("line", "in_quoted", "expected"),
    [
        ("a,b", False, False),
        ('a,"b', False, True),
        ('a,"b""', False, True),
        ('a,"b"""', False, False),
        ('a b"c,d', False, False),
        ("still inside", True, True),
        ('end" ,x,"y', True, True),
        ('end",x', True, False),
        ('"a","b",""', False, False),
    ],
)
def test_quote_state_matches_csv(line: str, in_quoted: bool, expected: bool) -> None:
    assert ends_in_quoted_field(line, in_quoted) is expected


# -- chunking --------------------------------------------------------------------------------


def raw_rows(docs: list[Any]) -> list[RawRow]:
    return [RawRow(i + 1, d) for i, d in enumerate(docs)]


def events(chunks: list[Chunk]) -> list[ReviewsSubmitted]:
    return [ReviewsSubmitted.model_validate_json(c.value) for c in chunks]


def build(builder: ChunkBuilder, rows: list[RawRow]) -> list[Chunk]:
    chunks = [c for r in rows if (c := builder.add(r)) is not None]
    last = builder.finish()
    return chunks + ([last] if last is not None else [])


def test_chunk_builder_validates_dedups_and_cuts() -> None:
    docs: list[Any] = [{"text": f"review {i}", "rating": 1 + i % 5} for i in range(12)]
    docs[3] = {"text": "  REVIEW   0 "}  # same text as row 1 once folded: duplicate
    docs[4] = {"text": "x", "rating": 9}
    docs[5] = {"rating": 3}
    docs[6] = "not an object"
    builder = ChunkBuilder("job", "tenant", "up", max_rows=3)
    chunks = build(builder, raw_rows(docs))
    s = builder.summary
    assert (s.rows, s.accepted, s.duplicates, s.rejected_count, s.chunks) == (12, 8, 1, 3, 3)
    assert s.rejected == [
        {"row": 5, "error": "rating: must be an integer 1-5, got '9'"},
        {"row": 6, "error": "text: is required"},
        {"row": 7, "error": "row: must be an object"},
    ]
    evs = events(chunks)
    assert [e.chunk_no for e in evs] == [0, 1, 2]
    assert [[r["row"] for r in e.rows] for e in evs] == [[1, 2, 3], [8, 9, 10], [11, 12]]
    assert [c.rows for c in chunks] == [3, 3, 2]
    assert chunks[1].key == b"job:up:1"


def test_unstorable_values_are_rejected_rows_not_errors() -> None:
    docs: list[Any] = [
        {"text": "nul \x00 inside"},
        {"text": "ok", "author": "a\x00b"},
        {"text": "nan rating", "rating": "nan"},
        {"text": "inf rating", "rating": "1e400"},
        {"text": "fine"},
    ]
    builder = ChunkBuilder("j", "t", "u")
    chunks = build(builder, raw_rows(docs))
    assert [e["row"] for e in builder.summary.rejected] == [1, 2, 3, 4]
    assert builder.summary.rejected[0]["error"] == "text: contains a NUL character"
    assert builder.summary.rejected[1]["error"] == "author: contains a NUL character"
    assert builder.summary.rejected[2]["error"] == "rating: must be an integer 1-5, got 'nan'"
    assert [c.rows for c in chunks] == [1]


def test_chunk_bytes_are_exactly_the_event_models_bytes() -> None:
    docs = [
        {"text": "Größe passt ✓", "review_id": 7, "rating": "4", "language": "de-DE"},
        {"text": "好评", "created_at": "2026-10-01T10:00:00Z", "author": "a", "source": "s"},
    ]
    builder = ChunkBuilder("job", "tenant", "up")
    (chunk,) = build(builder, raw_rows(docs))
    model = ReviewsSubmitted(
        job_id="job",
        tenant_id="tenant",
        upload_id="up",
        chunk_no=0,
        rows=[SubmittedRow(row=i + 1, **normalise_row(d)) for i, d in enumerate(docs)],
    )
    assert chunk.value == model.to_bytes()


def test_chunk_builder_cuts_on_bytes_and_caps_listed_rejections() -> None:
    builder = ChunkBuilder("j", "t", "u", max_rows=500, max_bytes=1000, max_listed=2)
    docs = [{"text": "y" * 300 + str(i)} for i in range(7)] + [{}] * 5
    chunks = build(builder, raw_rows(docs))
    assert [c.rows for c in chunks] == [2, 2, 2, 1]
    assert builder.summary.rejected_count == 5 and len(builder.summary.rejected) == 2


def test_same_body_same_chunks() -> None:
    body = b"\n".join(orjson.dumps({"text": f"r{i}"}) for i in range(1200))

    def run() -> list[bytes]:
        parser, builder = NdjsonParser(MAX), ChunkBuilder("j", "t", "u")
        rows = parse(parser, body, piece=1000)
        return [c.value for c in build(builder, rows)]

    first = run()
    assert len(first) == 3 and first == run()


def test_many_rows_fed_in_network_sized_pieces() -> None:
    lines = (orjson.dumps({"text": f"review number {i}", "rating": 1 + i % 5}) for i in range(5000))
    body = b"[" + b",".join(lines) + b"]"
    counter = itertools.count(1)
    rows = parse(JsonArrayParser(MAX), body, piece=65536)
    assert all(r.row == next(counter) and r.error is None for r in rows)
    assert len(rows) == 5000
