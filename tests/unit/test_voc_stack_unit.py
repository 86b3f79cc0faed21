"""The stack manager's pieces that need no running stack: PID identity, stopping by PID,
stack.env parsing, profile ports and the CLI's command registry."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from voc import cli, procs
from voc.profiles import METRICS_SLOTS, PROFILES
from voc.stack import SERVICES, Stack, StackError, parse_replicas
from voc.stackenv import parse_env_file


def test_spawned_child_is_tracked_and_stopped_by_pid(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    pid = procs.spawn(
        [sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"],
        env={"PATH": "/usr/bin:/bin"},
        log_path=log,
    )
    pidfile = tmp_path / "child.pid"
    procs.write_pid(pidfile, pid)
    assert procs.owned_pid(pidfile) == pid
    assert procs.wait_until(lambda: "hi" in log.read_text(), timeout=10)
    assert procs.terminate(pid, timeout=5) is False  # SIGTERM was enough
    assert not procs.is_alive(pid)  # reaped, not a zombie
    assert procs.owned_pid(pidfile) is None
    assert procs.exit_code(pid) == -signal.SIGTERM


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignor' + 'ing', flush=True); time.sleep(60)"  # the log echoes argv: split it
    )
    log = tmp_path / "x.log"
    pid = procs.spawn([sys.executable, "-c", code], env={}, log_path=log)
    # Only once the handler is installed does SIGTERM get ignored (a slow machine may take
    # seconds to start Python): wait for the child to say so.
    assert procs.wait_until(lambda: "ignoring" in log.read_text(), timeout=60)
    assert procs.terminate(pid, timeout=0.5) is True
    assert not procs.is_alive(pid)


def test_pid_file_of_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "stale.pid"
        pidfile.write_text(f"{other.pid}\n12345\n")  # same PID, different start time
        assert procs.owned_pid(pidfile) is None
        pidfile.write_text(f"{other.pid}\n")  # no start time recorded: not trusted either
        assert procs.owned_pid(pidfile) is None
    finally:
        other.kill()
        other.wait()


def test_parse_env_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("# comment\nA=1\nexport B='x y'\nC=postgresql://voc@h:1/voc\n\nbad line\n")
    assert parse_env_file(path) == {"A": "1", "B": "x y", "C": "postgresql://voc@h:1/voc"}


def test_profiles_never_share_a_port() -> None:
    seen: set[int] = set()
    for p in PROFILES.values():
        ports = {p.kafka_port, p.controller_port, p.postgres_port, p.redis_port}
        ports |= {p.api_port, p.fake_llm_port, p.prometheus_port}
        ports |= set(range(p.metrics_base, p.metrics_base + METRICS_SLOTS))
        assert not ports & seen
        seen |= ports
    assert len(SERVICES) <= METRICS_SLOTS


def test_port_offset_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOC_PORT_OFFSET", "1000")
    monkeypatch.setenv("VOC_HOME", str(tmp_path))
    monkeypatch.setenv("VOC_PROFILE", "dev")  # a sourced dev stack.env ...
    test = Stack(profile="test")
    assert test.profile.kafka_port == PROFILES["test"].kafka_port + 1000
    assert test.profile.prometheus_port == PROFILES["test"].prometheus_port + 1000
    assert test.profile.prometheus_url.endswith(f":{PROFILES['test'].prometheus_port + 1000}")
    assert test.home != tmp_path  # ... must not move the test stack into the dev home
    assert Stack(profile="dev").home == tmp_path


def test_external_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOC_PORT_OFFSET", raising=False)
    stack = Stack(profile="test")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    assert stack.external_kafka() == "kafka.example:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", PROFILES["test"].kafka_url)
    assert stack.external_kafka() is None  # its own broker
    monkeypatch.setenv("DATABASE_URL", PROFILES["dev"].database_url)
    assert stack.external_database() is None  # the dev stack's, leaked from a sourced env


def test_cli_registers_core_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["up", "--profile", "test", "--no-services"])
    assert args.profile == "test" and args.no_services and callable(args.func)
    args = parser.parse_args(["--profile", "test", "status"])
    assert args.profile == "test"
    args = parser.parse_args(["keys", "create", "acme"])
    assert args.tenant == "acme"
    args = parser.parse_args(["init"])
    assert callable(args.func)


def test_replica_counts_are_validated() -> None:
    assert parse_replicas("insight=3, translate=2") == {"insight": 3, "translate": 2}
    for bad in ("api=2", "insight", "insight=x", "insight=0", "insight=10"):
        with pytest.raises(StackError):
            parse_replicas(bad)


def test_replicas_get_distinct_metrics_ports() -> None:
    stack = Stack(profile="test")
    names = ["api", "ingest", "learn", "translate", "insight", "theme", "report", "lag-exporter"]
    ports = [stack.metrics_port(n) for n in names]
    ports += [stack.metrics_port(f"{s}.{n}") for s in names[1:7] for n in range(2, 10)]
    assert len(set(ports)) == len(ports)
