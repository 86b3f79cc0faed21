"""`python -m services.translate`: run the translate stage until SIGTERM."""

from __future__ import annotations

import asyncio
import functools

from services.translate.service import build
from services.translate.settings import TranslateSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the translate service with settings from the environment."""
    translate = TranslateSettings()
    coro = run_service(
        "translate",
        functools.partial(build, translate_settings=translate),
        max_records=translate.max_records,
        max_inflight=translate.max_inflight,
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
