"""Who may reconfigure a running fake LLM (`POST|GET /admin/config`, `POST /stats/reset`).

With `VOC_FAKE_LLM_ADMIN_TOKEN` set, only requests carrying it as a Bearer token; without
it, only clients on the loopback interface (the local stack and the tests, which run the
fake on 127.0.0.1). So a fake published on a network (docker compose listens on 0.0.0.0)
cannot be switched into fault modes, or have its limits changed, by anyone who reaches it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from typing import Any

ADMIN_TOKEN_ENV = "VOC_FAKE_LLM_ADMIN_TOKEN"
ADMIN_PATHS = frozenset({"/admin/config", "/stats/reset"})


def admin_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers a client sends to the admin routes (none without a token)."""
    token = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV, "")
    return {"Authorization": f"Bearer {token}"} if token else {}


class AdminGuard:
    """Decides whether an ASGI request may use the admin routes."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    @classmethod
    def from_env(cls) -> AdminGuard:
        """The guard for `VOC_FAKE_LLM_ADMIN_TOKEN` (unset: loopback clients only)."""
        return cls(os.environ.get(ADMIN_TOKEN_ENV))

    def allows(self, scope: Mapping[str, Any]) -> bool:
        """Whether the request is allowed to reconfigure the fake."""
        if self.token is not None:
            sent = b""
            for name, value in scope.get("headers") or ():
                if name.lower() == b"authorization":
                    sent = value
            return hmac.compare_digest(sent, b"Bearer " + self.token.encode())
        client = scope.get("client")
        if not client:
            return False
        try:
            return ipaddress.ip_address(client[0]).is_loopback
        except ValueError:
            return False
