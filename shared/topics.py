"""The topic registry: every topic's name, payload model, key and sizing in one table.

A reader who wants to know "what flows on reviews.translated" starts here, then follows the
model into `shared.events`. Names are prefixed (default `voc.`) so several deployments can
share a cluster. Every stage has retry topics `<prefix><stage>.retry.<1..3>` and a
dead-letter topic `<prefix><stage>.dlq` (see `shared.stage.deadletters`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from shared import events as ev

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic's contract: name (without prefix), payload model, key, partitions, policy."""

    name: str
    model: type[ev.Event] | None
    key: str
    partitions: int | None = None  # None: VOC_TOPIC_PARTITIONS (the stages' parallelism)
    cleanup_policy: str = "delete"
    retention_days: int | None = None  # None: the cluster-wide setting from KafkaSettings

    def full_name(self, prefix: str) -> str:
        """The topic's name on the cluster."""
        return f"{prefix}{self.name}"


# The keys of the two row-carrying topics are built by their models (`key()`), from the
# fields named here: unique per message, so an upload spreads over every partition.
REVIEWS_SUBMITTED = TopicSpec(
    "reviews.submitted", ev.ReviewsSubmitted, key=":".join(ev.ReviewsSubmitted.KEY)
)
REVIEWS_INGESTED = TopicSpec(
    "reviews.ingested", ev.ReviewsIngested, key=":".join(ev.ReviewsIngested.KEY)
)
REVIEWS_LEARNED = TopicSpec("reviews.learned", ev.ReviewsLearned, key="job_id:batch")
REVIEWS_TRANSLATED = TopicSpec("reviews.translated", ev.ReviewsTranslated, key="job_id:batch")
INSIGHTS_EXTRACTED = TopicSpec("insights.extracted", ev.InsightsExtracted, key="job_id")
THEMES_EXTRACTED = TopicSpec("themes.extracted", ev.ThemesExtracted, key="job_id")
JOBS_COMPLETED = TopicSpec("jobs.completed", ev.JobCompleted, key="job_id", partitions=3)

STAGES = ("ingest", "learn", "translate", "insight", "theme", "report")

# Which topic each stage consumes (its consumer group is `<prefix><stage>`).
STAGE_INPUT: dict[str, TopicSpec] = {
    "ingest": REVIEWS_SUBMITTED,
    "learn": REVIEWS_INGESTED,
    "translate": REVIEWS_LEARNED,
    "insight": REVIEWS_TRANSLATED,
    "theme": INSIGHTS_EXTRACTED,
    "report": THEMES_EXTRACTED,
}


def stage_group(stage: str, prefix: str) -> str:
    """The consumer group id of a stage."""
    return f"{prefix}{stage}"


def dlq(stage: str) -> TopicSpec:
    """The dead-letter topic of a stage: the failed record's bytes, the reason in headers."""
    return TopicSpec(
        f"{stage}.dlq", None, key="as the input record", partitions=1, retention_days=30
    )


RETRY_TIERS = 3  # retry topics per stage; their delays are settings (VOC_RETRY_DELAYS_S)


def retry_topic(stage: str, tier: int) -> TopicSpec:
    """A stage's retry topic of `tier` (1-based): failed records waiting out one delay."""
    return TopicSpec(f"{stage}.retry.{tier}", None, key="as the input record", partitions=3)


# Stages whose input has an overflow lane (the LLM stages, where a job's backlog is slow to
# drain): see shared.stage.fair.
OVERFLOW_STAGES = ("translate", "insight")


def overflow_topic(stage: str) -> TopicSpec:
    """A stage's overflow lane: input records of jobs that held their share of the stage,
    consumed by a runner of their own so they do not queue other jobs' records out."""
    return TopicSpec(f"{stage}.overflow", None, key="as the input record")


ALL_TOPICS: tuple[TopicSpec, ...] = (
    REVIEWS_SUBMITTED,
    REVIEWS_INGESTED,
    REVIEWS_LEARNED,
    REVIEWS_TRANSLATED,
    INSIGHTS_EXTRACTED,
    THEMES_EXTRACTED,
    JOBS_COMPLETED,
    *(dlq(s) for s in STAGES),
    *(retry_topic(s, t) for s in STAGES for t in range(1, RETRY_TIERS + 1)),
    *(overflow_topic(s) for s in OVERFLOW_STAGES),
)


async def ensure_topics(
    bootstrap_servers: str,
    prefix: str,
    retention_days: int = 7,
    partitions: int = 6,
    replication_factor: int = 1,
) -> list[str]:
    """Create every registry topic that does not exist yet; returns the names created.

    Existing topics are left as they are (growing partitions is an operator's decision:
    it changes which partition a key lands on).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = []
        for spec in ALL_TOPICS:
            name = spec.full_name(prefix)
            if name in existing:
                continue
            days = spec.retention_days or retention_days
            new.append(
                NewTopic(
                    name=name,
                    num_partitions=spec.partitions or partitions,
                    replication_factor=replication_factor,
                    topic_configs={
                        "cleanup.policy": spec.cleanup_policy,
                        "retention.ms": str(days * DAY_MS),
                        "max.message.bytes": str(8 * 1024 * 1024),
                    },
                )
            )
        if new:
            await admin.create_topics(new)
            log.info("topics created", extra={"topics": [t.name for t in new]})
        return [t.name for t in new]
    finally:
        await admin.close()


def ensure_topics_sync(bootstrap_servers: str, prefix: str) -> list[str]:
    """Blocking wrapper of `ensure_topics` for the CLI (retention from `KafkaSettings`)."""
    from shared.settings import KafkaSettings

    k = KafkaSettings()
    return asyncio.run(
        ensure_topics(
            bootstrap_servers,
            prefix,
            retention_days=k.retention_days,
            partitions=k.partitions,
            replication_factor=k.replication_factor,
        )
    )
