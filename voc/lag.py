"""`voc lag`: consumer lag per stage, group, topic and partition, in the terminal or as JSON.

The figures come from the lag exporter's own core and Kafka adapter
(`services.lag_exporter`), read directly from the cluster - so at a quiet moment they are
exactly what `kafka-consumer-groups --describe` prints, and what the exporter exports.

    voc lag                      summary per stage/group/topic (rates from two reads 1 s apart)
    voc lag -p                   ... and one line per partition
    voc lag --json               one object per group/topic/partition, for scripts
    voc lag --watch [SECONDS]    refresh until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from services.lag_exporter.core import (
    GroupFilter,
    LagRow,
    RateTracker,
    Snapshot,
    lag_rows,
    stage_of,
    summarise,
)
from shared.topics import STAGES
from voc.commands import Subparsers, out, profile_parent, stack_of
from voc.stack import StackError


def register(subparsers: Subparsers) -> None:
    """Add `voc lag` to the CLI."""
    p = subparsers.add_parser(
        "lag", parents=[profile_parent()], help="consumer lag per stage, group and partition"
    )
    p.add_argument("--bootstrap-server", help="Kafka to read (default: the profile's stack)")
    p.add_argument("--group", default=".*", help="regex the group id must fully match")
    p.add_argument("--json", action="store_true", help="one object per group/topic/partition")
    p.add_argument("-p", "--partitions", action="store_true", help="also list every partition")
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )
    p.add_argument(
        "--rate-window",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="without --watch: seconds between the two reads that give rates (0: no rates)",
    )
    p.set_defaults(func=cmd_lag)


def _resolve(args: argparse.Namespace) -> tuple[str, str]:
    """Bootstrap servers and topic prefix: flag, else the profile's stack.env, else env."""
    env: dict[str, str] = {}
    try:
        env = stack_of(args).env()
    except StackError:
        env = {}
    bootstrap = (
        args.bootstrap_server
        or env.get("KAFKA_BOOTSTRAP_SERVERS")
        or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    )
    if not bootstrap:
        from shared.settings import KafkaSettings

        bootstrap = KafkaSettings().bootstrap_servers
    prefix = env.get("VOC_TOPIC_PREFIX") or os.environ.get("VOC_TOPIC_PREFIX") or "voc."
    return bootstrap, prefix


def cmd_lag(args: argparse.Namespace) -> int:
    """Run `voc lag`."""
    bootstrap, prefix = _resolve(args)
    try:
        return asyncio.run(_lag(args, bootstrap, prefix))
    except KeyboardInterrupt:
        return 130


async def _lag(args: argparse.Namespace, bootstrap: str, prefix: str) -> int:
    # Imported here so `voc --help` does not pay for aiokafka.
    from aiokafka.errors import KafkaError

    from services.lag_exporter.kafka import KafkaLagSource

    source = KafkaLagSource(bootstrap, client_id="voc-lag-cli")
    try:
        await source.start()
    except KafkaError as exc:
        raise StackError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    allow = GroupFilter(args.group)
    rates = RateTracker()
    try:
        if args.watch is None:
            if not args.json and args.rate_window > 0:
                first = await source.snapshot(allow)
                rates.update(lag_rows(first), first.taken_at)
                await asyncio.sleep(args.rate_window)
            _show(args, await source.snapshot(allow), rates, prefix, bootstrap)
            return 0
        while True:
            snap = await source.snapshot(allow)
            if not args.json:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between refreshes
            _show(args, snap, rates, prefix, bootstrap)
            await asyncio.sleep(args.watch)
    finally:
        await source.close()


def _show(
    args: argparse.Namespace, snap: Snapshot, rates: RateTracker, prefix: str, bootstrap: str
) -> None:
    rows = lag_rows(snap)
    if args.json:
        out(json.dumps([r.as_json() for r in rows]))
        return
    topic_rates = rates.update(rows, snap.taken_at)
    summaries = {s.group: s for s in summarise(snap, rows)}
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    out(f"consumer lag on {bootstrap} at {stamp} ({len(summaries)} groups)")
    header = (
        f"{'STAGE':<10} {'GROUP':<28} {'TOPIC':<28} {'PARTS':>5} {'LAG':>9} {'LAG-S':>8} "
        f"{'IN/s':>8} {'OUT/s':>8} {'MEMBERS':>7}"
    )
    out(header)
    order = {s: i for i, s in enumerate(STAGES)}
    keyed: dict[tuple[str, str], list[LagRow]] = {}
    for r in rows:
        keyed.setdefault((r.group, r.topic), []).append(r)

    def sort_key(gt: tuple[str, str]) -> tuple[int, str, str]:
        stage = stage_of(gt[0], prefix, STAGES)
        return (order.get(stage or "", len(order)), gt[0], gt[1])

    for group, topic in sorted(keyed, key=sort_key):
        trows = keyed[(group, topic)]
        stage = stage_of(group, prefix, STAGES) or "-"
        lags = [r.lag for r in trows if r.lag is not None]
        secs = [r.lag_seconds for r in trows if r.lag_seconds is not None]
        tr = topic_rates.get((group, topic))
        s = summaries.get(group)
        out(
            f"{stage:<10} {group:<28} {topic:<28} {len(trows):>5} "
            f"{(sum(lags) if lags else '-')!s:>9} {_fmt(max(secs) if secs else None):>8} "
            f"{_fmt(tr.rate_in if tr else None):>8} {_fmt(tr.rate_out if tr else None):>8} "
            f"{(s.members if s else 0):>7}"
        )
    if args.partitions:
        out()
        out(
            f"{'GROUP':<28} {'TOPIC':<28} {'PART':>4} {'CURRENT':>10} {'LOG-END':>10} "
            f"{'LAG':>8} {'LAG-S':>8}  CONSUMER"
        )
        for r in rows:
            who = f"{r.client_id}@{r.host}" if r.consumer_id else "-"
            cur = "-" if r.current_offset is None else str(r.current_offset)
            end = "-" if r.log_end_offset is None else str(r.log_end_offset)
            lag = "-" if r.lag is None else str(r.lag)
            out(
                f"{r.group:<28} {r.topic:<28} {r.partition:>4} {cur:>10} {end:>10} "
                f"{lag:>8} {_fmt(r.lag_seconds):>8}  {who}"
            )


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}"
