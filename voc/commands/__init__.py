"""`voc` subcommands, one module each.

To add a command: write a module with `register(subparsers: Subparsers) -> None` that adds its
parser(s) with `subparsers.add_parser(NAME, parents=[profile_parent()], help=...)` (the parent
gives it `--profile`) and `set_defaults(func=handler)`, where `handler(args) -> int` returns the
exit status; then add the module's dotted name to `COMMAND_MODULES` in voc/cli.py.
Handlers write user output with `out()`; raise `CommandError` (or `voc.stack.StackError`) for a
clean one-line error and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from voc.stack import Stack

Subparsers = argparse._SubParsersAction  # the type argparse gives to add_subparsers()


class CommandError(Exception):
    """A user-facing failure: `voc` prints the message and exits with status 1."""


def profile_parent() -> argparse.ArgumentParser:
    """A parent parser adding `--profile` (also accepted before the subcommand)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--profile",
        choices=["dev", "test"],
        default=argparse.SUPPRESS,  # so `voc --profile test up` is not reset by the subparser
        help="which local stack (default: $VOC_PROFILE or dev)",
    )
    return parent


def profile_of(args: argparse.Namespace) -> str:
    """The profile chosen on the command line, else $VOC_PROFILE, else dev."""
    return getattr(args, "profile", None) or os.environ.get("VOC_PROFILE") or "dev"


def stack_of(args: argparse.Namespace) -> Stack:
    """The Stack for the chosen profile."""
    return Stack(profile=profile_of(args))


def out(text: str = "") -> None:
    """Write one line of user output to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
