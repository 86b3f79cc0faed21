"""Start the fake LLM server as a child process on a free port (benchmarks and tests)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path


class FakeLLMDidNotStart(RuntimeError):
    """The server exited or did not listen within the timeout."""


def spawn(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout_s: float = 30.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Run `python -m voc.fake_llm --port 0 ARGS`; returns the process and its base URL.

    The server writes its URL to a ready file once it listens, so no port is guessed.
    The caller stops the process (by its PID) when done.
    """
    ready = Path(tempfile.mkdtemp(prefix="fake-llm-")) / "url"
    cmd = [
        sys.executable,
        "-m",
        "voc.fake_llm",
        "--port",
        "0",
        "--ready-file",
        str(ready),
        "--log-level",
        "WARNING",
        *args,
    ]
    proc = subprocess.Popen(cmd, env=dict(env) if env is not None else None, cwd=cwd)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            raise FakeLLMDidNotStart(f"fake LLM did not start (exit {proc.returncode})")
        time.sleep(0.05)
    return proc, ready.read_text().strip()
