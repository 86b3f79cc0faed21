"""Upload memory bounds (issue 12, defect 5): rows per upload are capped with a 413, and
the in-upload dedup costs a small, fixed number of bytes per row."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from services.api.upload import dedup
from services.api.upload.chunks import Chunk, ChunkBuilder
from services.api.upload.parsing import CsvParser
from services.api.upload.stream import TooManyRows, stream_upload

MAX_ROW = 256 * 1024


async def _body(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class _Sink:
    def __init__(self) -> None:
        self.sent = 0
        self.rows_sent = 0

    async def send(self, chunk: Chunk) -> None:
        self.sent += 1
        self.rows_sent += chunk.rows

    async def flush(self) -> None:
        return None

    def abandon(self) -> None:
        return None


def test_rows_per_upload_are_capped_with_a_413() -> None:
    body = b"text\n" + b"".join(b"r%d\n" % i for i in range(1500))
    sink = _Sink()
    with pytest.raises(TooManyRows) as err:
        asyncio.run(
            stream_upload(
                _body([body[i : i + 1000] for i in range(0, len(body), 1000)]),
                CsvParser(MAX_ROW),
                ChunkBuilder("j", "t", "u", max_rows=100),
                sink,
                max_bytes=1 << 20,
                max_rows=1000,
            )
        )
    assert err.value.status_code == 413
    assert str(err.value) == "upload has more than 1000 rows"
    assert sink.rows_sent <= 1000  # nothing past the limit was forwarded


def _digest(i: int) -> bytes:
    return hashlib.blake2b(b"%d" % i, digest_size=dedup.DIGEST_BYTES).digest()


def test_dedup_is_exact_across_the_switch_to_the_compact_table() -> None:
    seen = dedup.UploadDedup(small_limit=1000)
    assert all(seen.add(_digest(i)) for i in range(20_000))
    assert not any(seen.add(_digest(i)) for i in range(0, 20_000, 7))
    assert seen.add(_digest(20_000))
    assert len(seen) == 20_001


def test_dedup_memory_per_row_is_small_and_fixed() -> None:
    n, small = 40_000, 10_000
    digests = [_digest(i) for i in range(n)]
    tracemalloc.start()
    try:
        seen = dedup.UploadDedup(small_limit=small)
        for d in digests:
            seen.add(d)
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seen) == n
    # 16 bytes a slot at a load of 1/3..2/3; a set of bytes would hold ~83 bytes a row.
    assert now / n <= 48, f"{now / n:.0f} bytes per row"
    # The peak: the small set before the switch, or old and new table while it doubles.
    assert peak <= max(small * 100, 72 * n), f"peak {peak / n:.0f} bytes per row"
