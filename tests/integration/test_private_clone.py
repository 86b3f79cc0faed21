"""A newcomer's first commands from a private directory: clone, bring the stack up, tear down.

A home directory is mode 700, and so is every `mktemp -d` folder. As root, Postgres runs
as the `postgres` user, which cannot enter such a directory: `initdb` used to fail with
"could not change directory ... Permission denied". This test clones the repository into a
fresh mode-700 directory and brings a whole stack up from there (on its own ports, beside
the session's test stack), then checks the API answers and tears everything down again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from voc.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_stack_comes_up_from_a_mode_700_clone(tmp_path_factory: pytest.TempPathFactory) -> None:
    private = tmp_path_factory.mktemp("home")
    private.chmod(0o700)
    clone = private / "vocstream"
    _run(["git", "clone", "-q", str(ROOT), str(clone)], private, dict(os.environ), 120)
    libs = ROOT / "tools" / "kafka" / "libs"
    if libs.is_dir():  # the Maven fetch is not what this test is about: reuse the jars
        shutil.copytree(libs, clone / "tools" / "kafka" / "libs")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VOC_", "KAFKA_")) and k not in
        ("DATABASE_URL", "REDIS_URL")
    }  # fmt: skip
    # Its own ports, 500 above this session's stack: both run side by side.
    env["VOC_PORT_OFFSET"] = str(int(os.environ.get("VOC_PORT_OFFSET") or 0) + 500)
    voc = [sys.executable, "-m", "voc"]  # run from the clone's cwd: its own `voc` package
    try:
        out = _run([*voc, "up", "--profile", "test", "--timeout", "300"], clone, env, 900)
        assert "test stack up" in out
        stack_env = (clone / ".voc-test" / "stack.env").read_text()
        assert str(clone) in stack_env
        values = dict(ln.split("=", 1) for ln in stack_env.splitlines() if "=" in ln)
        api = values["VOC_API_URL"].strip("'\"")
        with urllib.request.urlopen(api + "/health", timeout=10) as resp:
            assert resp.status == 200
        if os.geteuid() == 0:
            # The cluster moved where the postgres user can reach it, linked from the clone.
            assert (clone / ".voc-test" / "postgres").is_symlink()
    finally:
        _run([*voc, "down", "--profile", "test", "--purge"], clone, env, 300)
    assert not (clone / ".voc-test").exists()
    assert Stack(profile="test").is_running()  # the session's own stack is untouched
