"""Per-tenant callback signing secrets, and the signature every callback carries.

Each tenant gets its own secret (`POST /v1/callback-secret`), so a tenant that can verify
its callbacks cannot forge another tenant's. The secret is never stored: Postgres keeps
only its id (`callback_secrets`), and the secret is derived from the id, the tenant and
the server's key `VOC_CALLBACK_SECRET` with HMAC-SHA256. The API derives it once to return
it; the report stage derives it again to sign. Reading the database is not enough to forge
a callback, and nothing can show a secret again after its creation (a lost one is replaced
by rotating). Changing `VOC_CALLBACK_SECRET` changes every tenant's secret at once.

Signature (see docs/callbacks.md): `X-Voc-Timestamp: <unix seconds>` and
`X-Voc-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, each `v1` an HMAC-SHA256 of
`timestamp + "." + body` with one of the tenant's current secrets (newest first: while a
rotation overlaps, old and new both sign). A receiver accepts if one `v1` matches its secret
and the timestamp is recent (replays are refused by age).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "vocwhsec_"
TOLERANCE_S = 300.0
_CONTEXT = b"vocstream callback secret v1\x00"


class SigningSettings(BaseSettings):
    """The server key per-tenant callback secrets are derived from."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    key: SecretStr | None = Field(default=None, validation_alias="VOC_CALLBACK_SECRET")


def derive_secret(key: bytes, tenant_id: str, secret_id: str) -> str:
    """The tenant's secret with id `secret_id` (what the tenant was given, as text)."""
    mac = hmac.new(
        key, _CONTEXT + tenant_id.encode() + b"\x00" + secret_id.encode(), hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `timestamp + "." + body` under `secret`."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[bytes], timestamp: str, body: bytes) -> str:
    """`t=<timestamp>,v1=<hex>` with one `v1` per secret, in the order given."""
    parts = [f"t={timestamp}"]
    parts.extend(f"{SIGNATURE_VERSION}={sign(s, timestamp, body)}" for s in secrets)
    return ",".join(parts)


def signed_headers(
    secrets: Sequence[bytes], body: bytes, now: float | None = None
) -> dict[str, str]:
    """The request headers of a callback: content type, timestamp and signature."""
    if not secrets:
        raise ValueError("a callback needs at least one signing secret")
    ts = str(int(time.time() if now is None else now))
    return {
        "content-type": "application/json",
        "user-agent": "vocstream-callbacks/2",
        "x-voc-timestamp": ts,
        "x-voc-signature": signature_header(secrets, ts, body),
    }


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the timestamp is recent, the header's `t` is that timestamp,
    and one of its `v1` signatures matches `secret`."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    if age > tolerance_s:
        return False
    fields = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in fields if k.strip() == "t"]
    if stamps and stamps != [timestamp]:
        return False
    expected = sign(secret, timestamp, body)
    # Compare every candidate (no early exit on a match).
    matches = [
        hmac.compare_digest(expected, v.strip())
        for k, _, v in fields
        if k.strip() == SIGNATURE_VERSION
    ]
    return any(matches)
