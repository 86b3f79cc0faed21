"""JSON-array uploads, split into top-level elements incrementally (never parsed whole)."""

from __future__ import annotations

import re

import orjson

from .rows import BOM, WHITESPACE, RawRow, UploadFormatError, json_row, too_long

# Outside strings only these bytes change the splitter's state.
_STRUCTURAL = re.compile(rb'["{}\[\],]')
# Inside an object or array a ',' changes nothing: skip it with the rest in C.
_BRACKETS = re.compile(rb'["{}\[\]]')
# A string's body up to (not including) its closing quote; it always matches.
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_OPENER = {ord("}"): ord("{"), ord("]"): ord("[")}


class JsonArrayParser:
    """A JSON array of objects, split into its top-level elements without parsing the whole.

    Fast path: an object element ends at the first `}` after which the slice parses with
    orjson (a slice ending inside a string can never parse, so the first one that does is
    the element). Elements that do not finish within the bytes at hand, or are not plain
    objects, go through a careful scanner that tracks strings and brackets (jumping with a
    regex to the next byte that matters). A malformed element is rejected alone; one whose
    string never closes swallows what follows, which its error makes visible.

    Nesting deeper than `MAX_DEPTH` ends the body with a 400 at once: a review is an object
    of plain fields, and without the bound a body of `[[[[...` would grow the bracket stack
    by a byte and cost a Python step per byte of the upload.
    """

    FAST_ATTEMPTS = 8
    MAX_DEPTH = 64

    def __init__(self, max_row_bytes: int) -> None:
        self.max_row_bytes = max_row_bytes
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._offset = 0  # bytes of the body dropped from _buf so far (for messages)
        self._state = "before"  # before | between | element | after | done
        self._expect_element = True  # after '[' or ','
        self._elem_start = 0
        self._elem_error: str | None = None
        self._in_string = False
        self._stack = bytearray()  # open brackets of the current element
        self._oversize = False
        self._row = 0

    def feed(self, data: bytes) -> list[RawRow]:
        """Consume bytes; returns the elements they completed."""
        if self._state == "done":
            return []  # past trailing garbage, already reported: ignore the rest
        self._buf += data
        out: list[RawRow] = []
        self._scan(out)
        self._compact()
        return out

    def close(self) -> list[RawRow]:
        """The body ended: report an unfinished element or a missing `]`."""
        out: list[RawRow] = []
        if self._state == "before":
            raise UploadFormatError("body is empty; expected a JSON array of review objects")
        if self._state == "element" and not self._stack and not self._in_string:
            # A complete last scalar without the closing ']': keep it, report the bracket.
            self._emit(self._buf, len(self._buf), out)
            self._state = "between"
        if self._state == "element":
            self._row += 1
            out.append(
                RawRow(self._row, error="row: incomplete JSON value (the body ended inside it)")
            )
        elif self._state == "between":
            self._row += 1
            out.append(RawRow(self._row, error="body: the JSON array is not closed (missing ']')"))
        self._state = "done"
        return out

    # -- scanning --------------------------------------------------------------------------

    def _scan(self, out: list[RawRow]) -> None:
        buf = self._buf
        n = len(buf)
        pos = self._pos
        while pos < n:
            state = self._state
            if state == "element":
                pos = self._scan_element(buf, pos, out)
                if pos < 0:  # need more data
                    pos = n if pos == -1 else n - 1
                    break
                continue
            c = buf[pos]
            if c in WHITESPACE:
                pos += 1
                continue
            if state == "before":
                if self._offset + pos == 0 and c == BOM[0]:
                    if n < len(BOM) and BOM.startswith(buf):
                        break  # a BOM split across reads: wait for the rest of it
                    if buf.startswith(BOM):
                        pos += len(BOM)
                        continue
                if c != ord("["):
                    what = "an object" if c == ord("{") else f"{chr(c)!r}"
                    raise UploadFormatError(
                        f"body must be a JSON array of review objects; it starts with {what} "
                        f"at byte {self._offset + pos}"
                    )
                self._state = "between"
                pos += 1
            elif state == "between":
                if c == ord("]"):
                    self._state = "after"
                    pos += 1
                elif c == ord(","):
                    if self._expect_element:
                        self._row += 1
                        out.append(RawRow(self._row, error="row: empty array element"))
                    self._expect_element = True
                    pos += 1
                else:
                    error = None if self._expect_element else "row: missing ',' before it"
                    self._expect_element = False
                    if error is None and c == ord("{"):
                        end = self._fast_object(buf, pos, out)
                        if end > 0:
                            pos = end
                            continue
                    self._state = "element"
                    self._elem_start = pos
                    self._elem_error = error
                    self._in_string = False
                    self._stack.clear()
                    self._oversize = False
            else:  # after the closing ']': only whitespace may follow
                self._row += 1
                out.append(
                    RawRow(
                        self._row,
                        error=f"body: unexpected data after the closing ']' at byte "
                        f"{self._offset + pos}",
                    )
                )
                self._state = "done"
                pos = n
        self._pos = pos

    def _fast_object(self, buf: bytearray, start: int, out: list[RawRow]) -> int:
        """Parse a complete object at `start` in one go; its end, or -1 to scan carefully."""
        j = start
        limit = start + self.max_row_bytes
        for _ in range(self.FAST_ATTEMPTS):
            j = buf.find(b"}", j + 1)
            if j < 0 or j >= limit:
                return -1
            try:
                value = orjson.loads(buf[start : j + 1])
            except orjson.JSONDecodeError:
                continue
            self._row += 1
            out.append(RawRow(self._row, value))
            return j + 1
        return -1

    def _scan_element(self, buf: bytearray, pos: int, out: list[RawRow]) -> int:
        """Advance through one element; returns the next position, -1/-2 for 'need more'."""
        stack = self._stack
        while True:
            if self._in_string:
                # The string's body, escapes included, in one regex step: it stops at the
                # closing quote, or at the end of the bytes at hand (or just before a
                # backslash whose escaped byte has not arrived yet).
                body = _STRING_BODY.match(buf, pos)
                end = body.end() if body is not None else pos
                if end < len(buf) and buf[end] == ord('"'):
                    self._in_string = False
                    pos = end + 1
                    continue
                return -1 if end == len(buf) else -2
            m = (_BRACKETS if stack else _STRUCTURAL).search(buf, pos)
            if m is None:
                return -1
            j = m.start()
            c = buf[j]
            if c == ord('"'):
                self._in_string = True
                pos = j + 1
            elif c in (ord("{"), ord("[")):
                if len(stack) >= self.MAX_DEPTH:
                    raise UploadFormatError(
                        f"body: JSON nested deeper than {self.MAX_DEPTH} levels at byte "
                        f"{self._offset + j}; a review is an object of plain fields"
                    )
                stack.append(c)
                pos = j + 1
            elif c in (ord("}"), ord("]")):
                if stack:
                    if stack[-1] == _OPENER[c]:
                        stack.pop()
                        if not stack:  # the element's outer bracket closed
                            self._emit(buf, j + 1, out)
                            self._state = "between"
                            return j + 1
                    pos = j + 1  # a mismatched closer stays inside (the element fails)
                elif c == ord("]"):  # the array ends after a scalar element
                    self._emit(buf, j, out)
                    self._state = "after"
                    return j + 1
                else:
                    pos = j + 1  # a stray '}' after a scalar: the element fails to parse
            elif stack:  # ',' inside the element
                pos = j + 1
            else:  # ',' after a scalar element
                self._emit(buf, j, out)
                self._state = "between"
                self._expect_element = True
                return j + 1

    def _emit(self, buf: bytearray, end: int, out: list[RawRow]) -> None:
        self._row += 1
        if self._elem_error is not None:
            out.append(RawRow(self._row, error=self._elem_error))
        elif self._oversize or end - self._elem_start > self.max_row_bytes:
            out.append(too_long(self._row, self.max_row_bytes))
        else:
            out.append(json_row(self._row, bytes(buf[self._elem_start : end])))

    def _compact(self) -> None:
        """Drop consumed bytes; an oversize element's bytes are dropped as they are scanned."""
        if self._state == "element":
            keep_from = self._elem_start
            if self._oversize or self._pos - self._elem_start > self.max_row_bytes:
                self._oversize = True
                keep_from = self._pos
        else:
            keep_from = self._pos
        if keep_from:
            del self._buf[:keep_from]
            self._offset += keep_from
            self._pos -= keep_from
            self._elem_start = max(0, self._elem_start - keep_from)
