"""Request dependencies: the clients, a database session, the authenticated tenant, and
the one id check every route uses.

Routes declare what they need with the `Annotated` aliases (`SessionDep`, `TenantDep`,
`JobId`, ...); nothing here is global, everything comes from the app's `Clients`.

Authentication order (each step only if the previous one passed, so a stranger costs as
little as possible): a token shaped like a key -> the in-process key cache (known and
unknown keys) -> on a miss, unless the client address is blocked, one Postgres lookup; a
key that turns out unknown takes a token of the address's bucket, and an address whose
bucket is empty is blocked (no lookups) until a token is due -> a token of the tenant's
bucket (shared by all its keys). What each bucket does while Redis is down is
in `ratelimit`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import KEY_SHAPE, hash_key

from . import metrics, store
from .auth import MAX_KEY_CHARS, Tenant
from .clients import Clients
from .ratelimit import WhenDown
from .settings import ApiSettings

# Every id the API hands out (jobs, insights, themes) is a UUID in its canonical lowercase
# form; anything else is refused before it reaches SQL (a NUL byte, say, would be a 500).
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ID_EXAMPLE = "0f8fad5b-d9cb-469f-a165-70867728950e"
ID_RE = re.compile(ID_PATTERN)

JobId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=36,
        description="the job's id, as `POST /v1/jobs` returned it (a lowercase UUID)",
        examples=[ID_EXAMPLE],
    ),
]
ThemeIdQuery = Annotated[
    str | None,
    Query(
        pattern=ID_PATTERN,
        max_length=36,
        description="only insights of this theme (an id from `/themes`)",
    ),
]
# Free-text filters (dimension names): printable text only; NUL would be a 500 in SQL.
SafeQueryText = Annotated[
    str | None,
    Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="exact dimension name"),
]
# Methods whose tenant limit lets requests through while Redis is down.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_id(value: str) -> bool:
    """Whether `value` has the shape of an id the API hands out."""
    return ID_RE.fullmatch(value) is not None


_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer voc_...`")


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def`
# dependencies in a worker thread, a thread hop per request for nothing.
async def get_clients(request: Request) -> Clients:
    """The app's clients (opened by the lifespan)."""
    clients: Clients = request.app.state.clients
    return clients


ClientsDep = Annotated[Clients, Depends(get_clients)]


async def get_settings(clients: ClientsDep) -> ApiSettings:
    """The app's settings."""
    return clients.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


async def get_session(clients: ClientsDep) -> AsyncIterator[AsyncSession]:
    """A session for the request; it takes a pooled connection only when first used."""
    async with clients.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


def _too_many(detail: str, wait: float) -> HTTPException:
    metrics.RATE_LIMITED.inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=detail,
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _lookups_exhausted(address: str, per_s: float, wait: float) -> HTTPException:
    return _too_many(
        f"too many unknown API keys from {address} (limit {per_s:g}/s): check the key you send",
        max(wait, 0.0),
    )


async def get_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    """Authenticate the API key and charge the tenant's rate limit (401 / 429 / 503)."""
    # The clients straight from the app, not through `ClientsDep`: every request runs
    # this, and each dependency FastAPI resolves costs as much as the key cache lookup.
    clients: Clients = request.app.state.clients
    settings = clients.settings
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <api key>'")
    if len(token) > MAX_KEY_CHARS or not KEY_SHAPE.match(token):
        raise _unauthorized("invalid or revoked API key")
    key_hash = hash_key(token)
    hit, tenant_id = clients.keys.get(key_hash)
    if not hit:
        address = request.client.host if request.client is not None else "unknown"
        blocked, until = clients.lookup_blocks.lookup(address)
        if blocked and until is not None:
            raise _lookups_exhausted(address, settings.key_lookups_per_s, until - time.monotonic())
        # A session only on a key-cache miss: most requests need none for auth.
        async with clients.sessions() as session:
            tenant_id, valid_for_s = await store.tenant_for_key(session, key_hash)
        metrics.KEY_LOOKUPS.labels("known" if tenant_id is not None else "unknown").inc()
        clients.keys.put(key_hash, tenant_id, valid_for_s)
        if tenant_id is None:
            # Only keys that turn out unknown are charged: a new tenant's first request,
            # or every tenant behind one proxy after a restart, must never be refused.
            wait = await clients.limiter.acquire(
                f"lookup:{address}",
                settings.key_lookups_per_s,
                settings.key_lookups_burst,
                WhenDown.LOCAL,
            )
            if wait > 0:
                # No more lookups for this address (in this process) until a token is due.
                clients.lookup_blocks.put(address, time.monotonic() + wait, ttl_s=wait)
                raise _lookups_exhausted(address, settings.key_lookups_per_s, wait)
    if tenant_id is None:
        raise _unauthorized("invalid or revoked API key")
    when_down = WhenDown.OPEN if request.method in SAFE_METHODS else WhenDown.CLOSED
    wait = await clients.limiter.acquire(
        f"tenant:{tenant_id}", settings.rate_limit_per_s, settings.rate_limit_burst, when_down
    )
    if wait > 0:
        raise _too_many(
            f"rate limit of {settings.rate_limit_per_s:g} requests/s for tenant "
            f"{tenant_id!r} exceeded (all its keys together)",
            wait,
        )
    return Tenant(id=tenant_id, key_hash=key_hash)


TenantDep = Annotated[Tenant, Depends(get_tenant)]
