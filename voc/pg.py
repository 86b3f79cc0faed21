"""A local PostgreSQL server for the stack: initdb once, pg_ctl start, role and database `voc`.

Postgres refuses to run as root, so as root every server command runs as the `postgres` user
(`runuser -u postgres --`) in a data directory that user owns.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from voc import procs, sysdeps

log = logging.getLogger("voc.stack")

PG_USER = "postgres"


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", PG_USER, "--", *argv]


def _chown_to_pg(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=PG_USER, group=PG_USER)


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's PID (from postmaster.pid) or None if it is not running."""
    pid = procs.read_pid(data_dir / "postmaster.pid")
    return pid if procs.is_alive(pid) else None


def init(pg_dir: Path) -> bool:
    """Create the cluster in pg_dir/data if absent. Returns True if it was created now."""
    data = pg_dir / "data"
    if (data / "PG_VERSION").exists():
        return False
    bindir = sysdeps.postgres_bindir()
    pg_dir.mkdir(parents=True, exist_ok=True)
    _chown_to_pg(pg_dir)
    cmd = [
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        PG_USER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-instructions",
    ]
    done = subprocess.run(_as_pg_user(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"initdb failed (the {PG_USER} user must be able to reach {pg_dir}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    # A throwaway local database: durability against an OS crash is worth nothing here, and
    # fsync off makes the many small upsert transactions of tests and demos much faster.
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# vocstream local stack (voc up)\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
        )
    log.info("postgres: initialised %s", data)
    return True


def start(pg_dir: Path, port: int, log_path: Path) -> int:
    """Start the server (if not running) and return the postmaster PID."""
    data = pg_dir / "data"
    running = postmaster_pid(data)
    if running is not None:
        return running
    if procs.port_open(port):
        raise RuntimeError(f"port {port} is taken by a Postgres this stack did not start")
    bindir = sysdeps.postgres_bindir()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    _chown_to_pg(log_path)  # the server (running as postgres) appends to it
    cmd = [
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log_path),
        "-w",
        "-t",
        "60",
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1",
        "start",
    ]
    done = subprocess.run(_as_pg_user(cmd), capture_output=True, text=True)
    pid = postmaster_pid(data)
    if done.returncode != 0 or pid is None:
        raise RuntimeError(
            f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{procs.tail(log_path)}"
        )
    return pid


def ensure_database(port: int, role: str = "voc", database: str = "voc") -> None:
    """Create the application role and database (owned by it) if they do not exist."""
    import psycopg
    from psycopg import sql

    url = f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(role)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
