"""`voc dlq`: list, show and redrive dead-lettered records.

Dead letters live in two places: the stage's `.dlq` topic (the record and its headers, for
any consumer) and the `dead_letters` table (one row per failed review, with the record's
bytes), which is what these commands read. A redrive sends each distinct failed record
back to its stage's input topic and marks its rows `redriven_at`, so a second redrive does
not send them again; a review that fails again gets a fresh row and can be redriven again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from shared.topics import STAGE_INPUT
from voc.commands import CommandError, Subparsers, out, profile_parent, stack_of

RecordKey = tuple[str, str, str]  # stage, original topic:partition:offset, payload hash


def register(subparsers: Subparsers) -> None:
    dlq = subparsers.add_parser("dlq", help="dead letters: list, show, redrive")
    actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", parents=[profile_parent()], help="counts and a table")
    _filters(ls)
    ls.add_argument("--all", action="store_true", help="include redriven records")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)
    show = actions.add_parser("show", parents=[profile_parent()], help="one record in full")
    show.add_argument("id", help="a dead letter id from `voc dlq list`")
    show.set_defaults(func=cmd_show)
    redrive = actions.add_parser(
        "redrive", parents=[profile_parent()], help="send records back (dry run unless --execute)"
    )
    _filters(redrive)
    redrive.add_argument("--ids", help="comma-separated dead letter ids")
    redrive.add_argument("--execute", action="store_true", help="really send them")
    redrive.set_defaults(func=cmd_redrive)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=sorted(STAGE_INPUT))
    p.add_argument("--job", help="a job id")
    p.add_argument("--since", help="ISO 8601 date-time (UTC when no zone)")


def _where(args: argparse.Namespace, *, active_only: bool) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if active_only:
        clauses.append("redriven_at IS NULL")
    if getattr(args, "stage", None):
        clauses.append("stage = %s")
        params.append(args.stage)
    if getattr(args, "job", None):
        clauses.append("job_id = %s")
        params.append(args.job)
    if getattr(args, "since", None):
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"--since: not an ISO 8601 date-time: {args.since!r}") from None
        clauses.append("created_at >= %s")
        params.append(since if since.tzinfo else since.replace(tzinfo=UTC))
    if getattr(args, "ids", None):
        clauses.append("id = ANY(%s)")
        params.append([x.strip() for x in args.ids.split(",") if x.strip()])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    return psycopg.connect(stack_of(args).env()["DATABASE_URL"])


def cmd_list(args: argparse.Namespace) -> int:
    where, params = _where(args, active_only=not args.all)
    with _connect(args) as conn:
        counts = conn.execute(
            f"SELECT stage, error_type, count(*) FROM dead_letters{where} "
            "GROUP BY stage, error_type ORDER BY stage, count(*) DESC",
            params,
        ).fetchall()
        rows = conn.execute(
            "SELECT id, stage, job_id, attempts, error_type, left(error, 60), created_at, "
            f"redriven_at FROM dead_letters{where} ORDER BY created_at DESC LIMIT %s",
            [*params, args.limit],
        ).fetchall()
    total = sum(c for _, _, c in counts)
    out(f"{total} dead letter(s)" + ("" if args.all else " waiting (not redriven)"))
    for stage, etype, count in counts:
        out(f"  {stage:<10} {etype:<24} {count}")
    if rows:
        out("")
        out(f"{'ID':<48} {'STAGE':<9} {'JOB':<36} {'TRY':>3}  ERROR")
        for rid, stage, job, attempts, etype, err, _created, redriven in rows:
            mark = " (redriven)" if redriven else ""
            out(f"{rid[:48]:<48} {stage:<9} {job or '-':<36} {attempts:>3}  {etype}: {err}{mark}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        row = conn.execute(
            'SELECT id, stage, job_id, review_id, topic, partition, "offset", attempts, '
            "error_type, error, created_at, redriven_at, payload FROM dead_letters WHERE id = %s",
            (args.id,),
        ).fetchone()
    if row is None:
        raise CommandError(f"no dead letter {args.id!r}")
    keys = [
        "id",
        "stage",
        "job_id",
        "review_id",
        "topic",
        "partition",
        "offset",
        "attempts",
        "error_type",
        "error",
        "created_at",
        "redriven_at",
    ]
    doc: dict[str, Any] = dict(zip(keys, row[:-1], strict=True))
    payload: bytes | None = row[-1]
    try:
        doc["record"] = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        doc["record_bytes"] = (payload or b"")[:2000].decode("utf-8", errors="backslashreplace")
    out(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    where, params = _where(args, active_only=True)
    env = stack_of(args).env()
    with _connect(args) as conn:
        rows = conn.execute(
            f'SELECT id, stage, topic, partition, "offset", payload FROM dead_letters{where} '
            "ORDER BY created_at",
            params,
        ).fetchall()
        # A whole failed record has one row per review, all with the same bytes: send it
        # once. Single-review dead letters of one original record have different bytes.
        records: dict[RecordKey, bytes] = {}
        ids_by_record: dict[RecordKey, list[str]] = {}
        skipped = 0
        for rid, stage, topic, part, off, payload in rows:
            if payload is None or stage not in STAGE_INPUT:
                skipped += 1
                continue
            value = bytes(payload)
            key = (stage, f"{topic}:{part}:{off}", hashlib.sha256(value).hexdigest())
            records.setdefault(key, value)
            ids_by_record.setdefault(key, []).append(rid)
        out(f"{len(rows)} dead letter(s), {len(records)} record(s) to redrive, {skipped} skipped")
        if not args.execute:
            out("dry run: nothing sent (add --execute to send)")
            return 0
        prefix = env.get("VOC_TOPIC_PREFIX", "voc.")
        sent = asyncio.run(_send(env["KAFKA_BOOTSTRAP_SERVERS"], prefix, records))
        conn.execute(
            "UPDATE dead_letters SET redriven_at = now() WHERE id = ANY(%s)",
            ([i for ids in ids_by_record.values() for i in ids],),
        )
    out(f"redriven: {sent} record(s) sent to their stages' input topics")
    return 0


async def _send(bootstrap: str, prefix: str, records: dict[RecordKey, bytes]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = []
        for (stage, origin, _), value in records.items():
            headers = [("voc-redrive-of", origin.encode())]
            futures.append(
                await producer.send(STAGE_INPUT[stage].full_name(prefix), value, headers=headers)
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()
