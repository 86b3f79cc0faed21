"""`voc replay offsets`: move a stage's (or any group's) committed offsets to reprocess data.

Dry run by default: prints partition, current offset, new offset and the change in lag.
`--execute` applies it, and refuses while the group has active members unless `--restart`
is given, which stops that stage's local service, resets, and starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from shared.topics import STAGE_INPUT, stage_group
from voc import replay_offsets as ro
from voc.commands import CommandError, Subparsers, out, profile_parent, stack_of


def register(subparsers: Subparsers) -> None:
    replay = subparsers.add_parser("replay", help="reprocess data: reset offsets, re-emit a job")
    actions = replay.add_subparsers(dest="replay_action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "offsets",
        parents=[profile_parent()],
        help="reset a consumer group's offsets (dry run unless --execute)",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--stage", choices=sorted(STAGE_INPUT), help="a pipeline stage")
    target.add_argument("--group", help="any consumer group (needs --topic)")
    p.add_argument("--topic", help="the topic, with --group")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-datetime", metavar="ISO8601", help="e.g. 2026-11-23T10:00:00Z")
    how.add_argument("--by-duration", metavar="PnDTnHnMnS", help="e.g. PT1H: one hour ago")
    how.add_argument("--to-offset", type=int, metavar="N")
    how.add_argument("--shift-by", type=int, metavar="N")
    p.add_argument("--partitions", help="comma-separated partitions (default: all)")
    p.add_argument("--execute", action="store_true", help="apply the reset")
    p.add_argument(
        "--restart", action="store_true", help="stop the stage's service, reset, start it"
    )
    p.set_defaults(func=cmd_offsets)


def _method(args: argparse.Namespace) -> tuple[str, object, int | None]:
    """(method, value, at_ms) from the mutually exclusive reset options."""
    if args.to_earliest:
        return "earliest", None, None
    if args.to_latest:
        return "latest", None, None
    if args.to_datetime:
        return "datetime", args.to_datetime, ro.parse_datetime_ms(args.to_datetime)
    if args.by_duration:
        at = datetime.now(UTC) - ro.parse_duration(args.by_duration)
        return "duration", args.by_duration, int(at.timestamp() * 1000)
    if args.to_offset is not None:
        return "offset", args.to_offset, None
    return "shift", args.shift_by, None


def cmd_offsets(args: argparse.Namespace) -> int:
    stack = stack_of(args)
    env = stack.env()
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    prefix = env.get("VOC_TOPIC_PREFIX", "voc.")
    if args.stage:
        group = stage_group(args.stage, prefix)
        topic = STAGE_INPUT[args.stage].full_name(prefix)
    else:
        if not args.topic:
            raise CommandError("--group needs --topic")
        group, topic = args.group, args.topic
    if args.restart and not args.stage:
        raise CommandError("--restart works with --stage (it restarts that stage's service)")
    only = {int(x) for x in args.partitions.split(",")} if args.partitions else None
    try:
        method, value, at_ms = _method(args)
        rows = ro.plan(
            method, value, asyncio.run(ro.read_offsets(bootstrap, group, topic, at_ms, only))
        )
    except ro.ResetError as exc:
        raise CommandError(str(exc)) from exc
    out(ro.render_plan(group, topic, rows))
    if not args.execute:
        out("dry run: nothing changed (add --execute to apply)")
        return 0
    if args.restart:
        stack.stop_service(args.stage)
    try:
        members = asyncio.run(ro.active_members(bootstrap, group))
        if members:
            raise CommandError(
                f"group {group} has {members} active member(s); stop them first "
                "(or use --stage S --restart)"
            )
        asyncio.run(ro.commit_offsets(bootstrap, group, topic, rows))
        out(f"applied: {len(rows)} partition(s) of {topic} for group {group}")
    finally:
        if args.restart:
            stack.start_service(args.stage)
    return 0
