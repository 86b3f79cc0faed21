"""docker-compose.yml cannot run here (no Docker engine), so it is validated statically."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    import yaml  # docker-compose's own dependency; present wherever the CLI is

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _code_services() -> set[str]:
    # Package names use underscores (services/lag_exporter), compose service names dashes.
    return {p.parent.name.replace("_", "-") for p in (ROOT / "services").glob("*/__main__.py")}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    result = subprocess.run(
        [
            "docker-compose",
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--env-file",
            str(env),
            "--project-directory",
            str(ROOT),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_in_code_has_a_compose_service_and_back() -> None:
    pytest.importorskip("yaml")
    compose = set(_compose()["services"])
    infra = {"kafka", "postgres", "redis", "init", "fake-llm", "prometheus", "grafana"}
    assert _code_services() == compose - infra


def test_infrastructure_is_health_gated_and_kafka_is_kraft() -> None:
    pytest.importorskip("yaml")
    services = _compose()["services"]
    for name in ("kafka", "postgres", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    deps = services["ingest"]["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["init"]["condition"] == "service_completed_successfully"
