"""API-key authentication: a Bearer key resolves to exactly one tenant.

Keys are looked up by their SHA-256 (`shared.auth.hash_key`) in `api_keys`, revoked keys
excluded. Answers are kept in-process (`KeyCache`) so a busy client costs no database
round trip per request; the key itself is never stored or logged.

- Known keys and unknown keys live in two bounded LRUs: a flood of random keys evicts
  only other random keys, never a tenant's cached key (and never costs more memory).
- A key due to be revoked later (`voc keys rotate --grace`) is cached no longer than it
  stays valid.
- `invalidation.Invalidations` listens on Redis pub/sub
  (`shared.auth.KEYS_CHANGED_CHANNEL`): a revoked or rotated key is dropped from every
  replica's cache at once. Whenever the subscription is (re)established the whole cache
  is dropped, since messages may have been missed meanwhile; the cache TTL bounds what a
  missed message can cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.lru import LRU

MAX_KEY_CHARS = 256  # real keys are ~50; longer tokens are refused before hashing


@dataclass(frozen=True, slots=True)
class Tenant:
    """The authenticated caller: its tenant and the hash of the key it used."""

    id: str
    key_hash: str


class KeyCache:
    """key hash -> tenant id, or None for a key known to be invalid, each for `ttl_s`."""

    def __init__(
        self, ttl_s: float = 30.0, max_entries: int = 10_000, max_unknown: int = 10_000
    ) -> None:
        self.ttl_s = ttl_s
        self._known: LRU[str, str] = LRU(max_entries, ttl_s)
        self._unknown: LRU[str, None] = LRU(max_unknown, ttl_s)

    def get(self, key_hash: str) -> tuple[bool, str | None]:
        """`(hit, tenant_id)`; a hit with `None` means the key is known to be invalid."""
        hit, tenant = self._known.lookup(key_hash)
        if hit:
            return True, tenant
        hit, _ = self._unknown.lookup(key_hash)
        return hit, None

    def put(self, key_hash: str, tenant_id: str | None, valid_for_s: float | None = None) -> None:
        """Remember a lookup result (a key revoked in `valid_for_s` is kept no longer)."""
        if tenant_id is None:
            self._unknown.put(key_hash, None)
        else:
            self._unknown.pop(key_hash)
            self._known.put(key_hash, tenant_id, valid_for_s)

    def forget(self, key_hash: str) -> None:
        """Drop what is known about one key (it was revoked or rotated)."""
        self._known.pop(key_hash)
        self._unknown.pop(key_hash)

    def clear(self) -> None:
        """Drop everything."""
        self._known.clear()
        self._unknown.clear()
