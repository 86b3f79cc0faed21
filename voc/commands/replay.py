"""`voc replay`: reprocess data.

`voc replay offsets` moves a stage's (or any group's) committed offsets. Dry run by
default: prints partition, current offset, new offset and the change in lag. `--execute`
applies it, and refuses while the group has active members unless `--restart` is given,
which stops that stage's local service, resets, and starts it again.

`voc replay job J --from STAGE` re-emits one job's records from Postgres into STAGE's
input topic and follows them to the report (see `voc.replay_job`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from shared.topics import STAGE_INPUT, stage_group
from voc import replay_job as rj
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
    j = actions.add_parser(
        "job",
        parents=[profile_parent()],
        help="re-emit one job's records from a stage on (dry run unless --execute)",
    )
    j.add_argument("job_id", metavar="JOB")
    j.add_argument("--from", dest="stage", required=True, choices=rj.PIPELINE)
    j.add_argument("--no-cache", action="store_true", help="bypass the LLM result cache")
    j.add_argument("--execute", action="store_true", help="really re-emit")
    j.add_argument("--timeout", type=float, default=1800, help="seconds to wait per stage")
    j.set_defaults(func=cmd_job)


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


def cmd_job(args: argparse.Namespace) -> int:
    env = stack_of(args).env()
    try:
        return asyncio.run(_replay_job(args, env))
    except rj.ReplayError as exc:
        raise CommandError(str(exc)) from exc


async def _replay_job(args: argparse.Namespace, env: dict[str, str]) -> int:
    import psycopg
    from aiokafka import AIOKafkaProducer

    prefix = env.get("VOC_TOPIC_PREFIX", "voc.")
    async with await psycopg.AsyncConnection.connect(env["DATABASE_URL"]) as conn:
        job = await rj.job_info(conn, args.job_id)
        events = [e async for e in rj.events_for(conn, job, args.stage)]
        await conn.commit()
        reviews = sum(
            len(getattr(e, "reviews", None) or getattr(e, "review_ids", [])) for e in events
        )
        topic = STAGE_INPUT[args.stage].full_name(prefix)
        cache = "bypassing the LLM cache" if args.no_cache else "using the LLM cache"
        out(
            f"job {job.id} ({job.status}): {len(events)} record(s), {reviews} review(s) "
            f"to {topic}, {cache}"
        )
        if not args.execute:
            out("dry run: nothing sent (add --execute to replay)")
            return 0
        replay_id = rj.new_replay_id()
        await rj.set_status(conn, env["REDIS_URL"], job, "reprocessing")
        producer = AIOKafkaProducer(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024,
        )
        await producer.start()
        try:
            marks = rj.headers(replay_id, args.no_cache)
            futures = [
                await producer.send(
                    topic, e.to_bytes(), key=f"{job.id}:replay:{i}".encode(), headers=marks
                )
                for i, e in enumerate(events)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        out(f"replay {replay_id}: sent; following it through the pipeline")
        stages = rj.PIPELINE[rj.PIPELINE.index(args.stage) :]
        for stage in stages:
            await rj.barrier(env["KAFKA_BOOTSTRAP_SERVERS"], prefix, stage, _bar, args.timeout)
            sys.stdout.write("\n")
        await rj.set_status(conn, env["REDIS_URL"], job, "replayed")
        status = await _wait_final(conn, job.id, args.timeout)
    out(f"job {job.id}: {status}")
    return 0 if status == "completed" else 1


def _bar(stage: str, done: int, total: int) -> None:
    width = 30
    filled = width if total == 0 else int(width * done / total)
    sys.stdout.write(f"\r  {stage:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stdout.flush()


async def _wait_final(conn: Any, job_id: str, timeout_s: float) -> str:
    """The job's status once the report stage has rebuilt its report (or the timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
        await conn.commit()
        status = str(row[0]) if row else "missing"
        if status != "replayed" or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.5)
