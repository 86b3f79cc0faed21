"""Splitting a byte stream into bounded lines (for NDJSON and CSV)."""

from __future__ import annotations


class LineSplitter:
    """Splits a byte stream into lines (without the `\\n`), bounding each line's size.

    A line longer than `max_line_bytes` is not kept: it comes back as `None`, so the caller
    can reject it without the splitter ever holding more than the limit.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._oversize = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """Consume bytes; returns the lines they completed (`None` for an oversize line)."""
        out: list[bytes | None] = []
        limit = self.max_line_bytes
        buf = self._buf
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if self._oversize:
                out.append(None)
                self._oversize = False
            elif buf:
                buf += data[start:nl]
                out.append(bytes(buf) if len(buf) <= limit else None)
                buf.clear()
            else:
                out.append(data[start:nl] if nl - start <= limit else None)
            start = nl + 1
        if not self._oversize and start < len(data):
            buf += memoryview(data)[start:]
            if len(buf) > limit:
                self._oversize = True
                buf.clear()
        return out

    def close(self) -> list[bytes | None]:
        """The stream ended: the last line if it had no trailing newline."""
        if self._oversize:
            self._oversize = False
            return [None]
        if self._buf:
            last = bytes(self._buf)
            self._buf.clear()
            return [last]
        return []
