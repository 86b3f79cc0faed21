"""`python -m services.ingest`: run the ingest stage until SIGTERM."""

from __future__ import annotations

from services.ingest.service import build
from services.ingest.settings import IngestSettings
from shared import stage


def main() -> None:
    """Run the ingest service with settings from the environment."""
    settings = IngestSettings()
    # Ingest makes no LLM calls, so nothing it fails on is cured by waiting: no retry
    # tiers (each would cost a consumer, a producer and a connection for nothing).
    stage.main(
        "ingest",
        build,
        max_records=settings.max_records,
        max_inflight=settings.max_inflight,
        retries=False,
    )


if __name__ == "__main__":
    main()
