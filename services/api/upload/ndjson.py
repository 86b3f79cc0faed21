"""Newline-delimited JSON uploads, parsed incrementally line by line."""

from __future__ import annotations

from .lines import LineSplitter
from .rows import BOM, WHITESPACE, RawRow, json_row, too_long


class NdjsonParser:
    """Newline-delimited JSON: one object per non-blank line, each parsed with orjson."""

    def __init__(self, max_row_bytes: int) -> None:
        self.max_row_bytes = max_row_bytes
        self._lines = LineSplitter(max_row_bytes)
        self._row = 0
        self._first = True

    def feed(self, data: bytes) -> list[RawRow]:
        """Consume bytes; returns one row per completed non-blank line."""
        return self._rows(self._lines.feed(data))

    def close(self) -> list[RawRow]:
        """The body ended: the last line, if it had no newline."""
        return self._rows(self._lines.close())

    def _rows(self, lines: list[bytes | None]) -> list[RawRow]:
        out: list[RawRow] = []
        for line in lines:
            if line is None:
                self._first = False
                self._row += 1
                out.append(too_long(self._row, self.max_row_bytes))
                continue
            if self._first:
                self._first = False
                if line.startswith(BOM):
                    line = line[len(BOM) :]
            line = line.strip(WHITESPACE)
            if not line:
                continue
            self._row += 1
            out.append(json_row(self._row, line))
        return out
