"""Pytest fixtures of the LLM layer's integration tests: a private redis-server and a fake
LLM server, each a real subprocess on a free port, stopped by PID at the end.

Use as a plugin: `pytest_plugins = ["tests.integration.llm_fixtures"]`, or import the
fixtures. Independent of the session `stack`: these tests switch faults on and off on
their fake and flush their Redis, which must not disturb a shared stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.llm.settings import LLMSettings
from voc.fake_llm import launch
from voc.fake_llm.admin import admin_headers

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the process, SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class RedisProc:
    """A redis-server we started."""

    port: int
    proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) it on its port and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        """Stop it (by PID)."""
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None


@dataclass
class FakeLLM:
    """A fake LLM server we started, with helpers for its admin API."""

    url: str
    proc: subprocess.Popen[Any]

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def configure(self, **changes: Any) -> dict[str, Any]:
        """`POST /admin/config`."""
        r = httpx.post(
            self.url + "/admin/config", json=changes, headers=admin_headers(), timeout=10
        )
        r.raise_for_status()
        return dict(r.json())

    def stats(self, arrivals: bool = False) -> dict[str, Any]:
        """`GET /stats`."""
        r = httpx.get(self.url + "/stats", params={"arrivals": 1} if arrivals else None, timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def reset(self) -> None:
        """Default config (no latency, limit or faults) and zeroed stats."""
        self.configure(
            latency_min_ms=0,
            latency_max_ms=0,
            rate_limit_rps=0,
            rate_limit_burst=0,
            error_rate=0,
            timeout_rate=0,
            malformed_rate=0,
            truncated_rate=0,
            fenced_rate=0,
            missing_item_rate=0,
            bad_quote_rate=0,
            fault_match=None,
            hang_s=600,
            slots=0,
            token_latency_ms=0,
            finish_for_gone_clients=True,
            echo_rate=0,
            stubborn_rate=0,
            max_items=0,
            loop_rate=0,
        )
        httpx.post(
            self.url + "/stats/reset", headers=admin_headers(), timeout=10
        ).raise_for_status()


def start_fake_llm(*args: str) -> FakeLLM:
    """Run `python -m voc.fake_llm --port 0 ...` and wait until it listens."""
    # (a generous start timeout: imports take tens of seconds on a starved machine)
    proc, url = launch.spawn(
        *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout_s=120.0
    )
    return FakeLLM(url, proc)


@pytest.fixture(scope="session")
def llm_redis() -> Iterator[RedisProc]:
    """A private redis-server for the session."""
    r = RedisProc(free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture
def new_redis() -> Iterator[Callable[[], RedisProc]]:
    """A factory of extra redis-servers (started; all stopped after the test)."""
    started: list[RedisProc] = []

    def make() -> RedisProc:
        r = RedisProc(free_port())
        r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLM]:
    """A private fake LLM server for the session."""
    fake = start_fake_llm()
    yield fake
    stop_pid(fake.proc)


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM) -> FakeLLM:
    """The session's fake, reset to defaults for this test."""
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture
def llm_settings(fake_llm: FakeLLM) -> LLMSettings:
    """Settings pointing at the fake, fast retries, and a key prefix of this test only."""
    return LLMSettings(
        base_url=fake_llm.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="voc-fake-1",
        timeout_s=5.0,
        deadline_s=30.0,
        rps=500.0,
        max_attempts=4,
        malformed_attempts=3,
        backoff_base_s=0.05,
        backoff_max_s=0.5,
        key_prefix=f"t{uuid.uuid4().hex[:8]}",
        stages={},
    )
