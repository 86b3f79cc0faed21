"""`<home>/stack.env`: the KEY=value file through which `voc up` tells services, tests, the CLI
and a developer's shell (`eval "$(voc env)"`) where everything runs."""

from __future__ import annotations

import shlex
from pathlib import Path


def metrics_env_key(service: str) -> str:
    """stack.env key holding a service's metrics port, e.g. VOC_METRICS_PORT_INGEST."""
    return "VOC_METRICS_PORT_" + service.upper().replace("-", "_")


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines (values optionally shell-quoted; # comments ignored)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        if value[:1] in ("'", '"'):
            parts = shlex.split(value)
            value = parts[0] if parts else ""
        out[key.strip()] = value
    return out


def write_env_file(path: Path, values: dict[str, str], header: str) -> None:
    """Write non-empty values as KEY=value lines (shell-quoted where needed), atomically.

    Empty values are left out rather than written as KEY=, so they never override a setting's
    default in a process that loads the file.
    """
    lines = [f"# {header}"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in values.items() if value]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)  # it holds the dev API key
    tmp.replace(path)
