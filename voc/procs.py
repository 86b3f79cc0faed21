"""Start, identify and stop the local stack's child processes - always by PID, never by name.

Every child runs in its own session (so a Ctrl-C in the shell that ran `voc up` does not reach
it) with its output appended to a log file. A PID alone is not proof of identity (PIDs are
reused), so PID files also record the process's start time, and `owned_pid` checks both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

# Popen objects of children started by this process, kept so they are reaped (no zombies while a
# long-lived caller such as a pytest session kills and restarts services) and never finalised
# while still running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
) -> int:
    """Start `argv` detached in a new session, output appended to `log_path`; return its PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n--- {stamp} voc: starting {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        proc.poll()  # reaps it if it exited; kept so exit_code() can still report the status
        return
    # Not started by this process: nothing to reap unless it is our child after all.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def exit_code(pid: int) -> int | None:
    """The exit status of a child this process started and that has exited, else None."""
    proc = _CHILDREN.get(pid)
    return proc.poll() if proc is not None else None


def is_alive(pid: int | None) -> bool:
    """True if `pid` is a running (not zombie) process."""
    if pid is None or pid <= 0:
        return False
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state field follows the parenthesised command name, which may itself contain spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot, /proc/<pid>/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_pid(path: Path, pid: int) -> None:
    """Store `pid` (first line) and its start time (second line) in `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    ticks = start_ticks(pid)
    tmp.write_text(f"{pid}\n{ticks if ticks is not None else ''}\n")
    tmp.replace(path)


def read_pid(path: Path) -> int | None:
    """The PID stored in the first line of `path`, or None."""
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (OSError, IndexError, ValueError):
        return None


def owned_pid(path: Path) -> int | None:
    """The PID in `path` if that process is alive and is the one recorded (same start time)."""
    try:
        lines = path.read_text().splitlines()
        pid = int(lines[0].strip())
    except (OSError, IndexError, ValueError):
        return None
    if not is_alive(pid):
        return None
    recorded = lines[1].strip() if len(lines) > 1 else ""
    if not recorded or str(start_ticks(pid)) != recorded:
        return None  # unknown start time, or the PID now belongs to an unrelated process
    return pid


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def terminate(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 15.0,
    session: bool = True,
) -> bool:
    """Stop `pid` with `sig`, then SIGKILL after `timeout`. Returns True if SIGKILL was needed.

    With `session`, processes left in the session `pid` led (it was started with
    start_new_session, so nothing else can be in it) are SIGKILLed too, so a service's own
    worker processes never outlive it.
    """
    killed = False
    if is_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not wait_until(lambda: not is_alive(pid), timeout=timeout):
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not is_alive(pid), timeout=10)
    if session:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return killed


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' if absent), for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
