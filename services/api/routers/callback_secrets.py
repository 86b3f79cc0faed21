"""`/v1/callback-secret`: the tenant's own callback signing secret, created and rotated.

- `POST /v1/callback-secret` (body optional: `{"overlap_s": 86400}`) creates a new secret
  and returns it **once** (201, `Cache-Control: no-store`); it is never shown again and
  never logged. If the tenant had a secret, this is a rotation: the previous ones keep
  signing, next to the new one, for `overlap_s` seconds (0 ends them at once, for a
  leaked secret), so receivers can switch without missing a callback.
- `GET /v1/callback-secret` lists the tenant's secrets (ids and validity, no secrets).

Only the id is stored (`callback_secrets`); the secret is derived from it
(`shared.callback_signing`), so this needs `VOC_CALLBACK_SECRET` (503 without it).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from shared.callback_signing import SigningSettings, derive_secret

from ..deps import SessionDep, TenantDep
from ..schemas import ErrorPublic
from ..status import utc
from .jobs import AUTH_ERRORS, json_response

router = APIRouter(prefix="/v1/callback-secret", tags=["callbacks"])

MAX_OVERLAP_S = 7 * 24 * 3600
NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorPublic, "description": "callback signing is not configured"}
}

Q_LOCK_TENANT = text("SELECT id FROM tenants WHERE id = :tenant FOR UPDATE")
Q_NOW = text("SELECT now()")
# Shorten, never lengthen: a secret already ending sooner keeps its end.
Q_SUPERSEDE = text(
    "UPDATE callback_secrets SET expires_at = :until "
    "WHERE tenant_id = :tenant AND (expires_at IS NULL OR expires_at > :until) "
    "RETURNING id"
)
Q_INSERT = text(
    "INSERT INTO callback_secrets (id, tenant_id, created_at) VALUES (:id, :tenant, :now)"
)
Q_LIST = text(
    "SELECT id, created_at, expires_at FROM callback_secrets WHERE tenant_id = :tenant "
    "AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at DESC, id"
)


class CallbackSecretCreate(BaseModel):
    """How to rotate (all optional)."""

    model_config = ConfigDict(extra="forbid")

    overlap_s: int = Field(
        default=86400,
        ge=0,
        le=MAX_OVERLAP_S,
        description="seconds the previous secrets keep signing next to the new one",
    )


class CallbackSecretCreated(BaseModel):
    """A new secret: the only answer that ever contains it."""

    id: str
    secret: str = Field(description="HMAC-SHA256 key of X-Voc-Signature; shown only now")
    created_at: datetime
    previous_valid_until: datetime | None = Field(
        description="when the secrets this one replaces stop signing (null: there were none)"
    )


class CallbackSecretPublic(BaseModel):
    """A secret that still signs (without the secret)."""

    id: str
    created_at: datetime
    expires_at: datetime | None


class CallbackSecretsPublic(BaseModel):
    """The tenant's current secrets, newest first."""

    data: list[CallbackSecretPublic]


def _signing_key() -> bytes:
    key = SigningSettings().key
    if key is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="callback signing is not configured on this server (VOC_CALLBACK_SECRET)",
        )
    return key.get_secret_value().encode()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackSecretCreated,
    responses=AUTH_ERRORS | NOT_CONFIGURED,
    summary="Create or rotate the callback signing secret",
)
async def create_callback_secret(
    tenant: TenantDep,
    session: SessionDep,
    body: Annotated[CallbackSecretCreate | None, Body()] = None,
) -> Response:
    """A new signing secret for the tenant's callbacks, returned only in this answer."""
    key = _signing_key()
    overlap = (body or CallbackSecretCreate()).overlap_s
    # One rotation per tenant at a time: two at once would each end the other's secret.
    await session.execute(Q_LOCK_TENANT, {"tenant": tenant.id})
    now: datetime = (await session.execute(Q_NOW)).scalar_one()
    until = now + timedelta(seconds=overlap)
    superseded = (
        await session.execute(Q_SUPERSEDE, {"tenant": tenant.id, "until": until})
    ).fetchall()
    secret_id = str(uuid.uuid4())
    await session.execute(Q_INSERT, {"id": secret_id, "tenant": tenant.id, "now": now})
    await session.commit()
    doc = {
        "id": secret_id,
        "secret": derive_secret(key, tenant.id, secret_id),
        "created_at": utc(now),
        "previous_valid_until": utc(until) if superseded else None,
    }
    response = json_response(orjson.dumps(doc), status.HTTP_201_CREATED)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get(
    "",
    response_model=CallbackSecretsPublic,
    responses=AUTH_ERRORS,
    summary="List the callback signing secrets (without the secrets)",
)
async def list_callback_secrets(tenant: TenantDep, session: SessionDep) -> Response:
    """The tenant's secrets that still sign, newest first."""
    rows = (await session.execute(Q_LIST, {"tenant": tenant.id})).fetchall()
    data = [
        {"id": r.id, "created_at": utc(r.created_at), "expires_at": utc(r.expires_at)} for r in rows
    ]
    return json_response(orjson.dumps({"data": data}))
