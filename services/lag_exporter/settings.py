"""Settings of the lag exporter; Kafka, Redis and runtime settings come from
`shared.settings.CommonSettings` (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, VOC_METRICS_PORT,
VOC_KAFKA_CLUSTER_NAME, VOC_TOPIC_PREFIX)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.eta import STAGE_RATES_KEY


class LagExporterSettings(BaseSettings):
    """How often to poll, which groups to report, and where to publish stage rates."""

    model_config = SettingsConfigDict(extra="ignore")

    interval_s: float = Field(default=5.0, gt=0, validation_alias="VOC_LAG_INTERVAL_S")
    # Full-match regexes on the group id: reported = allowed and not denied.
    group_allow: str = Field(default=".*", validation_alias="VOC_LAG_GROUP_ALLOW")
    group_deny: str = Field(default="", validation_alias="VOC_LAG_GROUP_DENY")
    # How long one poll may wait for the oldest unconsumed records (lag seconds).
    sample_timeout_s: float = Field(default=2.0, gt=0, validation_alias="VOC_LAG_SAMPLE_TIMEOUT_S")
    publish_redis: bool = Field(default=True, validation_alias="VOC_LAG_PUBLISH_REDIS")
    redis_key: str = Field(default=STAGE_RATES_KEY, validation_alias="VOC_LAG_REDIS_KEY")
    # The published document expires after this many intervals without a successful poll.
    redis_ttl_intervals: int = Field(
        default=6, ge=2, validation_alias="VOC_LAG_REDIS_TTL_INTERVALS"
    )
