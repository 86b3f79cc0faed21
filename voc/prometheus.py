"""Prometheus for the local stack: its scrape config, and starting the Debian `prometheus`.

One function builds the scrape configuration for any set of targets, so the committed
`deploy/prometheus/prometheus.yml` (docker compose targets, checked by a unit test) and the
file `voc up` writes for the local stack (loopback ports) cannot drift apart. Both load the
same alert rules from `deploy/prometheus/rules/`.

Jobs: `vocstream-api` (the API serves /metrics on its own port), `vocstream` (every stage on
its metrics port) and `lag-exporter`; every target carries a `service` label, which the
alerts and dashboards use (prometheus-operator adds the same label from the k8s Service).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voc import procs, sysdeps

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = ROOT / "deploy" / "prometheus"
RULES_DIR = DEPLOY_DIR / "rules"

API = "api"
LAG_EXPORTER = "lag-exporter"


def _job_of(service: str) -> str:
    if service == API:
        return "vocstream-api"
    if service == LAG_EXPORTER:
        return LAG_EXPORTER
    return "vocstream"


def scrape_config(
    targets: Mapping[str, str],
    *,
    rule_files: Sequence[str],
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
) -> dict[str, Any]:
    """The Prometheus configuration scraping `targets` (service name -> host:port).

    A replica's name is "<service>.<n>": it is scraped under its service's label (so
    dashboards and alerts sum over replicas) and told apart by the `instance` label.
    """
    jobs: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(targets):
        service = name.split(".", 1)[0]
        jobs.setdefault(_job_of(service), []).append(
            {"targets": [targets[name]], "labels": {"service": service}}
        )
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": groups}
            for job, groups in sorted(jobs.items())
        ],
    }


def ports_from_stack_env(env: Mapping[str, str]) -> dict[str, int]:
    """Where each local service serves /metrics, from stack.env's VOC_METRICS_PORT_<NAME> keys.

    The API serves /metrics on its own port (VOC_API_PORT), not on its metrics slot.
    """
    ports: dict[str, int] = {}
    for key, value in env.items():
        if key.startswith("VOC_METRICS_PORT_") and key != "VOC_METRICS_PORT_BASE" and value:
            name = key.removeprefix("VOC_METRICS_PORT_").lower().replace("_", "-")
            ports[name] = int(value)
    if env.get("VOC_API_PORT"):
        ports[API] = int(env["VOC_API_PORT"])
    return ports


def render_local_prometheus_config(
    ports: Mapping[str, int],
    out: Path,
    *,
    scrape_interval: str = "5s",
    rules_dir: Path = RULES_DIR,
) -> Path:
    """Write the local stack's Prometheus config: `ports` is service name -> /metrics port.

    The file is JSON, which is valid YAML, so writing it needs no YAML library. Short scrape
    and evaluation intervals make a fresh local stack show data within seconds.
    """
    config = scrape_config(
        {name: f"127.0.0.1:{port}" for name, port in ports.items()},
        rule_files=[str(rules_dir / "*.yml")],
        scrape_interval=scrape_interval,
        evaluation_interval=scrape_interval,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(out)
    return out


def prometheus_command(
    home: Path, config: Path, *, port: int, retention: str = "2d", binary: str | None = None
) -> list[str]:
    """argv of a Prometheus server for `config`, data under `home`/data, on 127.0.0.1:`port`."""
    prometheus = binary or sysdeps.require("prometheus", "prometheus")
    return [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
        # POST /-/reload re-reads the config after `voc up` added a service.
        "--web.enable-lifecycle",
    ]


def start_prometheus(
    home: Path,
    config: Path,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> int:
    """Start Prometheus detached (its own session, output to `log_path`); returns its PID.

    The caller tracks and stops it by that PID (`procs.terminate(pid)`). `env` lets the
    stack pass its ownership marker (procs.MARKER_VAR).
    """
    home.mkdir(parents=True, exist_ok=True)
    return procs.spawn(
        prometheus_command(home, config, port=port),
        env=dict(env if env is not None else os.environ),
        log_path=log_path or home / "prometheus.log",
        cwd=home,
    )


def ready(port: int, timeout: float = 2.0) -> bool:
    """True once the Prometheus on 127.0.0.1:`port` answers /-/ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def query(base_url: str, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run an instant query; returns the result vector (raises on a query error)."""
    from urllib.parse import urlencode

    url = f"{base_url.rstrip('/')}/api/v1/query?{urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    if doc.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {doc}")
    result = doc["data"]["result"]
    return result if isinstance(result, list) else [result]
