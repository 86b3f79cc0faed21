"""API-key authentication: a Bearer key resolves to exactly one tenant.

Keys are looked up by their SHA-256 (`shared.auth.hash_key`) in `api_keys`, revoked keys
excluded. Results, including "no such key", are kept in-process for a few seconds so a busy
client costs no database round trip per request; the key itself is never stored or logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_KEY_CHARS = 256  # real keys are ~50; longer tokens are refused before hashing


@dataclass(frozen=True, slots=True)
class Tenant:
    """The authenticated caller: its tenant and the hash of the key it used."""

    id: str
    key_hash: str


class KeyCache:
    """key hash -> tenant id (or None for an unknown key), each entry valid for `ttl_s`."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str | None, float]] = {}

    def get(self, key_hash: str) -> tuple[bool, str | None]:
        """`(hit, tenant_id)`; a hit with `None` means the key is known to be invalid."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return False, None
        tenant_id, expires = entry
        if expires < time.monotonic():
            del self._entries[key_hash]
            return False, None
        return True, tenant_id

    def put(self, key_hash: str, tenant_id: str | None) -> None:
        """Remember a lookup result."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; entries are cheap to refill
        self._entries[key_hash] = (tenant_id, time.monotonic() + self.ttl_s)
