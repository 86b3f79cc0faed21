"""Deployment hygiene and the small pieces behind the API's defences: no Prometheus
lifecycle API in compose, operators' ports on loopback, placeholder secrets refused outside
dev, the fake LLM's admin routes guarded, bounded key caches."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from services.api.auth import KeyCache
from shared.lru import LRU
from shared.settings import CommonSettings, placeholder_secrets
from voc.fake_llm.config import FakeConfig
from voc.fake_llm.server import FakeLLMApp

ROOT = Path(__file__).resolve().parents[2]


def test_compose_prometheus_has_no_lifecycle_api_and_tools_bind_loopback() -> None:
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert not any("web.enable-lifecycle" in arg for arg in services["prometheus"]["command"])
    for name in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name


def test_env_example_placeholders_are_what_the_validator_refuses() -> None:
    values = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert placeholder_secrets(values) == [
        "GRAFANA_ADMIN_PASSWORD",
        "POSTGRES_PASSWORD",
        "VOC_CALLBACK_SECRET",
        "VOC_LLM_API_KEY",
    ]


def test_placeholder_secrets_refused_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://voc:change-me@postgres:5432/voc")
    monkeypatch.setenv("VOC_LLM_API_KEY", "change-me")
    for env in ("prod", "test"):
        monkeypatch.setenv("VOC_ENV", env)
        with pytest.raises(ValidationError, match="DATABASE_URL, VOC_LLM_API_KEY"):
            CommonSettings()
    monkeypatch.setenv("VOC_ENV", "dev")
    assert CommonSettings().runtime.env == "dev"
    monkeypatch.setenv("VOC_ENV", "prod")
    monkeypatch.setenv("DATABASE_URL", "postgresql://voc:s3cr3t-9f2@postgres:5432/voc")
    monkeypatch.setenv("VOC_LLM_API_KEY", "sk-real")
    assert CommonSettings().runtime.env == "prod"


async def _admin(app: FakeLLMApp, client: tuple[str, int], headers: dict[str, str]) -> int:
    transport = httpx.ASGITransport(app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
        resp = await http.post("/admin/config", json={"error_rate": 1.0}, headers=headers)
        return resp.status_code


async def test_fake_llm_admin_needs_the_token_or_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VOC_FAKE_LLM_ADMIN_TOKEN", raising=False)
    app = FakeLLMApp(FakeConfig())
    assert await _admin(app, ("10.1.2.3", 5000), {}) == 403
    assert app.config.error_rate == 0.0
    assert await _admin(app, ("127.0.0.1", 5000), {}) == 200
    monkeypatch.setenv("VOC_FAKE_LLM_ADMIN_TOKEN", "t0ken")
    guarded = FakeLLMApp(FakeConfig())
    assert await _admin(guarded, ("127.0.0.1", 5000), {}) == 403
    assert await _admin(guarded, ("10.1.2.3", 5000), {"Authorization": "Bearer nope"}) == 403
    assert await _admin(guarded, ("10.1.2.3", 5000), {"Authorization": "Bearer t0ken"}) == 200
    assert guarded.config.error_rate == 1.0


def test_unknown_keys_never_evict_known_ones() -> None:
    cache = KeyCache(ttl_s=60, max_entries=10, max_unknown=10)
    cache.put("tenant-key", "acme")
    for i in range(1000):
        cache.put(f"random-{i}", None)
    assert cache.get("tenant-key") == (True, "acme")
    assert cache.get("random-999") == (True, None)
    assert cache.get("random-0") == (False, None)  # bounded: the oldest went


def test_key_cache_entry_never_outlives_a_scheduled_revocation() -> None:
    now = [0.0]
    lru: LRU[str, str] = LRU(10, ttl_s=30, clock=lambda: now[0])
    lru.put("k", "acme", ttl_s=2)
    now[0] = 1.9
    assert lru.lookup("k") == (True, "acme")
    now[0] = 2.0
    assert lru.lookup("k") == (False, None)
    lru.put("j", "acme", ttl_s=100)  # never longer than the map's TTL
    now[0] = 32.1
    assert "j" not in lru
