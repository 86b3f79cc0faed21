"""Settings of the learn service; shared infrastructure settings come from
`shared.settings.CommonSettings` and the LLM's from `shared.llm.LLMSettings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LearnSettings(BaseSettings):
    """When a job is learned, from how big a sample, and how held batches are released."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    sample_size: int = Field(default=200, ge=1, validation_alias="VOC_LEARN_SAMPLE_SIZE")
    # A job that stays small is learned this long after its first held batch.
    timeout_s: float = Field(default=10.0, ge=0, validation_alias="VOC_LEARN_TIMEOUT_S")
    # While the LLM is unavailable a job waits for it; past this age it gets the default
    # model instead, so a long outage never leaves a job stuck.
    give_up_s: float = Field(default=600.0, ge=0, validation_alias="VOC_LEARN_GIVE_UP_S")
    tick_s: float = Field(default=0.5, gt=0, validation_alias="VOC_LEARN_TICK_S")
    # Held rows released per tick, shared among the jobs: bounds memory when a big job's
    # model appears, and one big job cannot take the whole tick.
    release_rows_per_tick: int = Field(
        default=200, ge=1, validation_alias="VOC_LEARN_RELEASE_ROWS_PER_TICK"
    )
    # Jobs learned at a time (one LLM call each); free slots go to the tenants in turn.
    concurrency: int = Field(default=4, ge=1, validation_alias="VOC_LEARN_CONCURRENCY")
    # Jobs with held batches looked at per tick, tenants interleaved.
    tick_jobs: int = Field(default=1000, ge=1, validation_alias="VOC_LEARN_TICK_JOBS")
    # How long a leader's claim on the batches it releases stands: past it (the leader
    # died before producing them) the next leader releases them again.
    claim_s: float = Field(default=60.0, gt=0, validation_alias="VOC_LEARN_CLAIM_S")
    sample_text_chars: int = Field(default=500, ge=50, validation_alias="VOC_LEARN_TEXT_CHARS")
    sample_total_chars: int = Field(
        default=40_000, ge=1000, validation_alias="VOC_LEARN_SAMPLE_CHARS"
    )
    # Records are ingest events of up to 50 reviews; handling is one small read per batch.
    max_records: int = Field(default=100, ge=1, validation_alias="VOC_LEARN_MAX_RECORDS")
    max_inflight: int = Field(default=2, ge=1, validation_alias="VOC_LEARN_MAX_INFLIGHT")
