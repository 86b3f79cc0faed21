"""`python -m services.learn`: run the learn stage until SIGTERM."""

from __future__ import annotations

import asyncio
import functools

from services.learn.service import build
from services.learn.settings import LearnSettings
from shared.settings import CommonSettings
from shared.stage import run_service


def main() -> None:
    """Run the learn service with settings from the environment."""
    learn = LearnSettings()
    coro = run_service(
        "learn",
        functools.partial(build, learn_settings=learn),
        max_records=learn.max_records,
        max_inflight=learn.max_inflight,
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
