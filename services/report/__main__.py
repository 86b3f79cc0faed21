"""`python -m services.report`: run the report stage (and callback delivery) until SIGTERM."""

from __future__ import annotations

import asyncio

from services.report.service import build
from services.report.settings import ReportSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the report service with settings from the environment."""
    report = ReportSettings()
    # One batch at a time: report builds for a job must not race each other.
    coro = run_service(
        "report", build, max_records=report.max_records, max_inflight=1, settings=CommonSettings()
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
