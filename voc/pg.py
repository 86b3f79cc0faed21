"""A local PostgreSQL server for the stack: initdb once, pg_ctl start, role and database `voc`.

Postgres refuses to run as root, so as root every server command runs as the `postgres` user
(`runuser -u postgres --`) in a data directory that user owns. That user must be able to
traverse every parent of the data directory; a clone under a private home directory (mode
700, as `/root` and `mktemp -d` folders are) is out of its reach, so there the cluster lives
under `/var/lib/vocstream/` instead (one directory per stack home, named after a hash of
its path) and the stack home holds a symlink to it (`cluster_dir`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from voc import procs, sysdeps

log = logging.getLogger("voc.stack")

PG_USER = "postgres"
# Where clusters go when the stack home is out of the postgres user's reach (root only).
SHARED_ROOT = Path("/var/lib/vocstream")


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", PG_USER, "--", *argv]


def _run_as_pg(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # cwd "/": the caller's directory may be one the postgres user cannot enter.
    return subprocess.run(_as_pg_user(argv), capture_output=True, text=True, cwd="/")


def _reachable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process of `uid` (in groups `gids`) can traverse every directory above
    `path` (the nearest existing one included)."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def cluster_dir(pg_dir: Path) -> Path:
    """Where the cluster of the stack directory `pg_dir` lives.

    `pg_dir` itself, unless this process is root and the postgres user cannot reach it:
    then a directory under `SHARED_ROOT` named after `pg_dir`'s path, with `pg_dir` made a
    symlink to it so the data is still found from the stack home.
    """
    if os.geteuid() != 0 or pg_dir.is_symlink():
        return pg_dir.resolve() if pg_dir.is_symlink() else pg_dir
    if (pg_dir / "data" / "PG_VERSION").exists():
        return pg_dir  # an existing in-tree cluster stays where it is
    user = pwd.getpwnam(PG_USER)
    gids = {user.pw_gid, *os.getgrouplist(PG_USER, user.pw_gid)}
    if _reachable_by(pg_dir, user.pw_uid, gids):
        return pg_dir
    digest = hashlib.sha256(str(pg_dir.resolve()).encode()).hexdigest()[:16]
    shared = SHARED_ROOT / f"pg-{digest}"
    shared.mkdir(parents=True, exist_ok=True)
    SHARED_ROOT.chmod(0o755)
    (shared / "OWNER").write_text(f"{pg_dir.resolve()}\n")
    if pg_dir.exists():
        shutil.rmtree(pg_dir)  # holds no cluster (checked above): an earlier failed attempt
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    pg_dir.symlink_to(shared, target_is_directory=True)
    log.info("postgres: %s is private, the cluster lives in %s", pg_dir.parent, shared)
    return shared


def remove_cluster(pg_dir: Path) -> None:
    """Delete the cluster of `pg_dir` where it lives (after the server was stopped)."""
    if pg_dir.is_symlink():
        target = pg_dir.resolve()
        pg_dir.unlink()
        if target.is_relative_to(SHARED_ROOT):
            shutil.rmtree(target, ignore_errors=True)


def _chown_to_pg(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=PG_USER, group=PG_USER)


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's PID (from postmaster.pid) or None if it is not running."""
    pid = procs.read_pid(data_dir / "postmaster.pid")
    return pid if procs.is_alive(pid) else None


def init(pg_dir: Path) -> bool:
    """Create the cluster in pg_dir/data if absent. Returns True if it was created now."""
    pg_dir = pg_dir.resolve()  # the server's user may not traverse the symlink's parents
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
    done = _run_as_pg(cmd)
    if done.returncode != 0:
        raise RuntimeError(
            f"initdb failed (the {PG_USER} user must be able to reach {pg_dir}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    # A throwaway local database: durability against an OS crash is worth nothing here, and
    # fsync off makes the many small upsert transactions of tests and demos much faster.
    # Commits stay synchronous (see `start`): a crash of the server process alone must not
    # lose a committed transaction, or the stages' "rows before offsets" would not hold.
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# vocstream local stack (voc up)\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
            "fsync = off\n"
            "full_page_writes = off\n"
        )
    log.info("postgres: initialised %s", data)
    return True


def start(pg_dir: Path, port: int, log_path: Path) -> int:
    """Start the server (if not running) and return the postmaster PID."""
    moved = pg_dir.is_symlink()
    pg_dir = pg_dir.resolve()
    data = pg_dir / "data"
    running = postmaster_pid(data)
    if running is not None:
        return running
    if procs.port_open(port):
        raise RuntimeError(f"port {port} is taken by a Postgres this stack did not start")
    bindir = sysdeps.postgres_bindir()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if moved and not log_path.is_symlink():
        # The cluster moved out of a private stack home (`cluster_dir`), so the server
        # cannot reach the stack's log directory either: it logs beside its data.
        log_path.unlink(missing_ok=True)
        log_path.symlink_to(pg_dir / "server.log")
    log_path = log_path.resolve()
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
        # synchronous_commit on (clusters made before said off): with fsync off, a commit
        # waits only for its WAL to reach the OS, which a killed server does not lose.
        f"-p {port} -c listen_addresses=127.0.0.1 -c synchronous_commit=on",
        "start",
    ]
    done = _run_as_pg(cmd)
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
