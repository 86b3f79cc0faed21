"""Exact in-upload deduplication in bounded memory.

An upload remembers a 128-bit digest of every accepted row's dedup key, so a repeated
review is counted as a duplicate instead of being forwarded. A Python `set` of `bytes`
costs ~83 bytes per row (the bytes object plus its slot), so a body of millions of tiny
rows would take hundreds of MB. `UploadDedup` keeps that fast set only for the first
`small_limit` rows (~5 MB) and then moves to `DigestTable`: open addressing over one
`array('Q')`, 16 bytes per slot at a load of 1/3 to 2/3, i.e. 24-48 bytes per row and no
object per row (72 for a moment while the table doubles).
A false duplicate needs two keys sharing 127 bits of their digest: out of reach.
"""

from __future__ import annotations

from array import array

DIGEST_BYTES = 16
SMALL_LIMIT = 65_536  # rows kept in a plain set (~5 MB) before the compact table


class DigestTable:
    """A set of 16-byte digests: linear probing over (hi, lo) pairs of 64-bit words.

    `hi` always has its lowest bit set, so a zero word marks an empty slot (one digest bit
    is given up for that). The table doubles when two thirds of its slots are taken.
    """

    def __init__(self, slots: int = 1 << 16) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self._slots = slots
        self._words = array("Q", [0]) * (2 * slots)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, digest: bytes) -> bool:
        """Insert `digest`; False if it was already present."""
        hi = int.from_bytes(digest[:8], "little") | 1
        lo = int.from_bytes(digest[8:16], "little")
        words = self._words
        mask = self._slots - 1
        i = lo & mask
        while True:
            word = words[2 * i]
            if word == 0:
                break
            if word == hi and words[2 * i + 1] == lo:
                return False
            i = (i + 1) & mask
        words[2 * i] = hi
        words[2 * i + 1] = lo
        self._count += 1
        if 3 * self._count > 2 * self._slots:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._words
        self._slots *= 2
        mask = self._slots - 1
        words = array("Q", [0]) * (2 * self._slots)
        for j in range(0, len(old), 2):
            hi = old[j]
            if hi:
                lo = old[j + 1]
                i = lo & mask
                while words[2 * i]:
                    i = (i + 1) & mask
                words[2 * i] = hi
                words[2 * i + 1] = lo
        self._words = words


class UploadDedup:
    """The digests of an upload's accepted rows: a set while small, then a `DigestTable`."""

    def __init__(self, small_limit: int = SMALL_LIMIT) -> None:
        self.small_limit = small_limit
        self._small: set[bytes] = set()
        self._table: DigestTable | None = None

    def __len__(self) -> int:
        return len(self._table) if self._table is not None else len(self._small)

    def add(self, digest: bytes) -> bool:
        """Remember `digest`; False if the upload already had it (a duplicate row)."""
        if self._table is not None:
            return self._table.add(digest)
        if digest in self._small:
            return False
        self._small.add(digest)
        if len(self._small) > self.small_limit:
            self._to_table()
        return True

    def _to_table(self) -> None:
        slots = 1 << 12
        while 3 * len(self._small) > 2 * slots:  # the smallest table under its max load
            slots *= 2
        table = DigestTable(slots)
        for digest in self._small:
            table.add(digest)
        self._table, self._small = table, set()
