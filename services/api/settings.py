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
    # Per API key token bucket: sustained requests per second and burst; 0 disables.
    rate_limit_per_s: float = Field(default=100.0, validation_alias="VOC_API_RATE_LIMIT_PER_S")
    rate_limit_burst: int = Field(default=200, validation_alias="VOC_API_RATE_LIMIT_BURST")
    max_upload_bytes: int = Field(default=256 * MIB, validation_alias="VOC_API_MAX_UPLOAD_BYTES")
    max_row_bytes: int = Field(default=256 * 1024, validation_alias="VOC_API_MAX_ROW_BYTES")
    # Rows per upload: bounds the in-upload dedup's memory (<= ~48 bytes a row).
    max_upload_rows: int = Field(default=1_000_000, validation_alias="VOC_API_MAX_UPLOAD_ROWS")
    chunk_rows: int = Field(default=500, validation_alias="VOC_API_CHUNK_ROWS")
    chunk_bytes: int = Field(default=512 * 1024, validation_alias="VOC_API_CHUNK_BYTES")
    max_inflight_chunks: int = Field(default=8, validation_alias="VOC_API_MAX_INFLIGHT_CHUNKS")
    max_listed_rejections: int = Field(default=1000, validation_alias="VOC_API_MAX_REJECTIONS")
    # How long a key -> tenant lookup is trusted in-process (a revoked key works this long).
    key_cache_ttl_s: float = Field(default=5.0, validation_alias="VOC_API_KEY_CACHE_TTL_S")
    # Job status cache in Redis: short while a job runs, long once it is final.
    status_ttl_s: float = Field(default=1.0, validation_alias="VOC_API_STATUS_TTL_S")
    status_final_ttl_s: float = Field(default=300.0, validation_alias="VOC_API_STATUS_FINAL_TTL_S")
    db_max_overflow: int = Field(default=16, validation_alias="VOC_API_DB_MAX_OVERFLOW")
    ready_timeout_s: float = Field(default=2.0, validation_alias="VOC_API_READY_TIMEOUT_S")
