"""`python -m services.lag_exporter`: poll consumer lag and serve it on VOC_METRICS_PORT."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import REGISTRY

from services.lag_exporter.core import GroupFilter
from services.lag_exporter.kafka import KafkaLagSource
from services.lag_exporter.metrics import LagCollector
from services.lag_exporter.service import LagExporter, RedisStageRatePublisher
from services.lag_exporter.settings import LagExporterSettings
from shared.logging import setup_logging
from shared.metrics import serve_metrics
from shared.redis import redis_client
from shared.settings import CommonSettings

log = logging.getLogger("services.lag_exporter")


async def serve(settings: CommonSettings, lag: LagExporterSettings) -> None:
    """Wire the real Kafka source, Redis publisher and collector; run until SIGTERM."""
    collector = LagCollector()
    REGISTRY.register(collector)
    health = serve_metrics(settings.runtime.metrics_port)
    redis = None
    publisher = None
    if lag.publish_redis:
        redis = redis_client(settings.redis.url)
        publisher = RedisStageRatePublisher(
            redis, lag.redis_key, ttl_s=max(10, int(lag.interval_s * lag.redis_ttl_intervals))
        )
    source = KafkaLagSource(settings.kafka.bootstrap_servers, sample_timeout_s=lag.sample_timeout_s)
    exporter = LagExporter(
        source,
        collector,
        cluster_name=settings.kafka.cluster_name,
        topic_prefix=settings.kafka.topic_prefix,
        group_filter=GroupFilter(lag.group_allow, lag.group_deny),
        publisher=publisher,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await source.start()
    health.ready = True
    log.info(
        "lag exporter started",
        extra={"interval_s": lag.interval_s, "metrics_port": settings.runtime.metrics_port},
    )
    try:
        await exporter.run(stopping, lag.interval_s, health)
    finally:
        await source.close()
        if redis is not None:
            await redis.aclose()
        log.info("lag exporter stopped")


def main() -> None:
    """Run the lag exporter with settings from the environment."""
    settings = CommonSettings()
    setup_logging("lag-exporter", settings.runtime.log_level)
    asyncio.run(serve(settings, LagExporterSettings()))


if __name__ == "__main__":
    main()
