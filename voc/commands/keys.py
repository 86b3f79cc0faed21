"""`voc keys create | list | revoke | rotate`: a tenant's API keys in the stack's database.

Keys are named by their key id (the first hex digits of their hash, as `list` shows
them); the key itself is printed once, by `create` and `rotate`, and never stored.
`revoke` and `rotate` also tell every API replica over Redis to drop the key from its
cache, so a revoked key is refused at once everywhere.

The database and Redis are the chosen local stack's; where there is no local stack (in a
pod: `kubectl exec deploy/vocstream-api -- voc keys list`) they come from `DATABASE_URL`
and `REDIS_URL`.
"""

from __future__ import annotations

import argparse
import os

from shared.auth import (
    KeyInfo,
    KeyNotFound,
    list_api_keys_sync,
    revoke_api_key_sync,
    rotate_api_key_sync,
)
from voc.commands import CommandError, Subparsers, out, profile_parent, stack_of


def register(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="manage API keys")
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", parents=[profile_parent()], help="create a key for TENANT and print it"
    )
    create.add_argument("tenant", help="tenant id (letters, digits, _ . -)")
    create.set_defaults(func=cmd_create)

    listing = actions.add_parser(
        "list", parents=[profile_parent()], help="list keys: id, tenant, created, revoked"
    )
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(func=cmd_list)

    revoke = actions.add_parser(
        "revoke", parents=[profile_parent()], help="revoke a key now, on every API replica"
    )
    revoke.add_argument("key", help="a key id from `voc keys list` (or the key itself)")
    revoke.set_defaults(func=cmd_revoke)

    rotate = actions.add_parser(
        "rotate",
        parents=[profile_parent()],
        help="issue a new key for the same tenant and revoke the old one",
    )
    rotate.add_argument("key", help="a key id from `voc keys list` (or the key itself)")
    rotate.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the old key valid this long, so clients can switch (default 0: now)",
    )
    rotate.set_defaults(func=cmd_rotate)


def _urls(args: argparse.Namespace) -> tuple[str, str | None]:
    stack = stack_of(args)
    env = stack.env()
    database = env.get("DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not database:
        raise CommandError(
            f"no {stack.profile.name} stack here and DATABASE_URL is not set: "
            "run `voc up` first, or set DATABASE_URL (and REDIS_URL)"
        )
    return database, env.get("REDIS_URL") or os.environ.get("REDIS_URL")


def _when(info: KeyInfo) -> str:
    if info.revoked_at is None:
        return "-"
    return info.revoked_at.isoformat(timespec="seconds")


def _told(published: bool) -> None:
    if not published:
        out(
            "voc: warning: Redis not reached; API replicas refuse the key once their key "
            "cache entry expires (VOC_API_KEY_CACHE_TTL_S)"
        )


def cmd_create(args: argparse.Namespace) -> int:
    try:
        key = stack_of(args).create_api_key(args.tenant)
    except ValueError as exc:  # an invalid tenant name
        raise CommandError(str(exc)) from exc
    # The key is shown once, here; only its hash is stored.
    out(key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    database, _ = _urls(args)
    keys = list_api_keys_sync(database, args.tenant)
    out(f"{'KEY ID':<14}{'PREFIX':<10}{'TENANT':<26}{'CREATED':<27}REVOKED")
    for k in keys:
        out(
            f"{k.key_id:<14}{k.prefix:<10}{k.tenant_id:<26}"
            f"{k.created_at.isoformat(timespec='seconds'):<27}{_when(k)}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    database, redis_url = _urls(args)
    try:
        info, published = revoke_api_key_sync(database, redis_url, args.key)
    except KeyNotFound as exc:
        raise CommandError(str(exc)) from exc
    out(f"revoked key {info.key_id} of tenant {info.tenant_id} at {_when(info)}")
    _told(published)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    database, redis_url = _urls(args)
    try:
        key, old, published = rotate_api_key_sync(database, redis_url, args.key, args.grace)
    except (KeyNotFound, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    # The new key is shown once, here, on a line of its own (scripts take the first line).
    out(key)
    out(f"key {old.key_id} of tenant {old.tenant_id} is revoked at {_when(old)}")
    _told(published)
    return 0
