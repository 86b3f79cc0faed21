"""Event contracts: one typed, versioned model per topic.

What flows on each topic is defined here and nowhere else; `shared.topics` pairs each
model with its topic name, key and partition count. Events travel as JSON (orjson).

Per-message overhead decides ingest throughput (a Kafka message costs far more than a row),
so review-carrying topics move *batches* of reviews of one job: an upload chunk on
`reviews.submitted`, up to a few hundred reviews per message downstream. A stage handles a
message's reviews together, which is also how it batches its LLM calls and its upserts.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Event(BaseModel):
    """Base of every topic payload: frozen, versioned, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """Serialise to the wire format (compact JSON, None fields kept)."""
        return orjson.dumps(self.model_dump(mode="json"))


class SubmittedRow(BaseModel):
    """One review row as the API accepted it (already validated and normalised)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    row: int = Field(description="1-based row number within its upload")
    text: str
    review_id: str | None = None
    rating: int | None = None
    language: str | None = None
    created_at: str | None = None
    author: str | None = None
    source: str | None = None


class ReviewsSubmitted(Event):
    """`reviews.submitted`: one chunk of an upload, as the API received it."""

    job_id: str
    tenant_id: str
    upload_id: str
    chunk_no: int
    rows: list[SubmittedRow]


class Review(BaseModel):
    """A stored review as it travels downstream (id is deterministic per job+dedup key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    rating: int | None = None
    language: str | None = None
    created_at: str | None = None


class ReviewsIngested(Event):
    """`reviews.ingested`: reviews that passed validation and dedup, stored in Postgres."""

    job_id: str
    reviews: list[Review]


class ReviewsLearned(Event):
    """`reviews.learned`: reviews released by `learn` once the job's model exists."""

    job_id: str
    target_language: str
    reviews: list[Review]


class TranslatedReview(BaseModel):
    """A review with its text in the job's target language."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str = Field(description="text in the target language (the original when skipped)")
    source_language: str
    translated: bool
    rating: int | None = None


class ReviewsTranslated(Event):
    """`reviews.translated`: reviews ready for insight extraction."""

    job_id: str
    target_language: str
    reviews: list[TranslatedReview]


class Insight(BaseModel):
    """One insight extracted from one review."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    review_id: str
    dimension: str
    aspect: str
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    quote: str
    quote_start: int
    quote_end: int
    five_w: dict[str, str | None] = Field(default_factory=dict)
    quote_translation: str | None = Field(
        default=None,
        description="the quote in the job's target language; None when the review is in it",
    )
    external_review_id: str | None = Field(
        default=None, description="the review_id the client uploaded"
    )


class InsightsExtracted(Event):
    """`insights.extracted`: the insights of a set of reviews (a review may have none)."""

    job_id: str
    review_ids: list[str]
    insights: list[Insight]


class ThemeAssignment(BaseModel):
    """An insight's membership of a theme."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    insight_id: str
    theme_id: str


class ThemesExtracted(Event):
    """`themes.extracted`: reviews whose insights now belong to themes."""

    job_id: str
    review_ids: list[str]
    assignments: list[ThemeAssignment]


class JobCompleted(Event):
    """`jobs.completed`: a job's report became ready (>= 90%) or final."""

    job_id: str
    tenant_id: str
    status: Literal["report_ready", "completed"]
    at: str
    coverage: float


def decode(model: type[Event], raw: bytes | None) -> Any:
    """Parse wire bytes into `model`; raises `pydantic.ValidationError` or `ValueError`."""
    if raw is None:
        raise ValueError("record has no value")
    return model.model_validate_json(raw)
