"""`python -m services.learn`: run the learn stage until SIGTERM."""

from __future__ import annotations

import functools

from services.learn.service import build
from services.learn.settings import LearnSettings
from shared import stage


def main() -> None:
    """Run the learn service with settings from the environment."""
    settings = LearnSettings()
    stage.main(
        "learn",
        functools.partial(build, learn_settings=settings),
        max_records=settings.max_records,
        max_inflight=settings.max_inflight,
    )


if __name__ == "__main__":
    main()
