"""Per-tenant callback secrets and signatures, and the receiver snippet of docs/callbacks.md."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.callback_signing import (
    SECRET_PREFIX,
    derive_secret,
    sign,
    signature_header,
    signed_headers,
    verify_signature,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "callbacks.md"
KEY = b"server-key"
NOW = 1_700_000_000
BODY = b'{"event":"job.completed","job_id":"j1"}'


def test_secrets_differ_per_tenant_id_and_server_key() -> None:
    a = derive_secret(KEY, "tenant-a", "id-1")
    assert a.startswith(SECRET_PREFIX) and len(a) > len(SECRET_PREFIX) + 40
    assert derive_secret(KEY, "tenant-a", "id-1") == a  # derived again to sign
    others = {
        derive_secret(KEY, "tenant-b", "id-1"),
        derive_secret(KEY, "tenant-a", "id-2"),
        derive_secret(b"other-key", "tenant-a", "id-1"),
        # The separator keeps (tenant, id) pairs apart.
        derive_secret(KEY, "tenant-a\x00id", "-1"),
    }
    assert a not in others and len(others) == 4


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(b"s3cret", "1700000000", BODY) == expected
    header = signature_header([b"new", b"old"], "1700000000", BODY)
    assert header == (
        f"t=1700000000,v1={sign(b'new', '1700000000', BODY)},v1={sign(b'old', '1700000000', BODY)}"
    )
    with pytest.raises(ValueError, match="at least one signing secret"):
        signed_headers([], BODY)


def test_one_tenants_secret_does_not_verify_anothers_callback() -> None:
    a = derive_secret(KEY, "tenant-a", "id-a").encode()
    b = derive_secret(KEY, "tenant-b", "id-b").encode()
    headers = signed_headers([a], BODY, now=NOW)
    ts, sig = headers["x-voc-timestamp"], headers["x-voc-signature"]
    assert verify_signature(a, ts, BODY, sig, now=NOW + 10)
    assert not verify_signature(b, ts, BODY, sig, now=NOW + 10)


def test_verify_accepts_either_secret_while_a_rotation_overlaps() -> None:
    headers = signed_headers([b"new", b"old"], BODY, now=NOW)
    ts, sig = headers["x-voc-timestamp"], headers["x-voc-signature"]
    assert verify_signature(b"new", ts, BODY, sig, now=NOW)
    assert verify_signature(b"old", ts, BODY, sig, now=NOW)
    assert not verify_signature(b"older", ts, BODY, sig, now=NOW)


def test_verify_refuses_tampering_replays_and_mismatched_timestamps() -> None:
    headers = signed_headers([b"s"], BODY, now=NOW)
    ts, sig = headers["x-voc-timestamp"], headers["x-voc-signature"]
    assert not verify_signature(b"s", ts, BODY + b" ", sig, now=NOW)
    assert not verify_signature(b"s", ts, BODY, sig, now=NOW + 301)  # replayed later
    assert not verify_signature(b"s", ts, BODY, sig, now=NOW - 301)
    assert not verify_signature(b"s", "nope", BODY, sig, now=NOW)
    # A timestamp header moved forward to pass the age check: the signed `t` disagrees.
    assert not verify_signature(b"s", str(NOW + 200), BODY, sig, now=NOW + 400)


# -- the documented receiver snippet ----------------------------------------------------------


@pytest.fixture(scope="module")
def verify_callback() -> Callable[..., bool]:
    """`verify_callback` as docs/callbacks.md shows it, executed as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    snippet = next(b for b in blocks if "def verify_callback" in b)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    fn: Callable[..., bool] = namespace["verify_callback"]
    return fn


def test_documented_snippet_verifies_real_callbacks(verify_callback: Callable[..., bool]) -> None:
    secret = derive_secret(KEY, "tenant-a", "id-a")
    headers = signed_headers([secret.encode()], BODY, now=NOW)
    assert verify_callback(secret, headers, BODY, now=NOW + 5)
    rotated = signed_headers(
        [derive_secret(KEY, "tenant-a", "id-new").encode(), secret.encode()], BODY, now=NOW
    )
    assert verify_callback(secret, rotated, BODY, now=NOW)


def test_documented_snippet_refuses_forgeries_and_replays(
    verify_callback: Callable[..., bool],
) -> None:
    secret = derive_secret(KEY, "tenant-a", "id-a")
    other = derive_secret(KEY, "tenant-b", "id-b")
    headers = signed_headers([secret.encode()], BODY, now=NOW)
    assert not verify_callback(other, headers, BODY, now=NOW)
    assert not verify_callback(secret, headers, BODY.replace(b"j1", b"j2"), now=NOW)
    assert not verify_callback(secret, headers, BODY, now=NOW + 301)
    assert not verify_callback(
        secret, {**headers, "x-voc-timestamp": str(NOW + 200)}, BODY, now=NOW + 400
    )
    assert not verify_callback(secret, {}, BODY, now=NOW)
