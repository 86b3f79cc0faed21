"""Request dependencies: the clients, a database session and the authenticated tenant.

Routes declare what they need with the `Annotated` aliases (`SessionDep`, `TenantDep`,
...); nothing here is global, everything comes from the app's `Clients`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import hash_key

from . import metrics, store
from .auth import MAX_KEY_CHARS, Tenant
from .clients import Clients
from .settings import ApiSettings

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


async def get_tenant(
    clients: ClientsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    """Authenticate the API key and charge the key's rate limit (401 / 429)."""
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <api key>'")
    if len(token) > MAX_KEY_CHARS:
        raise _unauthorized("invalid or revoked API key")
    key_hash = hash_key(token)
    hit, tenant_id = clients.keys.get(key_hash)
    if not hit:
        tenant_id = await store.tenant_for_key(session, key_hash)
        clients.keys.put(key_hash, tenant_id)
    if tenant_id is None:
        raise _unauthorized("invalid or revoked API key")
    wait = await clients.limiter.acquire(key_hash)
    if wait > 0:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of {clients.settings.rate_limit_per_s:g} requests/s exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return Tenant(id=tenant_id, key_hash=key_hash)


TenantDep = Annotated[Tenant, Depends(get_tenant)]
