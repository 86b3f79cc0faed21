"""Prometheus config and alert rules: promtool checks them, and every rule has a unit test
that sees it firing and not firing (deploy/prometheus/tests/*.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from voc.prometheus import (
    ports_from_stack_env,
    render_local_prometheus_config,
    scrape_config,
)

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def _promtool(*args: str, cwd: Path = PROM) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_check_config() -> None:
    _promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_promtool_check_rules() -> None:
    _promtool("check", "rules", *sorted(str(p) for p in (PROM / "rules").glob("*.yml")))


@needs_promtool
def test_promtool_test_rules() -> None:
    out = _promtool("test", "rules", *sorted(str(p) for p in (PROM / "tests").glob("*.yml")))
    assert "FAILED" not in out


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    pytest.importorskip("yaml")
    alerts = {
        rule["alert"]
        for path in (PROM / "rules").glob("*.yml")
        for group in _yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in _yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts, "no alert rules found"
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested not firing"
    assert {"VocServiceDown", "VocApiErrorRate", "VocCommitStalled"} <= alerts


def _compose_targets() -> dict[str, str]:
    """service -> host:port for every compose service built from our image, except helpers."""
    services = _yaml(ROOT / "docker-compose.yml")["services"]
    out = {}
    for name, svc in services.items():
        if svc.get("image") != "vocstream:latest" or name in ("init", "fake-llm"):
            continue
        out[name] = f"{name}:8000" if name == "api" else f"{name}:9100"
    return out


def test_compose_prometheus_config_scrapes_every_compose_service() -> None:
    pytest.importorskip("yaml")
    expected = scrape_config(_compose_targets(), rule_files=["rules/*.yml"])
    assert _yaml(PROM / "prometheus.yml") == expected
    assert "lag-exporter" in _compose_targets()


def test_ports_from_stack_env() -> None:
    env = {
        "VOC_API_PORT": "28000",
        "VOC_METRICS_PORT_BASE": "29101",
        "VOC_METRICS_PORT_API": "29101",
        "VOC_METRICS_PORT_INGEST": "29102",
        "VOC_METRICS_PORT_LAG_EXPORTER": "29108",
    }
    assert ports_from_stack_env(env) == {"api": 28000, "ingest": 29102, "lag-exporter": 29108}


@needs_promtool
def test_local_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    out = render_local_prometheus_config(
        {"api": 28000, "ingest": 29102, "lag-exporter": 29108}, tmp_path / "prometheus.yml"
    )
    text = _promtool("check", "config", str(out), cwd=tmp_path)
    assert "4 rule files found" in text or "rule files found" in text
    jobs = {j["job_name"]: j for j in _yaml(out)["scrape_configs"]}
    assert jobs["vocstream-api"]["static_configs"][0]["targets"] == ["127.0.0.1:28000"]
    assert jobs["lag-exporter"]["static_configs"][0]["labels"] == {"service": "lag-exporter"}
