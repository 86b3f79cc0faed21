"""The wire contract of the row-carrying topics: each model encodes and keys its own
records, and decoding enforces what storage needs, so no producer can get an unstorable
row past it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from shared.events import (
    Review,
    ReviewFields,
    ReviewsIngested,
    ReviewsSubmitted,
    SubmittedRow,
)
from shared.reviews import normalise_row
from shared.topics import REVIEWS_INGESTED, REVIEWS_SUBMITTED

GOOD_ROW: dict[str, Any] = {"row": 1, "text": "fine", "rating": 4, "language": "de"}


def chunk_json(row: dict[str, Any] | None = None, **fields: Any) -> bytes:
    doc = {"v": 1, "job_id": "j", "tenant_id": "t", "upload_id": "u", "chunk_no": 0}
    return orjson.dumps(doc | {"rows": [GOOD_ROW if row is None else row]} | fields)


def test_a_valid_chunk_decodes() -> None:
    event = ReviewsSubmitted.model_validate_json(chunk_json())
    assert event.rows == [GOOD_ROW]


@pytest.mark.parametrize(
    "row",
    [
        {"row": 1, "text": ""},
        {"row": 1, "text": "x" * 10_001},
        {"row": 1, "text": "nul \x00 inside"},
        {"row": 1, "text": "ok", "author": "a\x00b"},
        {"row": 1, "text": "ok", "review_id": "r" * 201},
        {"row": 1, "text": "ok", "rating": 9},
        {"row": 1, "text": "ok", "rating": "4"},  # the API sends numbers
        {"row": 1, "text": "ok", "rating": True},
        {"row": 1, "text": "ok", "language": "EN-gb"},  # the API keeps the primary subtag
        {"row": 1, "text": "ok", "language": "not a tag!"},
        {"row": 0, "text": "ok"},
        {"row": 1, "text": "ok", "extra": 1},
        {"text": "no row number"},
    ],
)
def test_rows_the_api_would_not_send_do_not_decode(row: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReviewsSubmitted.model_validate_json(chunk_json(row))


@pytest.mark.parametrize("fields", [{"job_id": "j" * 37}, {"job_id": ""}, {"upload_id": "a\x00"}])
def test_unstorable_chunk_ids_do_not_decode(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReviewsSubmitted.model_validate_json(chunk_json(**fields))


def test_every_normalised_row_satisfies_the_contract() -> None:
    raw = [
        {"text": "  Größe passt ✓ ", "review_id": 7, "rating": "4.0", "language": "de-DE"},
        {"text": "好评", "created_at": "2026-10-01T10:00:00Z", "author": "a", "source": "s"},
        {"text": "x" * 10_000, "language": "zh_Hant"},
    ]
    rows = [SubmittedRow(**normalise_row(r), row=i + 1) for i, r in enumerate(raw)]
    value = ReviewsSubmitted.encode(job_id="j", tenant_id="t", upload_id="u", chunk_no=3, rows=rows)
    event = ReviewsSubmitted.model_validate_json(value)
    assert event.rows == rows
    assert event.to_bytes() == value  # encode writes what the model would write


def test_ingested_encode_is_the_models_bytes() -> None:
    reviews = [
        ReviewFields(
            id="a", text="t", rating=None, language="en", created_at=None, external_id=None
        ),
        ReviewFields(
            id="b", text="ü", rating=5, language=None, created_at="2024-01-02", external_id="c-9"
        ),
    ]
    value = ReviewsIngested.encode("job", reviews)
    event = ReviewsIngested.model_validate_json(value)
    assert [r.model_dump() for r in event.reviews] == reviews
    assert event.to_bytes() == value
    assert list(ReviewFields.__annotations__) == list(Review.model_fields)


def test_keys_are_built_from_the_fields_the_registry_names() -> None:
    assert REVIEWS_SUBMITTED.key == "job_id:upload_id:chunk_no"
    assert ReviewsSubmitted.key("j", "u", 4) == b"j:u:4"
    assert REVIEWS_INGESTED.key == "job_id:upload_id:chunk_no:batch"
    assert ReviewsIngested.key("j", "u", 4, 2) == b"j:u:4:2"
