"""What the benchmarks share: the stack's processes, their memory and CPU, and cleanup.

`Watch` samples every process of the local stack (found by PID through `voc.stack.Stack`,
never by name) in a background thread: peak VmRSS while the benchmark runs, VmHWM, and CPU
seconds used, Postgres counted with all its backends. `purge_jobs` removes a benchmark's
jobs so nothing it leaves behind holds the LLM quota later: it stops the analysis stages,
moves their consumer groups past the records they have not read yet and deletes the
jobs' rows from every table; `drained` says whether that is safe (no other work pending).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from shared.topics import RETRY_TIERS, STAGE_INPUT, retry_topic, stage_group
from voc.replay_offsets import commit_offsets, plan, read_offsets
from voc.stack import FAKE_LLM, SERVICES, Stack

ANALYSIS_STAGES = ("learn", "translate", "insight", "theme", "report")
INFRA = ("postgres", "kafka", "redis")
RSS_LIMIT_MB = 150.0  # SPEC: every service stays under this under load
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str = "") -> None:
    """Print a line at once (benchmarks run for minutes)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the processes (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass
class Proc:
    """One watched component: its PID, the peak RSS seen, and CPU at start and end."""

    name: str
    pid: int
    tree: bool = False  # descendants too (Postgres backends, Celery workers): CPU summed,
    # RSS the largest single process
    peak_rss_kb: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    _pids: list[int] = field(default_factory=list)

    def pids(self, refresh: bool = False) -> list[int]:
        if refresh or not self._pids:
            self._pids = process_tree(self.pid) if self.tree else [self.pid]
        return self._pids

    def sample(self) -> None:
        # Per process: a tree's processes share memory (Postgres' buffers), so a sum lies.
        rss = max((_status_kb(p, "VmRSS") for p in self.pids()), default=0)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)

    @property
    def hwm_kb(self) -> int:
        """The kernel's lifetime peak (VmHWM) of the main process."""
        return _status_kb(self.pid, "VmHWM")

    @property
    def cpu_s(self) -> float:
        return self.cpu_end - self.cpu_start


class Watch:
    """Samples the RSS of a set of processes every `interval_s` and brackets their CPU."""

    def __init__(self, procs: Sequence[Proc], interval_s: float = 0.1) -> None:
        self.procs = list(procs)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)

    @classmethod
    def stack(cls, stack: Stack, extra: Sequence[Proc] = ()) -> Watch:
        """Every running service of `stack` (plus its fake LLM and infrastructure)."""
        procs = []
        for name in [*SERVICES, FAKE_LLM, *INFRA]:
            pid = stack.service_pid(name)
            if pid is not None:
                procs.append(Proc(name, pid, tree=name == "postgres"))
        return cls([*procs, *extra])

    def __enter__(self) -> Watch:
        for p in self.procs:
            p.cpu_start = cpu_seconds(p.pids(refresh=True))
            p.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for p in self.procs:
            p.cpu_end = cpu_seconds(p.pids(refresh=True))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            n += 1
            for p in self.procs:
                if p.tree and n % 20 == 0:
                    p.pids(refresh=True)  # new backends come and go
                p.sample()

    def report(self) -> dict[str, Any]:
        """Per process: peak RSS MB (sampled), VmHWM MB and CPU seconds; for the RESULT."""
        return {
            p.name: {
                "peak_rss_mb": round(p.peak_rss_kb / 1024, 1),
                "hwm_mb": round(p.hwm_kb / 1024, 1),
                "cpu_s": round(p.cpu_s, 2),
            }
            for p in self.procs
        }

    def print(self, title: str) -> None:
        """A table of the report, flagging services over the RSS limit."""
        print_table(title, self.report())

    def services_peak(self) -> dict[str, float]:
        """Peak sampled RSS (MB) of each pipeline service."""
        return {p.name: round(p.peak_rss_kb / 1024, 1) for p in self.procs if p.name in SERVICES}


def print_table(title: str, report: dict[str, dict[str, float]]) -> None:
    """Per process peak RSS, VmHWM and CPU seconds; services over the RSS limit flagged."""
    say(f"{title}: process  peak RSS MB (sampled)  VmHWM MB  CPU s")
    for name, r in report.items():
        over = name in SERVICES and r["peak_rss_mb"] > RSS_LIMIT_MB
        flag = f"  OVER {RSS_LIMIT_MB:g} MB" if over else ""
        say(f"  {name:13s} {r['peak_rss_mb']:8.1f} {r['hwm_mb']:10.1f} {r['cpu_s']:8.2f}{flag}")


# -- cleanup ---------------------------------------------------------------------------------


def _stage_groups(prefix: str, stages: Iterable[str]) -> list[tuple[str, str]]:
    """(group, topic) of each stage's input and retry-tier consumers."""
    out = []
    for stage in stages:
        group = stage_group(stage, prefix)
        out.append((group, STAGE_INPUT[stage].full_name(prefix)))
        out.extend(
            (f"{group}.retry", retry_topic(stage, t).full_name(prefix))
            for t in range(1, RETRY_TIERS + 1)
        )
    return out


async def _lag(bootstrap: str, prefix: str, stages: Iterable[str]) -> int:
    total = 0
    for group, topic in _stage_groups(prefix, stages):
        for p in await read_offsets(bootstrap, group, topic, None, None):
            total += p.log_end - (p.committed if p.committed is not None else p.log_start)
    return total


def pending_records(stack: Stack, stages: Iterable[str] = ANALYSIS_STAGES) -> int:
    """Records the stages' consumer groups have not committed yet (0: nothing in flight)."""
    env = stack.env()
    prefix = env.get("VOC_TOPIC_PREFIX", "voc.")
    return asyncio.run(_lag(env["KAFKA_BOOTSTRAP_SERVERS"], prefix, stages))


async def _skip_to_end(bootstrap: str, prefix: str, stages: Iterable[str]) -> int:
    skipped = 0
    for group, topic in _stage_groups(prefix, stages):
        parts = await read_offsets(bootstrap, group, topic, None, None)
        skipped += sum(
            p.log_end - (p.committed if p.committed is not None else p.log_start) for p in parts
        )
        await commit_offsets(bootstrap, group, topic, plan("latest", None, parts))
    return skipped


def _job_tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND column_name = 'job_id' "
        "AND table_name <> 'jobs' ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def delete_jobs(database_url: str, job_ids: Sequence[str]) -> int:
    """Delete the jobs and every row that names them; returns the rows deleted."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    deleted = 0
    with psycopg.connect(url) as conn:
        for table in _job_tables(conn):
            cur = conn.execute(
                f'DELETE FROM "{table}" WHERE job_id = ANY(%s)',
                (list(job_ids),),
            )
            deleted += cur.rowcount
        deleted += conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", (list(job_ids),)).rowcount
    return deleted


def stop_stages(stack: Stack, stages: Iterable[str] = ANALYSIS_STAGES) -> list[str]:
    """Stop the running ones among `stages`; returns those that were running."""
    running = [s for s in stages if stack.service_pid(s) is not None]
    for s in running:
        stack.stop_service(s)
    return running


def start_stages(stack: Stack, stages: Iterable[str]) -> None:
    """Start `stages` (those not running) and wait until they answer."""
    for s in stages:
        if stack.service_pid(s) is None:
            stack.start_service(s, wait=False)
    stack.wait_healthy(list(stages), timeout=120)


def purge_jobs(stack: Stack, job_ids: Sequence[str], restart: Iterable[str] = ()) -> None:
    """Remove the benchmark's jobs: stop the analysis stages, skip the records they have
    not read (only the benchmark's, when `pending_records` was 0 before it), delete the
    jobs' rows, then start `restart` again."""
    if not job_ids:
        return
    t0 = time.monotonic()
    stop_stages(stack)
    env = stack.env()
    skipped = asyncio.run(
        _skip_to_end(
            env["KAFKA_BOOTSTRAP_SERVERS"], env.get("VOC_TOPIC_PREFIX", "voc."), ANALYSIS_STAGES
        )
    )
    rows = delete_jobs(env["DATABASE_URL"], job_ids)
    start_stages(stack, restart)
    say(
        f"cleanup: {len(job_ids)} job(s) removed ({rows} rows, {skipped} unread records "
        f"skipped) in {time.monotonic() - t0:.1f} s"
    )
