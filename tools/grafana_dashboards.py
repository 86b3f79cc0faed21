"""Generate the Grafana dashboards in deploy/grafana/dashboards/ from the panel lists below.

    python tools/grafana_dashboards.py          # rewrite the JSON files
    python tools/grafana_dashboards.py --check  # exit 1 if a committed file is out of date

Dashboards are data; writing them as compact Python keeps ids, grid positions and the
datasource reference consistent (tests/unit/test_grafana_dashboards.py checks the committed
JSON, and that it equals this script's output). Every target uses the provisioned
datasource (uid `vocstream-prometheus`, deploy/grafana/provisioning/datasources/).

Error-type panels end in `or on() vector(0)`: a counter with labels has no series until its
first event, and "0" says more than "No data" on a healthy pipeline.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "vocstream-prometheus"}
RI = "$__rate_interval"


@dataclass
class Panel:
    """A panel: title, PromQL targets (expr, legend), type, unit and width."""

    title: str
    targets: list[tuple[str, str]]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _panel(pid: int, p: Panel, x: int, y: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": p.kind != "table",
                "instant": p.kind == "table",
            }
            for i, (expr, legend) in enumerate(p.targets)
        ],
    }
    if p.kind == "timeseries":
        doc["options"] = {"legend": {"displayMode": "table", "placement": "right"}}
    if p.kind == "table":
        doc["transformations"] = [{"id": "labelsToFields", "options": {}}]
    doc.update(p.extra)
    return doc


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Panel],
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A dashboard with `panels` laid out left to right, top to bottom on a 24-column grid."""
    docs = []
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        docs.append(_panel(i, p, x, y))
        x += p.width
        row_h = max(row_h, p.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vocstream"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": [
            {"title": "vocstream", "type": "dashboards", "tags": ["vocstream"], "asDropdown": True}
        ],
        "panels": docs,
    }


def pipeline() -> dict[str, Any]:
    """Pipeline overview: flow per stage, consumer lag, members, dead letters, jobs."""
    stage = 'stage=~"$stage"'
    group = 'group=~"$group"'
    panels = [
        Panel(
            "Events in per stage",
            [(f"sum by (stage) (rate(vocstream_events_in_total{{{stage}}}[{RI}]))", "{{stage}}")],
            unit="rps",
            description="Kafka records consumed per second by each stage.",
        ),
        Panel(
            "Events out per stage",
            [(f"sum by (stage) (rate(vocstream_events_out_total{{{stage}}}[{RI}]))", "{{stage}}")],
            unit="rps",
            description="Kafka records produced per second by each stage (incl. dead letters).",
        ),
        Panel(
            "Consumer lag per stage (records)",
            [(f"sum by (group) (kafka_consumergroup_group_sum_lag{{{group}}})", "{{group}}")],
            description="Records waiting in each consumer group's input topics.",
        ),
        Panel(
            "Consumer lag per stage (seconds)",
            [
                (
                    f"max by (group) (kafka_consumergroup_group_max_lag_seconds{{{group}}})",
                    "{{group}}",
                )
            ],
            unit="s",
            description="Age of the oldest record each group has not consumed yet.",
        ),
        Panel(
            "Lag per partition",
            [
                (
                    f"sum by (group, topic, partition) (kafka_consumergroup_group_lag{{{group}}})",
                    "{{group}} {{topic}}/{{partition}}",
                )
            ],
            kind="table",
            width=24,
            description="Current lag of every group/topic/partition (kafka-consumer-groups).",
        ),
        Panel(
            "Members per group",
            [(f"max by (group) (vocstream_consumergroup_members{{{group}}})", "{{group}}")],
            description="Consumers in each group: the replicas actually consuming.",
        ),
        Panel(
            "Commit stalled (seconds)",
            [
                (
                    f"max by (group, topic, partition) "
                    f"(vocstream_commit_stalled_seconds{{{group}}})",
                    "{{group}} {{topic}}/{{partition}}",
                )
            ],
            unit="s",
            description="How long a partition's committed offset has not moved while records "
            "wait (one hung call holds back its whole partition).",
        ),
        Panel(
            "Dead letters per second",
            [
                (
                    f"sum by (stage, error_type) "
                    f"(rate(vocstream_dead_letters_total{{{stage}}}[{RI}])) or on() vector(0)",
                    "{{stage}} {{error_type}}",
                )
            ],
            unit="rps",
            description="Records sent to the stages' dead-letter topics, by error type.",
        ),
        Panel(
            "Reviews out per stage",
            [
                (
                    f"sum by (stage) (rate(vocstream_reviews_out_total{{{stage}}}[{RI}]))",
                    "{{stage}}",
                )
            ],
            unit="rps",
            description="Reviews each stage passed on per second: the pipeline's throughput.",
        ),
        Panel(
            "Jobs completed",
            [
                (
                    f'sum(increase(vocstream_events_out_total{{topic=~".*jobs[.]completed"}}[{RI}]))',
                    "report ready / completed",
                )
            ],
            description="Job completion events (report ready, final) emitted by the report stage.",
        ),
        Panel(
            "Batch latency p95 per stage",
            [
                (
                    f"histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(vocstream_batch_seconds_bucket{{{stage}}}[{RI}])))",
                    "{{stage}}",
                )
            ],
            unit="s",
            description="Time to process a batch: core, upserts, produce and commit.",
        ),
        Panel(
            "Lag exporter poll time",
            [("max(kafka_consumergroup_poll_time_ms)", "all groups")],
            unit="ms",
            description="How long the lag exporter takes to read every consumer group.",
        ),
    ]
    return dashboard(
        "vocstream-pipeline",
        "vocstream / Pipeline",
        "Flow through the stages, consumer lag per stage and partition, dead letters, jobs.",
        panels,
        [
            _variable("stage", "Stage", "label_values(vocstream_events_in_total, stage)"),
            _variable(
                "group", "Consumer group", "label_values(kafka_consumergroup_group_sum_lag, group)"
            ),
        ],
    )


def llm() -> dict[str, Any]:
    """The LLM layer: calls, latency, errors, 429s, tokens, limiter waits, quota use."""
    stage = 'stage=~"$stage"'
    panels = [
        Panel(
            "LLM calls per second",
            [
                (
                    f"sum by (stage, outcome) (rate(voc_llm_calls_total{{{stage}}}[{RI}]))",
                    "{{stage}} {{outcome}}",
                )
            ],
            unit="rps",
        ),
        Panel(
            "Call latency p50 / p95",
            [
                (
                    f"histogram_quantile(0.5, sum by (stage, le) "
                    f"(rate(voc_llm_call_latency_seconds_bucket{{{stage}}}[{RI}])))",
                    "p50 {{stage}}",
                ),
                (
                    f"histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(voc_llm_call_latency_seconds_bucket{{{stage}}}[{RI}])))",
                    "p95 {{stage}}",
                ),
            ],
            unit="s",
        ),
        Panel(
            "Errors per second by kind",
            [
                (
                    f"sum by (stage, kind) (rate(voc_llm_errors_total{{{stage}}}[{RI}])) "
                    "or on() vector(0)",
                    "{{stage}} {{kind}}",
                )
            ],
            unit="rps",
        ),
        Panel(
            "Provider 429s",
            [
                (
                    f'sum by (stage) (increase(voc_llm_errors_total{{{stage},kind="rate_limited"}}'
                    f"[{RI}])) or on() vector(0)",
                    "{{stage}}",
                )
            ],
            description="Rate-limit answers from the provider: the goal is zero.",
        ),
        Panel(
            "Tokens per second",
            [
                (
                    f"sum by (stage, direction) (rate(voc_llm_tokens_total{{{stage}}}[{RI}]))",
                    "{{stage}} {{direction}}",
                )
            ],
            unit="short",
        ),
        Panel(
            "Rate-limiter wait p95",
            [
                (
                    f"histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(voc_llm_ratelimit_wait_seconds_bucket{{{stage}}}[{RI}])))",
                    "{{stage}}",
                )
            ],
            unit="s",
            description="Time calls wait for the shared Redis token bucket: high = quota-bound.",
        ),
        Panel(
            "Quota use: calls per second, all stages",
            [(f"sum(rate(voc_llm_calls_total[{RI}]))", "calls/s")],
            unit="rps",
            description="Provider calls per second across every stage and replica; compare with "
            "the configured VOC_LLM_RPS (the goal is >= 95% of it during a large job).",
        ),
        Panel(
            "Share of calls waiting at the limiter",
            [
                (
                    f'1 - sum(rate(voc_llm_ratelimit_wait_seconds_bucket{{le="0.0"}}[{RI}])) '
                    f"/ sum(rate(voc_llm_ratelimit_wait_seconds_count[{RI}]))",
                    "waited",
                )
            ],
            unit="percentunit",
            description="Fraction of calls that had to wait for a token: near 1 = quota saturated.",
        ),
        Panel(
            "Cache hit ratio",
            [
                (
                    # No hit yet means no hits series: count it as 0, not "no data".
                    f"(sum(rate(voc_llm_cache_hits_total[{RI}])) or on() vector(0)) / "
                    f"((sum(rate(voc_llm_cache_hits_total[{RI}])) or on() vector(0)) "
                    f"+ sum(rate(voc_llm_cache_misses_total[{RI}])))",
                    "hits",
                )
            ],
            unit="percentunit",
        ),
        Panel(
            "Limiter on local fallback",
            [("max by (instance) (voc_llm_ratelimit_fallback)", "{{instance}}")],
            description="1 while a process limits alone because Redis is unreachable.",
        ),
    ]
    return dashboard(
        "vocstream-llm",
        "vocstream / LLM",
        "LLM calls, latency, errors, provider 429s, tokens, limiter waits and quota use.",
        panels,
        [_variable("stage", "Stage", "label_values(voc_llm_calls_total, stage)")],
    )


def api() -> dict[str, Any]:
    """The API gateway: request rate, latency, errors."""
    panels = [
        Panel(
            "Requests per second by route",
            [
                (
                    f"sum by (method, route) (rate(vocstream_api_requests_total[{RI}]))",
                    "{{method}} {{route}}",
                )
            ],
            unit="rps",
        ),
        Panel(
            "Latency p50 / p95 / p99",
            [
                (
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(vocstream_api_request_seconds_bucket[{RI}])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
        ),
        Panel(
            "Server error ratio (5xx)",
            [
                (
                    f'sum(rate(vocstream_api_requests_total{{status=~"5.."}}[{RI}])) '
                    f"/ sum(rate(vocstream_api_requests_total[{RI}])) or on() vector(0)",
                    "5xx share",
                )
            ],
            unit="percentunit",
        ),
        Panel(
            "Responses by status",
            [
                (
                    f"sum by (status) (rate(vocstream_api_requests_total[{RI}]))",
                    "{{status}}",
                )
            ],
            unit="rps",
        ),
        Panel(
            "Latency p95 by route",
            [
                (
                    f"histogram_quantile(0.95, sum by (route, le) "
                    f"(rate(vocstream_api_request_seconds_bucket[{RI}])))",
                    "{{route}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Rate-limited requests (429)",
            [(f"sum(rate(vocstream_api_rate_limited_total[{RI}]))", "429/s")],
            unit="rps",
        ),
        Panel(
            "Uploaded rows per second",
            [
                (
                    f"sum by (outcome) (rate(vocstream_api_upload_rows_total[{RI}]))",
                    "{{outcome}}",
                )
            ],
            unit="rps",
        ),
    ]
    return dashboard(
        "vocstream-api", "vocstream / API", "API gateway: rate, latency and errors.", panels
    )


DASHBOARDS = {"pipeline": pipeline, "llm": llm, "api": api}


def panel_queries(doc: dict[str, Any], rate_interval: str = "5m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with Grafana's variables filled in as Grafana
    would for "All": template variables match anything, `$__rate_interval` is a window."""
    names = [v["name"] for v in doc.get("templating", {}).get("list", [])]
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            for name in sorted(names, key=len, reverse=True):
                expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
            out.append((panel["title"], expr))
    return out


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    """Write the dashboards, or with --check report the ones that differ."""
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date: {', '.join(stale)} (run python {sys.argv[0]})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
