"""Grafana cannot run here, so the dashboards are checked as data: they load, ids are unique,
every datasource reference resolves to the provisioned datasource, every panel has PromQL that
Prometheus' own parser accepts (through `promtool check rules`), and the committed JSON is what
tools/grafana_dashboards.py generates. tests/e2e/test_dashboards_live.py runs the queries."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_dashboards", ROOT / "tools" / "grafana_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())


def _load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _provisioned_uid() -> str:
    (ds,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus"
    return str(ds["uid"])


def test_the_three_dashboards_exist_and_load() -> None:
    assert {p.stem for p in DASHBOARDS} == {"pipeline", "llm", "api"}
    for path in DASHBOARDS:
        doc = _load(path)
        assert doc["uid"] and doc["title"] and doc["panels"], path.name


def test_uids_and_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    for path in DASHBOARDS:
        panels = _load(path)["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), path.name
        for p in panels:
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (path.name, p["title"])


def test_every_datasource_reference_resolves_to_the_provisioned_one() -> None:
    uid = _provisioned_uid()
    for path in DASHBOARDS:
        doc = _load(path)
        refs = [p["datasource"] for p in doc["panels"]]
        refs += [t["datasource"] for p in doc["panels"] for t in p["targets"]]
        refs += [v["datasource"] for v in doc["templating"]["list"]]
        for ref in refs:
            assert ref == {"type": "prometheus", "uid": uid}, (path.name, ref)


def test_every_panel_has_a_promql_target() -> None:
    for path in DASHBOARDS:
        for p in _load(path)["panels"]:
            assert p["targets"], (path.name, p["title"])
            assert all(t["expr"].strip() for t in p["targets"]), (path.name, p["title"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_every_query_parses_with_prometheus(tmp_path: Path) -> None:
    gen = _generator()
    rules = []
    for path in DASHBOARDS:
        for i, (title, expr) in enumerate(gen.panel_queries(_load(path))):
            rules.append({"record": f"dashboard_check:{path.stem}_{i}", "expr": expr})
            assert "$" not in expr, (path.name, title, expr)
    rule_file = tmp_path / "dashboards.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_dashboards_are_the_generated_ones() -> None:
    for name, text in _generator().render().items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, f"regenerate {name}"


def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "vocstream.yml")["providers"]
    grafana = _yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana["environment"]["VOC_PROMETHEUS_URL"].startswith("http://prometheus:")
