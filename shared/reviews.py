"""Validation and normalisation of one review row, shared by the API and ingest.

The API validates every uploaded row to answer with precise per-row errors; ingest runs
the same function again because anything may write to its input topic. Errors name the
field and the reason, so the API can report "row 17: rating: must be an integer 1-5".
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from shared.events import MAX_SHORT_CHARS, MAX_TEXT_CHARS, ReviewRow

FIELDS = ("text", "review_id", "rating", "language", "created_at", "author", "source")
_WS = re.compile(r"\s+")
_LANG = re.compile(r"^[a-zA-Z]{2,3}([-_][a-zA-Z0-9]{2,8})*$")
REVIEW_NS = uuid.UUID("5b0f8c1e-9a55-4c43-8f5e-3c9a0f6f2d10")
_REVIEW_NS_BYTES = REVIEW_NS.bytes


class RowError(ValueError):
    """A row field failed validation; `field` and the message say which and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _short(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(field, "must be a string")
    text = unicodedata.normalize("NFC", str(value)).strip()
    if "\x00" in text:
        raise RowError(field, "contains a NUL character")
    if len(text) > MAX_SHORT_CHARS:
        raise RowError(field, f"longer than {MAX_SHORT_CHARS} characters")
    return text or None


def _rating(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError("rating", "must be an integer 1-5")
    try:
        number = float(value) if isinstance(value, str) else value
    except (ValueError, OverflowError):
        raise RowError("rating", f"must be an integer 1-5, got {str(value)[:20]!r}") from None
    if (
        not isinstance(number, int | float)
        or not math.isfinite(number)
        or number != int(number)
        or not 1 <= number <= 5
    ):
        raise RowError("rating", f"must be an integer 1-5, got {str(value)[:20]!r}")
    return int(number)


def _created_at(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError("created_at", "must be an ISO 8601 date or date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RowError("created_at", f"not an ISO 8601 date: {value[:40]!r}") from None
    return parsed.isoformat()


def normalise_row(raw: Any) -> ReviewRow:
    """Validate one row and return its normalised fields; raises `RowError`.

    Text is NFC-normalised, trimmed, non-empty and at most 10,000 characters; rating is an
    integer 1-5; language a BCP 47 tag (lowercased primary subtag); created_at ISO 8601.
    Fields other than the known ones are ignored. What it returns always satisfies the
    `ReviewRow` contract of `shared.events`.
    """
    if not isinstance(raw, dict):
        raise RowError("row", "must be an object")
    text = raw.get("text")
    if text is None:
        raise RowError("text", "is required")
    if not isinstance(text, str):
        raise RowError("text", "must be a string")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise RowError("text", "is empty")
    if "\x00" in text:
        raise RowError("text", "contains a NUL character")
    if len(text) > MAX_TEXT_CHARS:
        raise RowError("text", f"longer than {MAX_TEXT_CHARS} characters ({len(text)})")
    language = _short("language", raw.get("language"))
    if language is not None:
        if not _LANG.match(language):
            raise RowError("language", f"not a language tag: {language[:20]!r}")
        language = language.split("-")[0].split("_")[0].lower()
    return {
        "text": text,
        "review_id": _short("review_id", raw.get("review_id")),
        "rating": _rating(raw.get("rating")),
        "language": language,
        "created_at": _created_at(raw.get("created_at")),
        "author": _short("author", raw.get("author")),
        "source": _short("source", raw.get("source")),
    }


def id_key(review_id: str) -> str:
    """The dedup key of a review the client gave a `review_id`."""
    return "id:" + review_id


def dedup_key(row: ReviewRow) -> str:
    """The key that makes a review unique in its job: its id, else its normalised text."""
    review_id = row.get("review_id")
    if review_id:
        return id_key(review_id)
    folded = _WS.sub(" ", row["text"].casefold()).strip()
    return "tx:" + hashlib.sha1(folded.encode()).hexdigest()


def review_uuid(job_id: str, key: str) -> str:
    """The review's deterministic id: the same review in the same job, the same id.

    Exactly `str(uuid.uuid5(REVIEW_NS, f"{job_id}\\x00{key}"))`, computed without building
    a `uuid.UUID` (ingest derives one per row; this is about twice as fast).
    """
    digest = bytearray(
        hashlib.sha1(
            _REVIEW_NS_BYTES + f"{job_id}\x00{key}".encode(), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
