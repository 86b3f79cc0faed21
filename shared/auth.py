"""API keys: generated once, shown once, stored only as a SHA-256 hash; listed, revoked
and rotated by `voc keys`.

Keys are 32 random bytes, so a fast unsalted hash is enough: there is nothing to brute
force, and the API can look a key up by its hash on every request without a slow KDF.

A key is named by its *key id*, the first `KEY_ID_CHARS` hex digits of its hash (what
`voc keys list` shows; the key itself is never stored). Revoking or rotating a key
publishes its hash on `KEYS_CHANGED_CHANNEL`: every API replica drops it from its key
cache at once, so the key is refused on the next request wherever it arrives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "voc_"
TENANT_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
# What a key can look like (`new_key` makes 43 characters after the prefix); anything else
# is refused without a database lookup.
KEY_SHAPE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{16,128}}$")
KEY_ID_CHARS = 12
_KEY_ID_RE = re.compile(r"^[0-9a-f]{8,64}$")
# Redis pub/sub channel: a message is the hash of a key whose state changed.
KEYS_CHANGED_CHANNEL = "voc:api:keys:changed"


class KeyNotFound(LookupError):
    """No key matches the given key id (or matches several: the id is too short)."""


@dataclass(frozen=True)
class KeyInfo:
    """What is known about a stored key (never the key itself)."""

    key_id: str
    tenant_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(api_key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_id_of(key_hash: str) -> str:
    """The key id shown for a key hash."""
    return key_hash[:KEY_ID_CHARS]


def _libpq(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _insert_key(conn: psycopg.Connection[Any], tenant: str) -> str:
    key = new_key()
    conn.execute("INSERT INTO tenants (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (tenant,))
    conn.execute(
        "INSERT INTO api_keys (key_hash, tenant_id, prefix) VALUES (%s, %s, %s)",
        (hash_key(key), tenant, key[:8]),
    )
    return key


def create_api_key_sync(database_url: str, tenant: str) -> str:
    """Create `tenant` if needed and a new key for it; returns the key (only time it is seen)."""
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 of letters, digits, '_', '.', '-'")
    with psycopg.connect(_libpq(database_url)) as conn:
        return _insert_key(conn, tenant)


_KEY_COLUMNS = "key_hash, tenant_id, prefix, created_at, revoked_at"


def _info(row: tuple[Any, ...]) -> KeyInfo:
    key_hash, tenant_id, prefix, created_at, revoked_at = row
    return KeyInfo(key_id_of(key_hash), tenant_id, prefix, created_at, revoked_at)


def list_api_keys_sync(database_url: str, tenant: str | None = None) -> list[KeyInfo]:
    """Every key (of `tenant`, if given), oldest first."""
    query = f"SELECT {_KEY_COLUMNS} FROM api_keys"
    params: tuple[Any, ...] = ()
    if tenant is not None:
        query += " WHERE tenant_id = %s"
        params = (tenant,)
    with psycopg.connect(_libpq(database_url)) as conn:
        rows = conn.execute(query + " ORDER BY created_at, key_hash", params).fetchall()
    return [_info(r) for r in rows]


def _resolve(conn: psycopg.Connection[Any], key_or_id: str) -> str:
    """The one key hash that `key_or_id` (a key id, a longer hash prefix or the key) names."""
    if key_or_id.startswith(KEY_PREFIX):
        prefix = hash_key(key_or_id)
    elif _KEY_ID_RE.match(key_or_id):
        prefix = key_or_id
    else:
        raise KeyNotFound(f"{key_or_id!r} is neither a key id (8+ hex digits) nor an API key")
    rows = conn.execute(
        "SELECT key_hash FROM api_keys WHERE key_hash LIKE %s ORDER BY key_hash LIMIT 2",
        (prefix + "%",),
    ).fetchall()
    if not rows:
        raise KeyNotFound(f"no API key with id {key_id_of(prefix)}")
    if len(rows) > 1:
        raise KeyNotFound(f"key id {prefix} matches several keys: give more of its digits")
    return str(rows[0][0])


def publish_key_change(redis_url: str | None, key_hash: str) -> bool:
    """Tell every API replica to forget its cached answer for this key; False if Redis
    could not be reached (the replicas then notice within VOC_API_KEY_CACHE_TTL_S)."""
    if not redis_url:
        return False
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.publish(KEYS_CHANGED_CHANNEL, key_hash)
        finally:
            client.close()
    except (RedisError, OSError) as exc:
        log.warning("key change not published", extra={"error": type(exc).__name__})
        return False
    return True


def revoke_api_key_sync(
    database_url: str, redis_url: str | None, key_or_id: str
) -> tuple[KeyInfo, bool]:
    """Revoke a key now (an earlier revocation time is kept); returns the key and whether
    the replicas were told at once."""
    with psycopg.connect(_libpq(database_url)) as conn:
        key_hash = _resolve(conn, key_or_id)
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = least(coalesce(revoked_at, now()), now()) "
            f"WHERE key_hash = %s RETURNING {_KEY_COLUMNS}",
            (key_hash,),
        ).fetchone()
    assert row is not None  # resolved above, and keys are never deleted
    return _info(row), publish_key_change(redis_url, key_hash)


def rotate_api_key_sync(
    database_url: str, redis_url: str | None, key_or_id: str, grace_s: float = 0.0
) -> tuple[str, KeyInfo, bool]:
    """A new key for the same tenant, and the old one revoked after `grace_s` seconds (so
    clients can switch without a failed request). Returns the new key (only time it is
    seen), the old key's state and whether the replicas were told at once."""
    if grace_s < 0:
        raise ValueError("grace must not be negative")
    with psycopg.connect(_libpq(database_url)) as conn:
        key_hash = _resolve(conn, key_or_id)
        revoked = conn.execute(
            "SELECT revoked_at <= now() FROM api_keys WHERE key_hash = %s", (key_hash,)
        ).fetchone()
        if revoked is not None and revoked[0]:
            raise KeyNotFound(
                f"key {key_id_of(key_hash)} is revoked already: create a new one instead"
            )
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = least(coalesce(revoked_at, 'infinity'), "
            "now() + make_interval(secs => %s)) "
            f"WHERE key_hash = %s RETURNING {_KEY_COLUMNS}",
            (grace_s, key_hash),
        ).fetchone()
        assert row is not None
        old = _info(row)
        key = _insert_key(conn, old.tenant_id)
    return key, old, publish_key_change(redis_url, key_hash)
