"""`python -m services.report`: run the report stage (and callback delivery) until SIGTERM."""

from __future__ import annotations

import functools

from services.report.service import build
from services.report.settings import ReportSettings
from shared import stage


def main() -> None:
    """Run the report service with settings from the environment."""
    settings = ReportSettings()
    # One batch at a time: builds of one job are serialised by its lock anyway, and each
    # build holds a pool connection through its LLM call.
    stage.main(
        "report",
        functools.partial(build, report=settings),
        max_records=settings.max_records,
        max_inflight=1,
    )


if __name__ == "__main__":
    main()
