"""Event contracts: one typed, versioned model per topic.

What flows on each topic is defined here and nowhere else; `shared.topics` pairs each
model with its topic name, key and partition count. Events travel as JSON (orjson).

Per-message overhead decides ingest throughput (a Kafka message costs far more than a row),
so review-carrying topics move *batches* of reviews of one job: an upload chunk on
`reviews.submitted`, up to a few hundred reviews per message downstream. A stage handles a
message's reviews together, which is also how it batches its LLM calls and its upserts.

The two topics that carry every uploaded row (`reviews.submitted`, `reviews.ingested`) are
produced by their model's own `encode` (and keyed by its `key`), straight from typed dicts:
building a pydantic model per row would cost more than everything else the API or ingest
does per row. Their rows are `TypedDict`s, so the one definition is both what mypy checks
producers against and what pydantic-core validates consumers with, constraints included
(every row that decodes can be stored: lengths, no NUL, rating 1-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, NotRequired

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from typing_extensions import TypedDict

SCHEMA_VERSION = 1

MAX_TEXT_CHARS = 10_000
MAX_SHORT_CHARS = 200
MAX_ID_CHARS = 36  # job and review ids are VARCHAR(36)
_NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold a NUL character

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=_NO_NUL)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SHORT_CHARS, pattern=_NO_NUL)]
JobId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_NO_NUL)]
Rating = Annotated[int, Field(strict=True, ge=1, le=5)]
# The primary language subtag, as `shared.reviews.normalise_row` leaves it.
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


class Event(BaseModel):
    """Base of every topic payload: frozen, versioned, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        """Serialise to the wire format (compact JSON, None fields kept)."""
        return orjson.dumps(self.model_dump(mode="json"))


def _key(fields: tuple[str, ...], parts: tuple[object, ...]) -> bytes:
    if len(parts) != len(fields):
        raise ValueError(f"a key is {':'.join(fields)}, got {len(parts)} parts")
    return ":".join(map(str, parts)).encode()


class ReviewRow(TypedDict):
    """One review row's fields after `shared.reviews.normalise_row` (which builds it).

    Only `text` is always there; a missing optional field and a None one mean the same.
    """

    text: Text
    review_id: NotRequired[Short | None]
    rating: NotRequired[Rating | None]
    language: NotRequired[Language | None]
    created_at: NotRequired[Short | None]
    author: NotRequired[Short | None]
    source: NotRequired[Short | None]


class SubmittedRow(ReviewRow):
    """A `ReviewRow` as the API accepted it, with its 1-based row number in the upload."""

    row: Annotated[int, Field(strict=True, ge=1)]


class ReviewsSubmitted(Event):
    """`reviews.submitted`: one chunk of an upload, as the API received it."""

    KEY: ClassVar[tuple[str, ...]] = ("job_id", "upload_id", "chunk_no")

    job_id: JobId
    tenant_id: str
    upload_id: Annotated[str, StringConstraints(pattern=_NO_NUL)]
    chunk_no: int
    rows: list[SubmittedRow]

    @classmethod
    def key(cls, job_id: str, upload_id: str, chunk_no: int) -> bytes:
        """The record key: unique per chunk, so an upload's chunks spread over partitions."""
        return _key(cls.KEY, (job_id, upload_id, chunk_no))

    @classmethod
    def encode(
        cls,
        *,
        job_id: str,
        tenant_id: str,
        upload_id: str,
        chunk_no: int,
        rows: Sequence[SubmittedRow],
    ) -> bytes:
        """The wire bytes of a chunk, byte for byte what `to_bytes()` of the model gives."""
        return orjson.dumps(
            {
                "v": SCHEMA_VERSION,
                "job_id": job_id,
                "tenant_id": tenant_id,
                "upload_id": upload_id,
                "chunk_no": chunk_no,
                "rows": rows,
            }
        )


class Review(BaseModel):
    """A stored review as it travels downstream (id is deterministic per job+dedup key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    rating: int | None = None
    language: str | None = None
    created_at: str | None = None
    external_id: str | None = Field(default=None, description="the review_id the client uploaded")


class ReviewFields(TypedDict):
    """The fields of a `Review` as a dict: what `ReviewsIngested.encode` takes."""

    id: str
    text: str
    rating: int | None
    language: str | None
    created_at: str | None
    external_id: str | None


class ReviewsIngested(Event):
    """`reviews.ingested`: reviews that passed validation and dedup, stored in Postgres."""

    KEY: ClassVar[tuple[str, ...]] = ("job_id", "upload_id", "chunk_no", "batch")

    job_id: str
    reviews: list[Review]

    @classmethod
    def key(cls, job_id: str, upload_id: str, chunk_no: int, batch: int) -> bytes:
        """The record key: the submitted chunk's key and the batch's number within it, so
        one chunk's reviews spread over partitions too."""
        return _key(cls.KEY, (job_id, upload_id, chunk_no, batch))

    @classmethod
    def encode(cls, job_id: str, reviews: Sequence[ReviewFields]) -> bytes:
        """The wire bytes of an event, byte for byte what `to_bytes()` of the model gives."""
        return orjson.dumps({"v": SCHEMA_VERSION, "job_id": job_id, "reviews": reviews})


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
    original_text: str | None = Field(
        default=None,
        description="the review as written, when `text` is a translation; None when `text` "
        "is the original (skipped, or an event from before this field)",
    )
    external_id: str | None = Field(default=None, description="the review_id the client uploaded")

    @property
    def original(self) -> str:
        """The review in its own language: what quotes are taken from."""
        return self.original_text if self.original_text is not None else self.text


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
