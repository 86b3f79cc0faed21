"""`python -m services.insight`: run the insight stage until SIGTERM."""

from __future__ import annotations

import asyncio

from services.insight.service import build
from services.insight.settings import InsightSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the insight service with settings from the environment."""
    insight = InsightSettings()
    coro = run_service(
        "insight",
        build,
        max_records=insight.max_records,
        max_inflight=insight.max_inflight,
        settings=CommonSettings(),
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
