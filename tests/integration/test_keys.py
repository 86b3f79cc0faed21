"""Key lifecycle: `voc keys list | revoke | rotate`, and a revoked key refused at once by
every API replica (two app instances on the same Postgres and Redis, each with a key
cache that would otherwise trust the key for minutes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from api_kit import app_settings, auth, database_url, new_key, running_app

from shared.auth import (
    KeyNotFound,
    hash_key,
    key_id_of,
    list_api_keys_sync,
    revoke_api_key_sync,
    rotate_api_key_sync,
)

pytestmark = pytest.mark.integration

LONG_CACHE_S = 600.0


@pytest.fixture
async def replicas() -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API replicas whose key caches trust an answer for ten minutes."""
    settings = app_settings(f"keys{uuid.uuid4().hex[:8]}.", key_cache_ttl_s=LONG_CACHE_S)
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app, client = await stack.enter_async_context(running_app(settings))
            assert await asyncio.wait_for(app.state.clients.invalidations.subscribed.wait(), 10)
            clients.append(client)
        yield clients


async def _status(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/jobs", headers=auth(key))).status_code


async def _eventually(client: httpx.AsyncClient, key: str, status: int) -> None:
    for _ in range(40):  # pub/sub delivery takes milliseconds; allow two seconds
        if await _status(client, key) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"key still answered {await _status(client, key)}, not {status}")


def _redis_url() -> str:
    return os.environ["REDIS_URL"]


async def test_revoked_key_is_refused_at_once_by_every_replica(
    replicas: list[httpx.AsyncClient],
) -> None:
    tenant, key = new_key()
    _, bystander = new_key()
    for client in replicas:  # both caches now hold the key
        assert await _status(client, key) == 200
    info, told = revoke_api_key_sync(database_url(), _redis_url(), key_id_of(hash_key(key)))
    assert told and info.tenant_id == tenant and info.revoked_at is not None
    for client in replicas:
        await _eventually(client, key, 401)
        assert await _status(client, bystander) == 200  # other keys are unaffected


async def test_rotation_issues_a_new_key_and_ends_the_old_one(
    replicas: list[httpx.AsyncClient],
) -> None:
    tenant, old = new_key()
    for client in replicas:
        assert await _status(client, old) == 200
    new, info, told = rotate_api_key_sync(database_url(), _redis_url(), old, grace_s=1.5)
    assert told and new != old and info.tenant_id == tenant
    for client in replicas:  # within the grace period both keys work
        assert await _status(client, old) == 200
        assert await _status(client, new) == 200
    await asyncio.sleep(1.6)
    for client in replicas:  # the cache never outlives the grace period
        assert await _status(client, old) == 401
        assert await _status(client, new) == 200
    with pytest.raises(KeyNotFound, match="revoked already"):
        rotate_api_key_sync(database_url(), _redis_url(), old)


def test_list_and_key_ids() -> None:
    tenant, first = new_key()
    _, second = new_key(tenant)
    listed = list_api_keys_sync(database_url(), tenant)
    assert [k.key_id for k in listed] == [key_id_of(hash_key(first)), key_id_of(hash_key(second))]
    assert all(k.tenant_id == tenant and k.revoked_at is None for k in listed)
    assert all(k.prefix in (first[:8], second[:8]) for k in listed)
    for bad in ("zz", "1234", "%%%%%%%%"):
        with pytest.raises(KeyNotFound):
            revoke_api_key_sync(database_url(), None, bad)
    # Without Redis the revocation still happens; the caller is told it was not broadcast.
    info, told = revoke_api_key_sync(database_url(), "redis://127.0.0.1:1/0", second)
    assert not told and info.revoked_at is not None


def test_voc_keys_cli_against_the_test_stack() -> None:
    env = {**os.environ, "VOC_PROFILE": "test"}

    def voc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voc", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    tenant = f"clitest-{uuid.uuid4().hex[:8]}"
    created = voc("keys", "create", tenant)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    key_id = key_id_of(hash_key(key))
    listing = voc("keys", "list", "--tenant", tenant)
    assert listing.returncode == 0 and key_id in listing.stdout and key not in listing.stdout
    rotated = voc("keys", "rotate", key_id)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.splitlines()[0]
    assert (
        new.startswith("voc_") and f"key {key_id} of tenant {tenant} is revoked" in rotated.stdout
    )
    revoked = voc("keys", "revoke", new)
    assert revoked.returncode == 0 and "revoked key" in revoked.stdout
    missing = voc("keys", "revoke", "0123456789abcdef")
    assert missing.returncode == 1 and "no API key with id" in missing.stderr
