"""Settings of the theme service; shared infrastructure and LLM settings come from
`shared.settings` and `shared.llm.settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ThemeSettings(BaseSettings):
    """How much the theme stage takes from Kafka at once, and what it remembers."""

    model_config = SettingsConfigDict(extra="ignore")

    # Records carry the insights of ~50 reviews; no LLM call per review here, so big batches.
    max_records: int = Field(default=50, ge=1, validation_alias="VOC_THEME_MAX_RECORDS")
    # One batch at a time per replica: theme names stay deterministic and never get named
    # twice (see services.theme.service). Raise only if naming latency becomes the limit.
    max_inflight: int = Field(default=1, ge=1, validation_alias="VOC_THEME_MAX_INFLIGHT")
    # Theme ids known to exist, kept to skip the existence read (they are never deleted).
    cache_themes: int = Field(default=200_000, ge=1, validation_alias="VOC_THEME_CACHE")
    # Redis connections for the LLM limiter and cache; callers wait for a free one.
    redis_connections: int = Field(default=16, ge=1, validation_alias="VOC_THEME_REDIS_CONNECTIONS")
