"""CSV uploads with a header row, parsed incrementally (quoted fields may span lines)."""

from __future__ import annotations

import csv
from collections import deque

from shared.reviews import FIELDS

from .lines import LineSplitter
from .rows import BOM, RawRow, UploadFormatError, too_long


def ends_in_quoted_field(line: str, in_quoted: bool) -> bool:
    """Whether a CSV record is still inside a quoted field at the end of `line`.

    Mirrors the csv module's default dialect: a field is quoted only if it starts with `"`,
    `""` inside it is an escaped quote, and a `"` elsewhere is an ordinary character.
    """
    if not in_quoted and '"' not in line:
        return False
    n = len(line)
    i = 0
    while True:
        if in_quoted:
            j = line.find('"', i)
            if j < 0:
                return True
            if j + 1 < n and line[j + 1] == '"':
                i = j + 2
                continue
            in_quoted = False
            k = line.find(",", j + 1)
            if k < 0:
                return False
            i = k + 1
        if i < n and line[i] == '"':
            in_quoted = True
            i += 1
            continue
        k = line.find(",", i)
        if k < 0:
            return False
        i = k + 1


class _LineQueue:
    """The line source of the persistent csv.reader: lines are pushed, the reader pulls."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()

    def __iter__(self) -> _LineQueue:
        return self

    def __next__(self) -> str:
        if self.lines:
            return self.lines.popleft()
        raise StopIteration


class CsvParser:
    """CSV with a header row: records may span lines inside quoted fields.

    Lines are collected until the record is complete (not inside a quoted field), then the
    record goes through one persistent `csv.reader`. Header names are case-insensitive; a
    `text` column is required and unknown columns are ignored.
    """

    def __init__(self, max_row_bytes: int) -> None:
        self.max_row_bytes = max_row_bytes
        self._lines = LineSplitter(max_row_bytes)
        self._source = _LineQueue()
        self._reader = csv.reader(self._source)
        self._header: list[str] | None = None
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._pending_error: str | None = None
        self._in_quoted = False
        self._first = True
        self._row = 0

    def feed(self, data: bytes) -> list[RawRow]:
        """Consume bytes; returns the records they completed."""
        out: list[RawRow] = []
        for line in self._lines.feed(data):
            self._line(line, out)
        return out

    def close(self) -> list[RawRow]:
        """The body ended: flush the last record; a record inside quotes is rejected."""
        out: list[RawRow] = []
        for line in self._lines.close():
            self._line(line, out)
        if self._pending:
            if self._in_quoted:
                if self._header is None:
                    raise UploadFormatError(
                        "CSV header row has an unterminated quoted field", status_code=422
                    )
                self._reset_pending()
                self._row += 1
                out.append(
                    RawRow(
                        self._row,
                        error="row: unterminated quoted field (the body ended inside quotes)",
                    )
                )
            else:
                self._flush_record(out)
        if self._header is None:
            raise UploadFormatError(
                "CSV body has no header row; the first row must name the columns, including 'text'",
                status_code=422,
            )
        return out

    def _line(self, line: bytes | None, out: list[RawRow]) -> None:
        if line is None:
            if self._header is None:
                raise UploadFormatError(
                    f"CSV header row is longer than {self.max_row_bytes} bytes", status_code=422
                )
            # The line's content is gone, so the quote state is unknown: end the record here.
            self._reset_pending()
            self._row += 1
            out.append(too_long(self._row, self.max_row_bytes))
            return
        if self._first:
            self._first = False
            if line.startswith(BOM):
                line = line[len(BOM) :]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = line.decode("utf-8", "replace")
            self._pending_error = self._pending_error or (
                f"row: not valid UTF-8 (byte {exc.start} of a line)"
            )
        self._pending.append(text + "\n")
        self._pending_bytes += len(line) + 1
        self._in_quoted = ends_in_quoted_field(text, self._in_quoted)
        if not self._in_quoted:
            self._flush_record(out)
        elif self._pending_bytes > self.max_row_bytes:
            if self._header is None:
                raise UploadFormatError(
                    f"CSV header row is longer than {self.max_row_bytes} bytes", status_code=422
                )
            self._reset_pending()
            self._row += 1
            out.append(
                RawRow(
                    self._row,
                    error=f"row: longer than {self.max_row_bytes} bytes "
                    "(an unterminated quoted field?)",
                )
            )

    def _reset_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._pending_error = None
        self._in_quoted = False

    def _flush_record(self, out: list[RawRow]) -> None:
        error = self._pending_error
        self._source.lines.extend(self._pending)
        self._reset_pending()
        while self._source.lines:
            try:
                fields = next(self._reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self._record(None, f"row: malformed CSV: {exc}", out)
                continue
            self._record(fields, error, out)

    def _record(self, fields: list[str] | None, error: str | None, out: list[RawRow]) -> None:
        if fields is not None and not fields:
            return  # a blank line is not a row
        if self._header is None:
            if fields is None or error:
                raise UploadFormatError(f"CSV header row is unreadable: {error}", status_code=422)
            self._set_header(fields)
            return
        self._row += 1
        if error or fields is None:
            out.append(RawRow(self._row, error=error or "row: malformed CSV"))
            return
        header = self._header
        if len(fields) != len(header):
            out.append(
                RawRow(
                    self._row,
                    error=f"row: has {len(fields)} fields but the header has {len(header)}",
                )
            )
            return
        out.append(RawRow(self._row, {k: v for k, v in zip(header, fields, strict=True) if k}))

    def _set_header(self, fields: list[str]) -> None:
        names = [f.strip().lower() for f in fields]
        seen: set[str] = set()
        for name in names:
            if name in FIELDS and name in seen:
                raise UploadFormatError(
                    f"CSV header names the column {name!r} twice", status_code=422
                )
            seen.add(name)
        if "text" not in seen:
            shown = ", ".join(repr(n) for n in names[:20])
            raise UploadFormatError(
                f"CSV header has no 'text' column (columns: {shown}); "
                f"known columns: {', '.join(FIELDS)}",
                status_code=422,
            )
        self._header = names
