"""The Helm chart, validated offline: `helm lint`, `helm template`, the core kinds against the
Kubernetes schemas of a pinned version (kubernetes-validate), the KEDA ScaledObjects against
the fields KEDA requires, the partition cap on replicas, and the committed plain manifests.

helm is built by tools/helm.sh on first use (Go module proxy, a few minutes); the tests skip
only when it cannot be built.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "chart" / "vocstream"
KUBE_VERSION = "1.31.0"
CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "Ingress",
    "Job",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
}
STAGES = ("ingest", "learn", "translate", "insight", "theme", "report")

yaml = pytest.importorskip("yaml")


@functools.cache
def _helm() -> str:
    result = subprocess.run(
        [str(ROOT / "tools" / "helm.sh")], capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0 or not result.stdout.strip():
        pytest.skip(f"helm could not be built: {result.stderr[-500:]}")
    return result.stdout.strip().splitlines()[-1]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_helm(), *args], capture_output=True, text=True, check=False, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _render(*sets: str) -> list[dict[str, Any]]:
    args = ["template", "vocstream", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    docs = yaml.safe_load_all(_run(*args).stdout)
    return [d for d in docs if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(values, dict)
    return values


def test_helm_lint() -> None:
    out = _run("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION).stdout
    assert "0 chart(s) failed" in out


def test_core_kinds_validate_against_pinned_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _render(
        "ingress.enabled=true",
        "serviceMonitor.enabled=true",
        "secrets.create=true",
        "secrets.data.DATABASE_URL=postgresql://u:p@db/voc",
    )
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds
    assert {"Ingress", "ServiceMonitor", "ScaledObject", "Job"} <= kinds
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_code_service_has_a_deployment_and_back() -> None:
    docs = _render()
    deployments = _by_kind(docs, "Deployment")
    modules = {
        d["spec"]["template"]["spec"]["containers"][0]["command"][-1] for d in deployments.values()
    }
    code = {f"services.{p.parent.name}" for p in (ROOT / "services").glob("*/__main__.py")}
    assert modules >= code, "a service in the code has no Deployment"
    expected = {"services.api", "services.lag_exporter", *(f"services.{s}" for s in STAGES)}
    assert modules == expected


def test_deployments_are_non_root_limited_and_probed() -> None:
    deployments = _by_kind(_render(), "Deployment")
    assert len(deployments) == 8
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"], name
        assert c["resources"]["requests"] and c["resources"]["limits"], name
        assert c["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
        refs = {next(iter(e)): next(iter(e.values()))["name"] for e in c["envFrom"]}
        assert refs == {"configMapRef": "vocstream-config"}  # no whole Secret anywhere
        probe_port = c["livenessProbe"]["httpGet"]["port"]
        assert probe_port in {p["name"] for p in c["ports"]}, name


def test_services_expose_api_and_every_metrics_port() -> None:
    docs = _render()
    services = _by_kind(docs, "Service")
    assert services["vocstream-api"]["spec"]["ports"][0]["name"] == "http"
    for component in (*STAGES, "lag-exporter"):
        (port,) = services[f"vocstream-{component}"]["spec"]["ports"]
        assert port["name"] == "metrics" and port["port"] == 9100
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == {"vocstream-api", *(f"vocstream-{s}" for s in STAGES)}


def test_scaled_objects_have_the_fields_keda_requires() -> None:
    from shared import topics

    docs = _render()
    deployments = _by_kind(docs, "Deployment")
    scaled = _by_kind(docs, "ScaledObject")
    values = _values()
    assert set(scaled) == {f"vocstream-{s}" for s in STAGES}
    for stage in STAGES:
        so = scaled[f"vocstream-{stage}"]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        target = spec["scaleTargetRef"]["name"]
        assert target in deployments and target == f"vocstream-{stage}"
        # KEDA owns the replica count: the Deployment must not fight it.
        assert "replicas" not in deployments[target]["spec"]
        auto = values["stages"][stage]["autoscaling"]
        assert spec["minReplicaCount"] == auto["minReplicas"]
        assert spec["maxReplicaCount"] == auto["maxReplicas"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= values["kafka"]["partitions"]
        # The input topic's group, and for the stages with an overflow lane its group too
        # (the same names the runner uses: shared.topics, shared.stage.runner).
        expected = [(f"voc.{stage}", f"voc.{values['stages'][stage]['topic']}")]
        if stage in topics.OVERFLOW_STAGES:
            lane = topics.overflow_topic(stage).full_name("voc.")
            expected.append((f"voc.{stage}.overflow", lane))
        assert [
            (t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in spec["triggers"]
        ] == expected
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata: map[str]str"
            assert meta["bootstrapServers"] == values["kafka"]["bootstrapServers"]
            assert int(meta["lagThreshold"]) > 0


def test_stage_topics_are_the_runtime_input_topics() -> None:
    from shared import topics
    from shared.settings import KafkaSettings

    inputs = {
        "ingest": topics.REVIEWS_SUBMITTED,
        "learn": topics.REVIEWS_INGESTED,
        "translate": topics.REVIEWS_LEARNED,
        "insight": topics.REVIEWS_TRANSLATED,
        "theme": topics.INSIGHTS_EXTRACTED,
        "report": topics.THEMES_EXTRACTED,
    }
    values = _values()
    for stage, spec in inputs.items():
        assert values["stages"][stage]["topic"] == spec.name, stage
        # The replica cap is only right if it is the partition count `voc init` creates.
        # A registry topic without its own count gets VOC_TOPIC_PARTITIONS (default 6).
        created = spec.partitions or KafkaSettings().partitions
        assert values["stages"][stage].get("partitions", values["kafka"]["partitions"]) == (
            created
        ), stage


def test_max_replicas_above_partitions_fails_the_render() -> None:
    result = _run(
        "template",
        "vocstream",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "stages.insight.autoscaling.maxReplicas=7",
        check=False,
    )
    assert result.returncode != 0
    assert "maxReplicas=7 is above the 6 partitions of voc.reviews.translated" in result.stderr
    more = _render("kafka.partitions=12", "stages.insight.autoscaling.maxReplicas=12")
    assert _by_kind(more, "ScaledObject")["vocstream-insight"]["spec"]["maxReplicaCount"] == 12
    # Without KEDA the fixed replica count is capped the same way.
    fixed = _run(
        "template", "vocstream", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "keda.enabled=false", "--set", "stages.theme.replicas=9", check=False,
    )  # fmt: skip
    assert fixed.returncode != 0 and "stages.theme.replicas=9" in fixed.stderr
    plain = _by_kind(_render("keda.enabled=false"), "Deployment")
    assert plain["vocstream-theme"]["spec"]["replicas"] == 1
    assert not _by_kind(_render("keda.enabled=false"), "ScaledObject")


def test_committed_manifests_are_the_rendered_chart(tmp_path: Path) -> None:
    _helm()
    subprocess.run(
        [str(ROOT / "deploy" / "k8s" / "render.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    committed = ROOT / "deploy" / "k8s" / "manifests"
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    assert fresh, "render.sh wrote nothing"
    assert {p.name: p.read_text() for p in committed.glob("*.yaml")} == fresh, (
        "deploy/k8s/manifests is stale: run deploy/k8s/render.sh"
    )


SECRETS_OF = {
    "vocstream-api": {"DATABASE_URL", "REDIS_URL"},
    "vocstream-ingest": {"DATABASE_URL"},
    "vocstream-learn": {"DATABASE_URL", "REDIS_URL", "VOC_LLM_API_KEY"},
    "vocstream-translate": {"DATABASE_URL", "REDIS_URL", "VOC_LLM_API_KEY"},
    "vocstream-insight": {"DATABASE_URL", "REDIS_URL", "VOC_LLM_API_KEY"},
    "vocstream-theme": {"DATABASE_URL", "REDIS_URL", "VOC_LLM_API_KEY"},
    "vocstream-report": {"DATABASE_URL", "REDIS_URL", "VOC_LLM_API_KEY", "VOC_CALLBACK_SECRET"},
    "vocstream-lag-exporter": {"REDIS_URL"},
}


def _secret_keys(container: dict[str, Any]) -> set[str]:
    assert not any("secretRef" in e for e in container.get("envFrom", []))
    keys = set()
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == "vocstream-secrets" and ref["key"] == e["name"]
            keys.add(ref["key"])
    return keys


def test_each_pod_gets_only_the_secrets_it_needs() -> None:
    docs = _render()
    deployments = _by_kind(docs, "Deployment")
    got = {
        name: _secret_keys(d["spec"]["template"]["spec"]["containers"][0])
        for name, d in deployments.items()
    }
    assert got == SECRETS_OF
    (job,) = _by_kind(docs, "Job").values()
    assert _secret_keys(job["spec"]["template"]["spec"]["containers"][0]) == {"DATABASE_URL"}


def test_ingress_does_not_route_metrics() -> None:
    (ingress,) = _by_kind(_render("ingress.enabled=true"), "Ingress").values()
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert "/v1/" in paths and "/health" in paths
    assert not any(p == "/" or p.startswith(("/metrics", "/ready")) for p in paths), paths
    failed = _run(
        "template",
        "vocstream",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.paths[0].path=/",
        "--set",
        "ingress.paths[0].pathType=Prefix",
        check=False,
    )
    assert failed.returncode != 0 and "must not route / or /metrics" in failed.stderr
