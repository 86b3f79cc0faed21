"""Settings of the ingest service (batching knobs); shared infrastructure settings come from
`shared.settings.CommonSettings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    """How much ingest takes from Kafka at once and how many batches it overlaps."""

    model_config = SettingsConfigDict(extra="ignore")

    # Records are upload chunks of up to 500 rows: 8 records ~ 4,000 rows per batch, which
    # keeps RSS well under 150 MB and each batch's transaction short.
    max_records: int = Field(default=8, ge=1, validation_alias="VOC_INGEST_MAX_RECORDS")
    # Two batches in flight: one in the core while the other is upserted and produced.
    max_inflight: int = Field(default=2, ge=1, validation_alias="VOC_INGEST_MAX_INFLIGHT")
