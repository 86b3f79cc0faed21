"""Schemathesis hooks of `test_schemathesis.py` (loaded with SCHEMATHESIS_HOOKS=st_hooks).

The upload's NDJSON body is declared as a string (its rows are free-form lines): send the
generated value as the body as it is, so the parser meets whatever the fuzzer drew.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """A string as its UTF-8 bytes (surrogates kept), anything else as one JSON line."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    # the standard library, not orjson: it writes integers beyond 64 bits too, which a
    # client may send and the API must refuse with a 4xx
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
