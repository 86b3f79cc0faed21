"""Settings shared by every service: Kafka, Postgres, Redis and the service runtime.

Each service composes these with its own `Settings(BaseSettings)`. Values come from the
environment (the same names `voc up` writes to `.voc/stack.env`); secrets are `SecretStr`
so they are masked whenever a settings object is printed or logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["dev", "test", "prod"]

# The placeholder values of `.env.example`: a deployment that still has one was never
# given its real secrets. Refused everywhere but in the dev profile.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme"})
# Environment variables holding secrets, whatever settings class reads them.
_SECRET_NAME = re.compile(r"(^|_)(URL|KEY|SECRET|TOKEN|PASSWORD)$")


def _secret_parts(value: str) -> list[str]:
    """The value itself, and the password of a URL (`postgresql://voc:PASSWORD@...`)."""
    parts = [value]
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            parts.append(password)
    return parts


def placeholder_secrets(environ: Mapping[str, str]) -> list[str]:
    """Names of the secret variables in `environ` that still hold a placeholder value."""
    return sorted(
        name
        for name, value in environ.items()
        if _SECRET_NAME.search(name)
        and any(p.strip().lower() in PLACEHOLDER_SECRETS for p in _secret_parts(value))
    )


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster and how topics are named and sized."""

    model_config = SettingsConfigDict(extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    topic_prefix: str = Field(default="voc.", validation_alias="VOC_TOPIC_PREFIX")
    partitions: int = Field(default=6, validation_alias="VOC_TOPIC_PARTITIONS")
    replication_factor: int = Field(default=1, validation_alias="VOC_TOPIC_REPLICATION")
    retention_days: int = Field(default=7, validation_alias="VOC_TOPIC_RETENTION_DAYS")
    cluster_name: str = Field(default="vocstream", validation_alias="VOC_KAFKA_CLUSTER_NAME")
    # Short session timeouts make rebalances after a restart take seconds, not a minute.
    session_timeout_ms: int = Field(default=6000, validation_alias="VOC_KAFKA_SESSION_TIMEOUT_MS")
    heartbeat_interval_ms: int = Field(
        default=1000, validation_alias="VOC_KAFKA_HEARTBEAT_INTERVAL_MS"
    )
    # What a consumer may prefetch and hold in memory: Kafka still returns a record larger
    # than these, so they bound memory, not message size. A stage runs up to five consumers
    # (input, overflow lane, three retry tiers): at 1 MiB per partition translate peaked at
    # 152 MB RSS while 100k reviews arrived (bench-ingest --with-stages), at 256 KiB 130 MB,
    # but 256 KiB starved theme: bench-e2e took 3.03x its bound against 1.45x.
    fetch_max_bytes: int = Field(
        default=8 * 1024 * 1024, validation_alias="VOC_KAFKA_FETCH_MAX_BYTES"
    )
    max_partition_fetch_bytes: int = Field(
        default=1024 * 1024, validation_alias="VOC_KAFKA_MAX_PARTITION_FETCH_BYTES"
    )
    max_poll_interval_ms: int = Field(
        default=300_000, validation_alias="VOC_KAFKA_MAX_POLL_INTERVAL_MS"
    )


class DatabaseSettings(BaseSettings):
    """The Postgres database every service writes to."""

    model_config = SettingsConfigDict(extra="ignore")

    url: SecretStr = Field(
        default=SecretStr("postgresql://voc@127.0.0.1:15432/voc"),
        validation_alias="DATABASE_URL",
    )
    pool_size: int = Field(default=4, validation_alias="VOC_DB_POOL_SIZE")

    def sqlalchemy_url(self) -> str:
        """The URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
        raw = self.url.get_secret_value()
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if raw.startswith(prefix):
                return "postgresql+psycopg://" + raw[len(prefix) :]
        return raw

    def libpq_url(self) -> str:
        """The URL as plain libpq (psycopg.connect) expects it."""
        return self.sqlalchemy_url().replace("postgresql+psycopg://", "postgresql://", 1)


class RedisSettings(BaseSettings):
    """The Redis shared by the API cache, rate limits and the LLM token bucket."""

    model_config = SettingsConfigDict(extra="ignore")

    url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:16379/0"), validation_alias="REDIS_URL"
    )


class RuntimeSettings(BaseSettings):
    """Process-level knobs common to every service."""

    model_config = SettingsConfigDict(extra="ignore")

    env: Environment = Field(default="dev", validation_alias="VOC_ENV")
    log_level: str = Field(default="INFO", validation_alias="VOC_LOG_LEVEL")
    metrics_port: int = Field(default=0, validation_alias="VOC_METRICS_PORT")
    instance: str = Field(default="", validation_alias="VOC_INSTANCE")
    # One delay per retry tier (seconds): a retryable failure waits these out, in turn,
    # on the stage's retry topics before it is dead-lettered.
    retry_delays_s: str = Field(default="2,10,30", validation_alias="VOC_RETRY_DELAYS_S")
    # Work failing with an infrastructure error while the infrastructure works (a record
    # too large for the broker, a statement that always fails) is tried this often before
    # its record is dead-lettered; an outage is waited out however long it lasts.
    max_tries: int = Field(default=5, ge=1, validation_alias="VOC_STAGE_MAX_TRIES")
    # A rebalance stops the whole group until every member has revoked: batches of
    # revoked partitions get this long to finish, then are abandoned (and replayed).
    rebalance_grace_s: float = Field(default=5.0, ge=0, validation_alias="VOC_REBALANCE_GRACE_S")
    # On SIGTERM, batches already writing their results get this long (handler work is
    # abandoned at once); each shutdown step is bounded by it too.
    shutdown_grace_s: float = Field(default=3.0, ge=0, validation_alias="VOC_SHUTDOWN_GRACE_S")
    # How often a stage probes Postgres and Kafka for `/ready`.
    probe_interval_s: float = Field(default=5.0, gt=0, validation_alias="VOC_PROBE_INTERVAL_S")
    # Stages with an overflow lane (shared.stage.fair): past its first `job_free_reviews`,
    # a job's records beyond `job_share_reviews` reviews in the process's handlers go to
    # the lane, which runs `overflow_max_inflight` batches.
    job_free_reviews: int = Field(default=1000, ge=0, validation_alias="VOC_JOB_FREE_REVIEWS")
    job_share_reviews: int = Field(default=400, ge=1, validation_alias="VOC_JOB_SHARE_REVIEWS")
    overflow_max_inflight: int = Field(
        default=2, ge=1, validation_alias="VOC_OVERFLOW_MAX_INFLIGHT"
    )


class CommonSettings(BaseSettings):
    """Everything a pipeline service needs to reach the shared infrastructure."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> CommonSettings:
        """Refuse to start with `.env.example`'s placeholder secrets outside dev.

        Every service process builds its CommonSettings first, so checking the secrets it
        holds (the database and Redis URLs) and the process's secret variables (the LLM
        key, the callback secret, ... read by other settings classes) here covers them all.
        """
        if self.runtime.env == "dev":
            return self
        held = {
            "DATABASE_URL": self.db.url.get_secret_value(),
            "REDIS_URL": self.redis.url.get_secret_value(),
        }
        bad = placeholder_secrets({**os.environ, **held})
        if bad:
            raise ValueError(
                f"placeholder secret values ('change-me') in {', '.join(bad)} with "
                f"VOC_ENV={self.runtime.env}: set real secrets (only VOC_ENV=dev accepts "
                "placeholders)"
            )
        return self
