"""`python -m services.insight`: run the insight stage until SIGTERM."""

from __future__ import annotations

import functools

from services.insight.service import build
from services.insight.settings import InsightSettings
from shared import stage


def main() -> None:
    """Run the insight service with settings from the environment."""
    settings = InsightSettings()
    stage.main(
        "insight",
        functools.partial(build, insight=settings),
        max_records=settings.max_records,
        max_inflight=settings.max_inflight,
        overflow=True,  # a big job's backlog must not queue other jobs out (shared.stage.fair)
    )


if __name__ == "__main__":
    main()
