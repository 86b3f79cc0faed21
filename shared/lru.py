"""A small bounded LRU map with an optional time-to-live per entry.

Used where a process remembers answers of Postgres (API keys, deleted jobs): bounded so
an attacker who sends a million different keys costs a fixed amount of memory, and
least-recently-used first out, so such a flood evicts only other flood entries when it
has a map of its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `max_entries` items; an item also expires `ttl_s` after it was put (None:
    never). `clock` is injectable for tests."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return self.lookup(key)[0]  # type: ignore[arg-type]

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """`(found, value)` of a live entry (now the most recently used); a stored None
        is found, an expired or absent entry is not."""
        item = self._items.get(key)
        if item is None:
            return False, None
        value, expires = item
        if expires <= self._clock():
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        """Store `value`; `ttl_s` overrides the map's TTL for this entry (never longer)."""
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s or ttl_s)
        expires = float("inf") if ttl is None else self._clock() + ttl
        self._items[key] = (value, expires)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget `key` (no error if absent)."""
        self._items.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
