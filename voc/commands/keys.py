"""`voc keys create TENANT`: issue an API key for a tenant in the stack's database."""

from __future__ import annotations

import argparse

from voc.commands import CommandError, Subparsers, out, profile_parent, stack_of


def register(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="manage API keys")
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", parents=[profile_parent()], help="create a key for TENANT and print it"
    )
    create.add_argument("tenant", help="tenant id (letters, digits, _ . -)")
    create.set_defaults(func=cmd_create)


def cmd_create(args: argparse.Namespace) -> int:
    try:
        key = stack_of(args).create_api_key(args.tenant)
    except ValueError as exc:  # an invalid tenant name
        raise CommandError(str(exc)) from exc
    # The key is shown once, here; only its hash is stored.
    out(key)
    return 0
