"""Configuration of the fake LLM server: latency, server-side rate limit, fault injection,
and the slow, single-slot and weak-model modes that behave like a small self-hosted model.

Set from CLI flags, from `VOC_FAKE_LLM_<FIELD>` environment variables (e.g.
`VOC_FAKE_LLM_ERROR_RATE=0.1`, `VOC_FAKE_LLM_LATENCY_MS=300-1500`), and at runtime by
`POST /admin/config` with a JSON object of the fields to change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, model_validator

ENV_PREFIX = "VOC_FAKE_LLM_"


class FakeConfig(BaseModel):
    """Everything that shapes the fake's behaviour. Rates are probabilities per request."""

    model_config = {"extra": "forbid"}

    model: str = "voc-fake-1"
    latency_min_ms: float = Field(default=0.0, ge=0)
    latency_max_ms: float = Field(default=0.0, ge=0)
    rate_limit_rps: float = Field(default=0.0, ge=0, description="0 = no server-side limit")
    rate_limit_burst: float = Field(default=0.0, ge=0, description="0 = max(1, rps/10)")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="answer 500/503")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="hang for hang_s")
    malformed_rate: float = Field(default=0.0, ge=0, le=1, description="unusable content")
    truncated_rate: float = Field(default=0.0, ge=0, le=1, description="cut JSON, 'length'")
    fenced_rate: float = Field(default=0.0, ge=0, le=1, description="JSON in prose + fences")
    missing_item_rate: float = Field(default=0.0, ge=0, le=1, description="translate: drop one")
    bad_quote_rate: float = Field(default=0.0, ge=0, le=1, description="insight: bad quotes")
    fault_match: str | None = Field(
        default=None, description="faults only for inputs containing this string"
    )
    fault_stages: list[str] | None = Field(
        default=None, description="faults only for these stages (X-Voc-Stage); None: all"
    )
    hang_s: float = Field(default=600.0, ge=0)
    seed: int = 0
    # Like a self-hosted server (llama.cpp with `slots` slots): at most this many requests
    # generate at once, the rest wait in a FIFO queue; 0 = no limit.
    slots: int = Field(default=0, ge=0, description="requests generating at once; 0 = any")
    token_latency_ms: float = Field(
        default=0.0, ge=0, description="generation time per completion token"
    )
    finish_for_gone_clients: bool = Field(
        default=True,
        description="a started generation runs to its end when its client left (as "
        "llama-cpp-python's server does); False: it stops at once",
    )
    # Weak-model faults, per request (echo, stubborn, loop) or per request size (max_items).
    echo_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="answer the schema of the prompt (else the input) back, unless the "
        "request enforces a schema",
    )
    stubborn_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of inputs answered malformed, the same answer again for as "
        "long as the sampling (temperature, seed) of the first such request is unchanged",
    )
    max_items: int = Field(
        default=0, ge=0, description="translate: a request of more items is answered junk"
    )
    loop_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of inputs answered with a string that repeats itself until "
        "max_tokens (finish_reason 'length'), unless the request sets frequency_penalty",
    )

    @model_validator(mode="after")
    def _latency_order(self) -> FakeConfig:
        if self.latency_max_ms < self.latency_min_ms:
            self.latency_max_ms = self.latency_min_ms
        return self

    @property
    def burst(self) -> float:
        """The rate limiter's bucket depth."""
        if self.rate_limit_burst > 0:
            return self.rate_limit_burst
        return max(1.0, self.rate_limit_rps / 10)

    def updated(self, patch: Mapping[str, Any]) -> FakeConfig:
        """A copy with `patch` applied (validated); `latency_ms: "a-b"` is accepted."""
        data = self.model_dump()
        data.update(expand_latency(dict(patch)))
        return FakeConfig.model_validate(data)


def parse_latency(value: str) -> tuple[float, float]:
    """ "300-1500" -> (300, 1500); "50" -> (50, 50)."""
    lo, _, hi = value.partition("-")
    a = float(lo)
    b = float(hi) if hi else a
    return a, b


def expand_latency(data: dict[str, Any]) -> dict[str, Any]:
    """Replace a `latency_ms` "a-b" shorthand by latency_min_ms / latency_max_ms."""
    if "latency_ms" in data:
        lo, hi = parse_latency(str(data.pop("latency_ms")))
        data["latency_min_ms"], data["latency_max_ms"] = lo, hi
    return data


def config_from_env(environ: Mapping[str, str] | None = None) -> FakeConfig:
    """The config given by `VOC_FAKE_LLM_*` variables (unknown ones are ignored)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    for name in FakeConfig.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            data[name] = value
    if ENV_PREFIX + "LATENCY_MS" in env:
        data["latency_ms"] = env[ENV_PREFIX + "LATENCY_MS"]
    return FakeConfig.model_validate(expand_latency(data))
