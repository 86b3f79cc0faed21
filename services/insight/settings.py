"""Settings of the insight service (concurrency and batching knobs); shared infrastructure
and LLM settings come from `shared.settings` and `shared.llm.settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InsightSettings(BaseSettings):
    """How many LLM calls one replica keeps in flight and how much it takes from Kafka."""

    model_config = SettingsConfigDict(extra="ignore")

    # One call per review at 300-1500 ms: a 200 req/s quota needs ~200 calls in flight
    # (plus a few queued in the shared limiter). Shared by every in-flight batch, FIFO, so
    # older batches are served first and commits are not held back by newer ones.
    concurrency: int = Field(default=256, ge=1, validation_alias="VOC_INSIGHT_CONCURRENCY")
    # Records carry up to ~50 reviews each: 8 records ~ 400 reviews per batch.
    max_records: int = Field(default=8, ge=1, validation_alias="VOC_INSIGHT_MAX_RECORDS")
    # Batches overlap so a batch's slowest call does not leave the quota idle.
    max_inflight: int = Field(default=4, ge=1, validation_alias="VOC_INSIGHT_MAX_INFLIGHT")
    # Learned job models kept in memory (they never change once written).
    model_cache_jobs: int = Field(default=1024, ge=1, validation_alias="VOC_INSIGHT_MODEL_CACHE")
    # Redis connections for the LLM limiter and cache; callers wait for a free one.
    redis_connections: int = Field(
        default=64, ge=1, validation_alias="VOC_INSIGHT_REDIS_CONNECTIONS"
    )
