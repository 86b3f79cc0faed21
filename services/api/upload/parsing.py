"""Incremental (push) parsers for upload bodies: JSON array, NDJSON and CSV.

Each parser takes the body in pieces as they arrive (`feed(data)`) and returns the rows
those bytes completed; `close()` returns the rest. Memory is bounded by one row (at most
`max_row_bytes`) plus one network read, whatever the size of the upload, so 100k-row bodies
are never held at once. This module picks the parser for a Content-Type; the parsers live
in `ndjson`, `json_array` and `csv_rows`, their common types in `rows`.
"""

from __future__ import annotations

from enum import StrEnum

from .csv_rows import CsvParser, ends_in_quoted_field
from .json_array import JsonArrayParser
from .lines import LineSplitter
from .ndjson import NdjsonParser
from .rows import BOM, RawRow, RowParser, UploadFormatError

__all__ = [
    "BOM",
    "MEDIA_TYPES",
    "BodyFormat",
    "CsvParser",
    "JsonArrayParser",
    "LineSplitter",
    "NdjsonParser",
    "RawRow",
    "RowParser",
    "UnsupportedMediaType",
    "UploadFormatError",
    "body_format",
    "ends_in_quoted_field",
    "make_parser",
]


class BodyFormat(StrEnum):
    """The upload body formats the API accepts."""

    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"


MEDIA_TYPES: dict[str, BodyFormat] = {
    "application/json": BodyFormat.JSON,
    "application/x-ndjson": BodyFormat.NDJSON,
    "application/ndjson": BodyFormat.NDJSON,
    "application/jsonl": BodyFormat.NDJSON,
    "application/x-jsonlines": BodyFormat.NDJSON,
    "text/csv": BodyFormat.CSV,
    "application/csv": BodyFormat.CSV,
}


class UnsupportedMediaType(ValueError):
    """The Content-Type is not one the upload endpoint reads (HTTP 415)."""


def body_format(content_type: str | None) -> BodyFormat:
    """The body format named by a Content-Type header; raises `UnsupportedMediaType`."""
    accepted = ", ".join(sorted(set(MEDIA_TYPES) - {"application/csv", "application/jsonl"}))
    if not content_type:
        raise UnsupportedMediaType(f"Content-Type is required; use one of: {accepted}")
    media, _, params = content_type.partition(";")
    fmt = MEDIA_TYPES.get(media.strip().lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media.strip()[:80]!r}; use one of: {accepted}"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(f"unsupported charset {charset[:40]!r}; use utf-8")
    return fmt


def make_parser(fmt: BodyFormat, max_row_bytes: int) -> RowParser:
    """A fresh parser for `fmt` whose rows may be at most `max_row_bytes` long."""
    if fmt is BodyFormat.JSON:
        return JsonArrayParser(max_row_bytes)
    if fmt is BodyFormat.NDJSON:
        return NdjsonParser(max_row_bytes)
    return CsvParser(max_row_bytes)
