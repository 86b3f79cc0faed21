"""API keys: generated once, shown once, stored only as a SHA-256 hash.

Keys are 32 random bytes, so a fast unsalted hash is enough: there is nothing to brute
force, and the API can look a key up by its hash on every request without a slow KDF.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import psycopg

KEY_PREFIX = "voc_"
TENANT_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


def hash_key(api_key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_api_key_sync(database_url: str, tenant: str) -> str:
    """Create `tenant` if needed and a new key for it; returns the key (only time it is seen)."""
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 of letters, digits, '_', '.', '-'")
    key = new_key()
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO tenants (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (tenant,))
        conn.execute(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix) VALUES (%s, %s, %s)",
            (hash_key(key), tenant, key[:8]),
        )
    return key
