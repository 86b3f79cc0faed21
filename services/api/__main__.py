"""`python -m services.api`: one uvicorn process (uvloop) serving the app on VOC_API_PORT."""

from __future__ import annotations

import uvicorn

from shared.logging import setup_logging

from .app import create_app
from .settings import ApiSettings


def main() -> None:
    """Read settings from the environment and serve until SIGTERM/SIGINT."""
    settings = ApiSettings()
    setup_logging("api", settings.runtime.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
