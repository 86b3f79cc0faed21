"""`python -m services.theme`: run the theme stage until SIGTERM."""

from __future__ import annotations

import functools

from services.theme.service import build
from services.theme.settings import ThemeSettings
from shared import stage


def main() -> None:
    """Run the theme service with settings from the environment."""
    settings = ThemeSettings()
    stage.main(
        "theme",
        functools.partial(build, theme=settings),
        max_records=settings.max_records,
        max_inflight=settings.max_inflight,
        # Insights are placed in partition order: a failing batch is retried in place,
        # never parked on a retry topic (see services.theme.service).
        retries=False,
    )


if __name__ == "__main__":
    main()
