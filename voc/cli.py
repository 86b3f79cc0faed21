"""The `voc` command line: local stack management plus operational subcommands.

The parser is assembled from COMMAND_MODULES; each module contributes its subcommands through
`register(subparsers)` (see voc/commands/__init__.py). Adding a command = one module + one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# One line per command module (each defines `register(subparsers)`), in `voc --help` order.
COMMAND_MODULES: tuple[str, ...] = (
    "voc.commands.stack_cmds",  # up, down, status, logs, env
    "voc.commands.keys",  # keys create
    "voc.commands.init",  # init (migrations and topics, for deployments)
    "voc.fake_llm.cli",  # fake-llm
    "voc.demo",  # demo, analyze
    "voc.lag",  # lag
    "voc.commands.replay",  # replay offsets, replay job
    "voc.commands.dlq",  # dlq list, show, redrive
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voc", description="vocstream: local stack and pipeline operations"
    )
    parser.add_argument(
        "--profile",
        choices=["dev", "test"],
        default=None,
        help="which local stack (default: $VOC_PROFILE or dev)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _configure_logging(verbose: bool) -> None:
    # Progress of `voc up`/`down` is user output: plain lines on stdout.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    voc_log = logging.getLogger("voc")
    voc_log.addHandler(handler)
    voc_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    voc_log.propagate = False
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    from voc.commands import CommandError
    from voc.stack import StackError

    try:
        return int(args.func(args) or 0)
    except (CommandError, StackError) as exc:
        sys.stderr.write(f"voc: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
