"""`python -m services.ingest`: run the ingest stage until SIGTERM."""

from __future__ import annotations

import asyncio

from services.ingest.service import build
from services.ingest.settings import IngestSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the ingest service with settings from the environment."""
    ingest = IngestSettings()
    coro = run_service(
        "ingest",
        build,
        max_records=ingest.max_records,
        max_inflight=ingest.max_inflight,
        settings=CommonSettings(),
        # Ingest makes no LLM calls, so nothing it fails on is cured by waiting: no retry
        # tiers (each would cost a consumer, a producer and a connection for nothing).
        retries=False,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
