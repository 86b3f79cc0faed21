"""A local, memory-only Redis for the stack, run in the foreground so its PID is the one we
track (no --daemonize: a daemon would fork away from the PID we recorded)."""

from __future__ import annotations

import socket
from pathlib import Path

from voc import sysdeps


def command(port: int, workdir: Path) -> list[str]:
    """argv for a loopback-only Redis that never writes snapshots or an AOF."""
    server = sysdeps.require("redis-server", "redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(workdir),
    ]


def ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True if Redis answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
