"""Settings of the theme service; shared infrastructure, LLM and embedding settings come from
`shared.settings`, `shared.llm.settings` and `shared.llm.embeddings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.theme.core import ClusterParams

_DEFAULTS = ClusterParams()


class ThemeSettings(BaseSettings):
    """How much the theme stage takes from Kafka at once, what it remembers, and how it
    clusters (`services.theme.core`; every replica must run with the same values)."""

    model_config = SettingsConfigDict(extra="ignore")

    # Records carry the insights of ~50 reviews; no LLM call per review here, so big batches.
    max_records: int = Field(default=50, ge=1, validation_alias="VOC_THEME_MAX_RECORDS")
    # One batch at a time per replica: a job's insights are placed strictly in partition
    # order (see services.theme.core). Do not raise it.
    max_inflight: int = Field(default=1, ge=1, le=1, validation_alias="VOC_THEME_MAX_INFLIGHT")
    # Jobs whose theme state (centroids, counts) stays in memory between batches.
    cache_jobs: int = Field(default=64, ge=1, validation_alias="VOC_THEME_CACHE_JOBS")
    # Redis connections for the LLM limiter and cache; callers wait for a free one.
    redis_connections: int = Field(default=16, ge=1, validation_alias="VOC_THEME_REDIS_CONNECTIONS")
    assign_threshold: float = Field(
        default=_DEFAULTS.assign_threshold,
        ge=-1,
        le=1,
        validation_alias="VOC_THEME_ASSIGN_THRESHOLD",
    )
    merge_threshold: float = Field(
        default=_DEFAULTS.merge_threshold, ge=-1, le=1, validation_alias="VOC_THEME_MERGE_THRESHOLD"
    )
    absorb_threshold: float = Field(
        default=_DEFAULTS.absorb_threshold,
        ge=-1,
        le=1,
        validation_alias="VOC_THEME_ABSORB_THRESHOLD",
    )
    min_size: int = Field(default=_DEFAULTS.min_size, ge=1, validation_alias="VOC_THEME_MIN_SIZE")
    consolidate_every: int = Field(
        default=_DEFAULTS.consolidate_every, ge=1, validation_alias="VOC_THEME_CONSOLIDATE_EVERY"
    )
    max_themes: int = Field(
        default=_DEFAULTS.max_themes, ge=1, validation_alias="VOC_THEME_MAX_THEMES"
    )

    def cluster_params(self) -> ClusterParams:
        """The clustering knobs of the core."""
        return ClusterParams(
            assign_threshold=self.assign_threshold,
            merge_threshold=self.merge_threshold,
            absorb_threshold=self.absorb_threshold,
            min_size=self.min_size,
            consolidate_every=self.consolidate_every,
            max_themes=self.max_themes,
        )
