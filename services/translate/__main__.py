"""`python -m services.translate`: run the translate stage until SIGTERM."""

from __future__ import annotations

import functools

from services.translate.service import build
from services.translate.settings import TranslateSettings
from shared import stage


def main() -> None:
    """Run the translate service with settings from the environment."""
    settings = TranslateSettings()
    stage.main(
        "translate",
        functools.partial(build, translate_settings=settings),
        max_records=settings.max_records,
        max_inflight=settings.max_inflight,
        overflow=True,  # a big job's backlog must not queue other jobs out (shared.stage.fair)
    )


if __name__ == "__main__":
    main()
