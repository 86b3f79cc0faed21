"""`python -m services.theme`: run the theme stage until SIGTERM."""

from __future__ import annotations

import asyncio

from services.theme.service import build
from services.theme.settings import ThemeSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the theme service with settings from the environment."""
    theme = ThemeSettings()
    coro = run_service(
        "theme",
        build,
        max_records=theme.max_records,
        max_inflight=theme.max_inflight,
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
