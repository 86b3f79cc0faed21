"""ASGI middleware that runs before routing, authentication and parsing.

`BodyLimitMiddleware`: a request body is refused with 413 before anything parses it,
authenticated or not. The limit is per route: `VOC_API_MAX_BODY_BYTES` by default, and
routes named in `streamed` (the review upload) have their own limit, checked here against
Content-Length only, since their handler counts the bytes while it streams them (a body
of unknown length cannot be refused before it has been read, only while). For every
other route the body is read here, counted as it arrives (chunked bodies too), and handed
on whole: nothing behind this middleware ever sees more than the limit.

`SecurityHeadersMiddleware`: `nosniff`, no framing, no referrer and (unless a route set
its own) a Content-Security-Policy that allows nothing on every response, `no-store` on
the tenant API. The interactive docs (`/docs`, `/redoc`) keep the default policy off:
they load Swagger UI's scripts from a CDN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics

STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# report.html: self-contained, no script at all; inline CSS and SVG only.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_DOCS = ("/docs", "/redoc")
_COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses request bodies over their route's limit with 413 (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        default_limit: int,
        streamed: Mapping[str, int],
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        # Only the streamed routes are matched per request (a handful, not every route).
        self.streamed = [
            (route, streamed[name])
            for route in routes
            if isinstance(name := getattr(route, "name", None), str) and name in streamed
        ]

    def _limit(self, scope: Scope) -> tuple[int, bool, str]:
        """(limit, streamed, route template) of the request's route."""
        for route, limit in self.streamed:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return limit, True, str(getattr(route, "path", scope["path"]))
        return self.default_limit, False, scope["path"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, streamed, path = self._limit(scope)
        where = f"{scope['method']} {path}"
        headers = dict(scope.get("headers") or [])
        raw_length = headers.get(b"content-length")
        if raw_length is not None:
            try:
                length = int(raw_length)
                if length < 0:
                    raise ValueError
            except ValueError:
                await _refuse(send, 400, "invalid Content-Length header")
                return
            if length > limit:
                metrics.BODIES_REFUSED.inc()
                await _refuse(
                    send,
                    413,
                    f"request body of {length} bytes exceeds the limit of {limit} bytes "
                    f"for {where}",
                )
                return
        if streamed:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # a disconnect: let the app see an empty body and the disconnect
            body += message.get("body", b"")
            if len(body) > limit:
                metrics.BODIES_REFUSED.inc()
                await _refuse(
                    send, 413, f"request body exceeds the limit of {limit} bytes for {where}"
                )
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeadersMiddleware:
    """Adds the security headers of the module docstring to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = path.startswith(_DOCS)
        tenant_api = path.startswith("/v1/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [h for h in _COMMON_HEADERS if h[0] not in present]
                if not docs and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", STRICT_CSP.encode()))
                if tenant_api and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
