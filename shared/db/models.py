"""SQLAlchemy 2 models: the tables every service reads and upserts.

Ids are deterministic (uuid5 of their natural key) wherever a row is derived from an event,
so replaying a topic upserts the same rows instead of adding new ones. Progress counts are
derived from these tables (COUNT(*) per job), never kept as counters that a replay could
double.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of all vocstream tables."""


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Tenant(Base):
    """A customer organisation; API keys and jobs belong to one."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    """An API key, stored only as its SHA-256 hash."""

    __tablename__ = "api_keys"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """An analysis job: its settings, its lifecycle status and the API's submitted count.

    `stalled_since` and `stall_reason` are set while the report stage sees the job stalled
    (status `stalled`: no review finished for the stall timeout), and cleared with it.
    """

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    product: Mapped[str] = mapped_column(Text, nullable=False)
    target_language: Mapped[str] = mapped_column(String(16), nullable=False)
    callback_url: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    status: Mapped[str] = mapped_column(String(24), nullable=False, server_default="created")
    submitted: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    sealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    stalled_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stall_reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index("ix_jobs_tenant_created", "tenant_id", "created_at"),)


class Upload(Base):
    """One accepted upload request, so a retried request can be recognised."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False)
    duplicates: Mapped[int] = mapped_column(Integer, nullable=False)
    rejected: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _now()


class Review(Base):
    """A review of a job, unique per (job, dedup key): id = uuid5(job, dedup key)."""

    __tablename__ = "reviews"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    origin: Mapped[str] = mapped_column(Text, nullable=False)  # upload:chunk:row first seen
    external_id: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    language: Mapped[str | None] = mapped_column(String(16))
    created_at_src: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[datetime] = _now()
    __table_args__ = (Index("ix_reviews_job", "job_id"),)


class IngestChunk(Base):
    """Outcome of one submitted chunk at ingest (replays rewrite the same numbers)."""

    __tablename__ = "ingest_chunks"
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # upload_id:chunk_no
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    accepted: Mapped[int] = mapped_column(Integer, nullable=False)
    duplicates: Mapped[int] = mapped_column(Integer, nullable=False)
    rejected: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (Index("ix_ingest_chunks_job", "job_id"),)


class JobModel(Base):
    """The learned analysis model of a job: dimensions and the 5W profile."""

    __tablename__ = "job_models"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dimensions: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    five_w: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    sample_size: Mapped[int] = mapped_column(Integer, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class LearnPending(Base):
    """A batch of reviews held back by `learn` until its job's model exists.

    `claimed_until`: a learn leader took the batch to release it and deletes it once its
    event is produced; until then no other replica releases it (a dead leader's claim
    expires, and the batch is released again).
    """

    __tablename__ = "learn_pending"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    batch_key: Mapped[str] = mapped_column(Text, primary_key=True)
    reviews: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Translation(Base):
    """A review's text in its job's target language (translated or skipped)."""

    __tablename__ = "translations"
    review_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    source_language: Mapped[str] = mapped_column(String(16), nullable=False)
    target_language: Mapped[str] = mapped_column(String(16), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    translated: Mapped[bool] = mapped_column(Boolean, nullable=False)
    __table_args__ = (Index("ix_translations_job", "job_id"),)


class ReviewInsightState(Base):
    """That a review went through insight extraction, and how many insights it gave."""

    __tablename__ = "review_insights"
    review_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    n_insights: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (Index("ix_review_insights_job", "job_id"),)


class InsightRow(Base):
    """An insight: id = uuid5(review id, position)."""

    __tablename__ = "insights"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    review_id: Mapped[str] = mapped_column(String(36), nullable=False)
    dimension: Mapped[str] = mapped_column(Text, nullable=False)
    aspect: Mapped[str] = mapped_column(Text, nullable=False)
    sentiment: Mapped[str] = mapped_column(String(8), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    quote: Mapped[str] = mapped_column(Text, nullable=False)
    quote_start: Mapped[int] = mapped_column(Integer, nullable=False)
    quote_end: Mapped[int] = mapped_column(Integer, nullable=False)
    five_w: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # The quote in the job's target language (NULL when the review is in it); the quote
    # itself and its offsets are in the review's original text.
    quote_translation: Mapped[str | None] = mapped_column(Text)
    external_review_id: Mapped[str | None] = mapped_column(Text)  # the client's review_id
    __table_args__ = (
        Index("ix_insights_job_dim", "job_id", "dimension"),
        # keyset pages of a job's insights (exports, listing) and one review's insights
        Index("ix_insights_job_id", "job_id", "id"),
        Index("ix_insights_job_review", "job_id", "review_id", "id"),
    )


class Theme(Base):
    """A theme of a job and dimension: id = uuid5(job, dimension, the insight that opened it).

    `centroid` is the sum of its members' unit embedding vectors (float64 little-endian),
    `size` their count, `sample` a few aspects and quotes it is named from, `seq` its
    opening order in the job. A merged theme keeps its row; `theme_merges` says where its
    members went (see `services.theme.core`).
    """

    __tablename__ = "themes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    dimension: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    opened_at: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    size: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    centroid: Mapped[bytes | None] = mapped_column(LargeBinary)
    sample: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    __table_args__ = (Index("ix_themes_job", "job_id"),)


class ThemeMerge(Base):
    """A merged theme and the theme holding its members now (chains compressed, so one
    lookup resolves any theme id an insight or event ever carried)."""

    __tablename__ = "theme_merges"
    theme_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    into_id: Mapped[str] = mapped_column(String(36), nullable=False)
    at_insight: Mapped[int] = mapped_column(Integer, nullable=False)  # job's placed count
    similarity: Mapped[float] = mapped_column(Float, nullable=False)
    __table_args__ = (Index("ix_theme_merges_job", "job_id"),)


class ThemeJob(Base):
    """A job's theme-placement state: how many insights and themes so far, and a version
    bumped by every batch that changed it (so a replica's cached state can be checked)."""

    __tablename__ = "theme_jobs"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    placed: Mapped[int] = mapped_column(Integer, nullable=False)
    opened: Mapped[int] = mapped_column(Integer, nullable=False)


class ThemeMember(Base):
    """An insight's theme as first assigned (never rewritten; resolve through
    `theme_merges`)."""

    __tablename__ = "theme_members"
    insight_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    theme_id: Mapped[str] = mapped_column(String(36), nullable=False)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    review_id: Mapped[str] = mapped_column(String(36), nullable=False)
    __table_args__ = (Index("ix_theme_members_job_theme", "job_id", "theme_id"),)


class ReviewThemed(Base):
    """That a review's insights (possibly none) went through theme assignment, and when
    first (a replay keeps `created_at`): the report stage's measure of a job's progress."""

    __tablename__ = "review_themed"
    review_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[datetime] = _now()
    __table_args__ = (Index("ix_review_themed_job", "job_id", "created_at"),)


class Report(Base):
    """A job's report: the JSON document the API and the HTML page serve."""

    __tablename__ = "reports"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    coverage: Mapped[float] = mapped_column(Float, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    generated_at: Mapped[datetime] = _now()


class DeadLetter(Base):
    """A record a stage gave up on: which, where it came from, and why."""

    __tablename__ = "dead_letters"
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # stage:review id or stage:t:p:o
    stage: Mapped[str] = mapped_column(String(16), nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(36))
    review_id: Mapped[str | None] = mapped_column(String(36))
    topic: Mapped[str] = mapped_column(Text, nullable=False)
    partition: Mapped[int] = mapped_column(Integer, nullable=False)
    offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    error_type: Mapped[str] = mapped_column(Text, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)  # the record, for redrive
    created_at: Mapped[datetime] = _now()
    redriven_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_dead_letters_job", "job_id"),
        Index("ix_dead_letters_stage_created", "stage", "created_at"),
    )


class CallbackSecret(Base):
    """A tenant's callback signing secret, by id only: the secret itself is derived from
    the id, the tenant and the server key (`shared.callback_signing`). `expires_at` is set
    when a rotation supersedes it (old and new both sign until then)."""

    __tablename__ = "callback_secrets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), nullable=False)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_callback_secrets_tenant_created", "tenant_id", "created_at"),)


class JobEvent(Base):
    """A `jobs.completed` event, written with the status transition it announces and
    produced from here (once per id `job_id:status`) by the report stage's leader."""

    __tablename__ = "job_events"
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), nullable=False)
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # job_id:status
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    value: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # the record value
    created_at: Mapped[datetime] = _now()
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    produced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_job_events_unproduced", "seq", postgresql_where="produced_at IS NULL"),
        Index("ix_job_events_job", "job_id"),
    )


class CallbackOutbox(Base):
    """A callback to POST: one row per (job, event), delivered with retries."""

    __tablename__ = "callback_outbox"
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # job_id:event
    job_id: Mapped[str] = mapped_column(String(36), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
