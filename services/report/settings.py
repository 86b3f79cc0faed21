"""Settings of the report service (thresholds, tick, stall timeout, public API URL).

Callback knobs live in `services.report.callbacks.CallbackSettings`; shared infrastructure
settings come from `shared.settings.CommonSettings`.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReportSettings(BaseSettings):
    """When reports are built and how the report stage consumes."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Share of a sealed job's reviews that must be themed or dead-lettered for the first
    # (report_ready) report; 1.0 of them gives the final one.
    ready_threshold: float = Field(
        default=0.9, gt=0, le=1, validation_alias="VOC_REPORT_READY_THRESHOLD"
    )
    tick_interval_s: float = Field(default=1.0, gt=0, validation_alias="VOC_REPORT_TICK_S")
    # A sealed job whose counts do not move for this long is finalised with the coverage it
    # has (reviews lost beyond the dead-letter table must not keep it open forever); a later
    # arrival rebuilds the final report.
    stall_timeout_s: float = Field(
        default=900.0, gt=0, validation_alias="VOC_REPORT_STALL_TIMEOUT_S"
    )
    tick_jobs: int = Field(default=200, ge=1, validation_alias="VOC_REPORT_TICK_JOBS")
    max_records: int = Field(default=500, ge=1, validation_alias="VOC_REPORT_MAX_RECORDS")
    # Where report links in callbacks point: the API as the outside world reaches it.
    public_api_url: str = Field(
        default="http://127.0.0.1:8000",
        validation_alias=AliasChoices("VOC_PUBLIC_API_URL", "VOC_API_URL"),
    )
