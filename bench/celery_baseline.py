"""Run the older Celery design (`../shared/bench/celery_baseline`) once and return its figures.

The same steps as its `run.sh` (its own Postgres with fsync and synchronous commit on, its
own Redis, `uvicorn app:api`, a prefork Celery worker with one process per core, then its
`drive.py`), with two differences that keep the comparison fair on a shared machine: the
ports are shifted by `VOC_PORT_OFFSET`, and the CPU seconds and peak RSS of every process
it starts are measured the same way as vocstream's (`bench.stackwatch`). Its Python
environment (celery and friends, which vocstream does not depend on) is created once in
`tools/bench-baseline/.venv`.

    python -m bench.celery_baseline [-n 100000] [--file a.csv ...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stackwatch import Proc, Watch, cores, say
from voc import sysdeps

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT.parent / "shared" / "bench" / "celery_baseline"
VENV = ROOT / "tools" / "bench-baseline" / ".venv"
PACKAGES = ("celery", "packaging", "redis", "psycopg[binary]", "fastapi", "uvicorn", "httpx")
SHARED_DATA = ROOT.parent / "shared" / "data" / "reviews"


def default_files() -> list[str]:
    """The shared MARC review samples (empty if absent: drive.py then generates text)."""
    return sorted(glob.glob(str(SHARED_DATA / "marc_*.csv")))


def ensure_venv() -> Path:
    """The baseline's Python, its venv created on first use."""
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    say(f"celery baseline: creating {VENV} ({', '.join(PACKAGES)})")
    subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def _ports() -> tuple[int, int, int]:
    offset = int(os.environ.get("VOC_PORT_OFFSET") or 0)
    return 55491 + offset, 16391 + offset, 18091 + offset


def _wait_port(port: int, timeout: float = 180.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f}s")


def run(n: int, files: Sequence[str]) -> dict[str, Any]:
    """One run of the older design on `n` reviews; its RESULT document plus CPU and RSS."""
    if not BASELINE.exists():
        raise SystemExit(f"no celery baseline at {BASELINE}")
    python = ensure_venv()
    venv_bin = python.parent
    pgbin = sysdeps.postgres_bindir()
    pg_port, redis_port, api_port = _ports()
    work = Path(tempfile.mkdtemp(prefix="celery-baseline."))
    shutil.chown(work, "postgres")
    os.chmod(work, 0o755)
    env = {
        **os.environ,
        "CB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
        "CB_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
    }
    as_pg = ["runuser", "-u", "postgres", "--"]
    started: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(
            [
                *as_pg,
                str(pgbin / "initdb"),
                "-D",
                str(work / "pg"),
                "-U",
                "postgres",
                "--auth=trust",
            ],
            check=True,
            capture_output=True,
        )
        opts = f"-h 127.0.0.1 -p {pg_port} -k {work} -c fsync=on -c synchronous_commit=on"
        subprocess.run(
            [
                *as_pg,
                str(pgbin / "pg_ctl"),
                "-D",
                str(work / "pg"),
                "-w",
                "-l",
                str(work / "pg.log"),
                "-o",
                opts,
                "start",
            ],
            check=True,
            capture_output=True,
        )
        redis = subprocess.Popen(
            [
                sysdeps.require("redis-server", "redis-server"),
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        started.append(redis)
        _wait_port(redis_port)
        subprocess.run(
            [
                str(pgbin / "psql"),
                "-q",
                env["CB_DATABASE_URL"],
                "-c",
                "CREATE TABLE reviews (job_id text, review_id text, text text, rating int, "
                "PRIMARY KEY (job_id, review_id))",
            ],
            check=True,
        )
        logs = (work / "worker.log").open("wb")
        worker = subprocess.Popen(
            [
                str(venv_bin / "celery"),
                "-A",
                "app:celery",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(cores()),
                "--loglevel",
                "WARNING",
            ],
            cwd=BASELINE,
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        )
        api = subprocess.Popen(
            [
                str(venv_bin / "uvicorn"),
                "app:api",
                "--port",
                str(api_port),
                "--log-level",
                "warning",
            ],
            cwd=BASELINE,
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        )
        started += [worker, api]
        _wait_port(api_port)
        time.sleep(4)  # as run.sh: let the worker's pool come up
        pg_pid = int((work / "pg" / "postmaster.pid").read_text().split()[0])
        procs = [
            Proc("api", api.pid),
            Proc("celery", worker.pid, tree=True),
            Proc("postgres", pg_pid, tree=True),
            Proc("redis", redis.pid),
        ]
        with Watch(procs) as watch:
            out = subprocess.run(
                [
                    str(python),
                    "drive.py",
                    str(n),
                    f"http://127.0.0.1:{api_port}/jobs/bench/reviews",
                    *list(files),
                ],
                cwd=BASELINE,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        result: dict[str, Any] = json.loads(line[len("RESULT ") :])
        result["processes"] = watch.report()
        result["cpu_s_total"] = round(sum(p.cpu_s for p in watch.procs), 2)
        return result
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(
            [*as_pg, str(pgbin / "pg_ctl"), "-D", str(work / "pg"), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the baseline once and print its RESULT line."""
    p = argparse.ArgumentParser(prog="python -m bench.celery_baseline", description=__doc__)
    p.add_argument("-n", type=int, default=100_000)
    p.add_argument("--file", nargs="+", action="extend", default=[])
    args = p.parse_args(argv)
    result = run(args.n, args.file or default_files())
    say(f"cores: {cores()}")
    say("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
