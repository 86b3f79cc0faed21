"""The pure core of an upload: validate rows, drop in-upload duplicates, cut chunks.

`ChunkBuilder` sees the rows of one upload in order and returns a `Chunk` (one
`ReviewsSubmitted` event, serialised) whenever one is full: `max_rows` rows or about
`max_bytes` of text. It keeps only a 128-bit digest per accepted row's dedup key (in
`dedup.UploadDedup`, at most ~48 bytes a row) and the first `max_listed` rejections, so
its memory stays small for any upload size. The same
body always yields the same chunks, so a retried upload (same Idempotency-Key, hence the
same upload id) produces identical events.

Rows are validated by `shared.reviews.normalise_row`, which yields a `ReviewRow` of the
topic contract; the chunk is serialised by `ReviewsSubmitted.encode` straight from those
dicts, byte for byte what the model's `to_bytes()` produces (a unit test holds the two
together). This is the only validation a row gets: ingest trusts the contract, whose
constraints every row that decodes satisfies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.events import ReviewsSubmitted, SubmittedRow
from shared.reviews import RowError, dedup_key, normalise_row

from .dedup import DIGEST_BYTES, UploadDedup
from .rows import RawRow

ROW_OVERHEAD_BYTES = 96  # JSON keys and punctuation of a row in the event


@dataclass
class UploadSummary:
    """What became of an upload's rows."""

    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected_count: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    bytes_read: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One `ReviewsSubmitted` event ready to produce: its number, Kafka key and value."""

    chunk_no: int
    key: bytes
    value: bytes
    rows: int


class ChunkBuilder:
    """Turns an upload's raw rows into `ReviewsSubmitted` chunks and an `UploadSummary`."""

    def __init__(
        self,
        job_id: str,
        tenant_id: str,
        upload_id: str,
        *,
        max_rows: int = 500,
        max_bytes: int = 512 * 1024,
        max_listed: int = 1000,
    ) -> None:
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.upload_id = upload_id
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_listed = max_listed
        self.summary = UploadSummary()
        # 128-bit digests of the dedup keys: a false duplicate (a silently dropped row)
        # is out of reach, and memory per row is fixed (see `dedup`).
        self._seen = UploadDedup()
        self._rows: list[SubmittedRow] = []
        self._bytes = 0

    def add(self, raw: RawRow) -> Chunk | None:
        """Take one row; returns a chunk when this row completed one."""
        summary = self.summary
        summary.rows += 1
        if raw.error is not None:
            self._reject(raw.row, raw.error)
            return None
        try:
            row = normalise_row(raw.data)
        except RowError as exc:
            self._reject(raw.row, str(exc))
            return None
        digest = hashlib.blake2b(dedup_key(row).encode(), digest_size=DIGEST_BYTES).digest()
        if not self._seen.add(digest):
            summary.duplicates += 1
            return None
        summary.accepted += 1
        size = ROW_OVERHEAD_BYTES + len(row["text"].encode())
        chunk = None
        if self._rows and (len(self._rows) >= self.max_rows or self._bytes + size > self.max_bytes):
            chunk = self._cut()
        self._rows.append(SubmittedRow(**row, row=raw.row))
        self._bytes += size
        return chunk

    def finish(self) -> Chunk | None:
        """The upload ended: the last, partly filled chunk (if any)."""
        return self._cut() if self._rows else None

    def _reject(self, row: int, error: str) -> None:
        self.summary.rejected_count += 1
        if len(self.summary.rejected) < self.max_listed:
            self.summary.rejected.append({"row": row, "error": error})

    def _cut(self) -> Chunk:
        chunk_no = self.summary.chunks
        value = ReviewsSubmitted.encode(
            job_id=self.job_id,
            tenant_id=self.tenant_id,
            upload_id=self.upload_id,
            chunk_no=chunk_no,
            rows=self._rows,
        )
        key = ReviewsSubmitted.key(self.job_id, self.upload_id, chunk_no)
        chunk = Chunk(chunk_no, key, value, len(self._rows))
        self.summary.chunks += 1
        self._rows = []
        self._bytes = 0
        return chunk
