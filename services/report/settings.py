"""Settings of the report service (thresholds, tick, stall timeout, claims, public API URL).

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
    # A sealed, unfinished job none of whose reviews finished for this long is `stalled`
    # (a visible state with its reason, a metric and an alert; never `completed`), with a
    # partial report if it has none; the stall clears when a review finishes again.
    stall_timeout_s: float = Field(
        default=900.0, gt=0, validation_alias="VOC_REPORT_STALL_TIMEOUT_S"
    )
    # How long the leader's claim on the job events it produces stands: past it (the
    # leader died before marking them produced) the next leader produces them again.
    event_claim_s: float = Field(default=60.0, gt=0, validation_alias="VOC_REPORT_EVENT_CLAIM_S")
    tick_jobs: int = Field(default=200, ge=1, validation_alias="VOC_REPORT_TICK_JOBS")
    max_records: int = Field(default=500, ge=1, validation_alias="VOC_REPORT_MAX_RECORDS")
    # Where report links in callbacks point: the API as the outside world reaches it.
    public_api_url: str = Field(
        default="http://127.0.0.1:8000",
        validation_alias=AliasChoices("VOC_PUBLIC_API_URL", "VOC_API_URL"),
    )
