"""What every upload parser produces: raw rows, format errors, the parser protocol.

A row that cannot be read comes back as a `RawRow` with an `error` and its 1-based row
number, so it is rejected alone; only a body whose structure is wrong before any row was
read raises `UploadFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

BOM = b"\xef\xbb\xbf"
WHITESPACE = b" \t\r\n"


class UploadFormatError(ValueError):
    """The body's structure is wrong (not a row-level problem); `status_code` is 400 or 422."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class RawRow:
    """One data row as read from the body: its parsed value, or why it could not be read."""

    row: int
    data: Any = None
    error: str | None = None


class RowParser(Protocol):
    """A push parser of one body format."""

    def feed(self, data: bytes) -> list[RawRow]:
        """Consume the next piece of the body; returns the rows it completed."""
        ...

    def close(self) -> list[RawRow]:
        """The body ended: return the remaining rows (raises `UploadFormatError`)."""
        ...


def json_row(row: int, raw: bytes | bytearray) -> RawRow:
    """A row parsed from JSON bytes, or rejected with orjson's reason."""
    try:
        return RawRow(row, orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        return RawRow(row, error=f"row: invalid JSON: {exc}")


def too_long(row: int, limit: int) -> RawRow:
    """A row rejected for its size."""
    return RawRow(row, error=f"row: longer than {limit} bytes")
