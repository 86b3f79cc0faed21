"""Settings of the API gateway: the shared infrastructure plus the API's own knobs."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings

MIB = 1024 * 1024


class ApiSettings(CommonSettings):
    """Everything `create_app` needs; read from the environment (`VOC_API_*`)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field(default="0.0.0.0", validation_alias="VOC_API_HOST")
    port: int = Field(default=8000, validation_alias="VOC_API_PORT")
    # Per tenant token bucket (every key of a tenant shares it): sustained requests per
    # second and burst; 0 disables. Redis down: reads pass, writes get 503 (docs/security.md).
    rate_limit_per_s: float = Field(default=100.0, validation_alias="VOC_API_RATE_LIMIT_PER_S")
    rate_limit_burst: int = Field(default=200, validation_alias="VOC_API_RATE_LIMIT_BURST")
    # Per client address: API key lookups in Postgres (keys not in the in-process cache, so
    # mostly unknown keys); 0 disables. Falls back to a per-replica bucket when Redis is down.
    key_lookups_per_s: float = Field(default=2.0, validation_alias="VOC_API_KEY_LOOKUPS_PER_S")
    key_lookups_burst: int = Field(default=20, validation_alias="VOC_API_KEY_LOOKUPS_BURST")
    # Every request body but an upload's is read whole before parsing: at most this much.
    max_body_bytes: int = Field(default=64 * 1024, validation_alias="VOC_API_MAX_BODY_BYTES")
    max_upload_bytes: int = Field(default=256 * MIB, validation_alias="VOC_API_MAX_UPLOAD_BYTES")
    max_row_bytes: int = Field(default=256 * 1024, validation_alias="VOC_API_MAX_ROW_BYTES")
    # Rows per upload: bounds the in-upload dedup's memory (<= ~48 bytes a row).
    max_upload_rows: int = Field(default=1_000_000, validation_alias="VOC_API_MAX_UPLOAD_ROWS")
    chunk_rows: int = Field(default=500, validation_alias="VOC_API_CHUNK_ROWS")
    chunk_bytes: int = Field(default=512 * 1024, validation_alias="VOC_API_CHUNK_BYTES")
    max_inflight_chunks: int = Field(default=8, validation_alias="VOC_API_MAX_INFLIGHT_CHUNKS")
    max_listed_rejections: int = Field(default=1000, validation_alias="VOC_API_MAX_REJECTIONS")
    # How long a key -> tenant lookup is trusted in-process. Revocations reach every replica
    # at once over Redis pub/sub; this bounds what a missed message can cost.
    key_cache_ttl_s: float = Field(default=30.0, validation_alias="VOC_API_KEY_CACHE_TTL_S")
    # Known keys and unknown keys are remembered apart, so a flood of random keys only ever
    # evicts other random keys.
    key_cache_entries: int = Field(default=10_000, validation_alias="VOC_API_KEY_CACHE_ENTRIES")
    unknown_key_entries: int = Field(default=10_000, validation_alias="VOC_API_UNKNOWN_KEY_ENTRIES")
    # Job status cache in Redis: short while a job runs, long once it is final.
    status_ttl_s: float = Field(default=1.0, validation_alias="VOC_API_STATUS_TTL_S")
    status_final_ttl_s: float = Field(default=300.0, validation_alias="VOC_API_STATUS_FINAL_TTL_S")
    db_pool_size: int = Field(default=16, validation_alias="VOC_API_DB_POOL_SIZE")
    db_max_overflow: int = Field(default=16, validation_alias="VOC_API_DB_MAX_OVERFLOW")
    ready_timeout_s: float = Field(default=2.0, validation_alias="VOC_API_READY_TIMEOUT_S")
    # /ready answers from its last check for this long (probes and scanners cost nothing).
    ready_cache_s: float = Field(default=2.0, validation_alias="VOC_API_READY_CACHE_S")
    # Jobs older than this are deleted like `DELETE /v1/jobs/{id}`; 0 keeps them forever.
    job_retention_days: float = Field(default=90.0, ge=0, validation_alias="VOC_JOB_RETENTION_DAYS")
    # How often an API replica runs the retention sweep (one replica at a time sweeps).
    sweep_interval_s: float = Field(
        default=600.0, gt=0, validation_alias="VOC_API_SWEEP_INTERVAL_S"
    )
