"""Prometheus metrics of the LLM layer, all in one place.

Created on first use (`llm_metrics()`), not at import, and once per registry, so several
`LLM` clients in one process share them. Labels: `stage` and `model` everywhere, plus:

- `voc_llm_calls_total{outcome}`: provider calls by outcome (`ok`, or an error kind)
- `voc_llm_call_latency_seconds`: provider call latency (histogram)
- `voc_llm_errors_total{kind}`: `rate_limited`, `server_error`, `timeout`, `connection`,
  `rejected`, `malformed`, `truncated`, `looped` (cut off while repeating itself)
- `voc_llm_retries_total{reason}`: retries made, by reason
- `voc_llm_repairs_total`: answers that needed repair (fences, prose, truncation)
- `voc_llm_tokens_total{direction}`: tokens `in` (prompt) and `out` (completion)
- `voc_llm_ratelimit_wait_seconds`: time spent waiting for the shared limiter (histogram)
- `voc_llm_ratelimit_fallback`: 1 while the limiter runs on its local fallback
- `voc_llm_ratelimit_stale_slots_total`: slots given up by callers that woke too late
- `voc_llm_cache_hits_total` / `voc_llm_cache_misses_total`: result cache
- `voc_llm_complete_latency_seconds`: whole `complete()` incl. waits and retries
- `voc_llm_concurrency_wait_seconds`: time spent waiting for a concurrency slot
- `voc_llm_concurrency_fallback`: 1 while the concurrency cap runs on its local fallback
- `voc_llm_inflight`: calls of this process holding a concurrency slot now
- `voc_llm_deadline_overruns_total`: `complete()` calls that ended after their deadline
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0)
_WAIT_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class LLMMetrics:
    """The LLM layer's metric families (and the registry they live in)."""

    registry: CollectorRegistry
    calls: Counter
    latency: Histogram
    complete_latency: Histogram
    errors: Counter
    retries: Counter
    repairs: Counter
    tokens: Counter
    limiter_wait: Histogram
    limiter_fallback: Gauge
    limiter_stale: Counter
    cache_hits: Counter
    cache_misses: Counter
    concurrency_wait: Histogram
    concurrency_fallback: Gauge
    inflight: Gauge
    deadline_overruns: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> LLMMetrics:
        """Register the families in `registry`."""
        sm = ("stage", "model")
        return cls(
            registry=registry,
            calls=Counter(
                "voc_llm_calls", "LLM provider calls", (*sm, "outcome"), registry=registry
            ),
            latency=Histogram(
                "voc_llm_call_latency_seconds",
                "Latency of one LLM provider call",
                sm,
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            complete_latency=Histogram(
                "voc_llm_complete_latency_seconds",
                "Latency of complete(): limiter waits, retries and calls",
                sm,
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "voc_llm_errors", "LLM call errors by kind", (*sm, "kind"), registry=registry
            ),
            retries=Counter(
                "voc_llm_retries", "LLM call retries by reason", (*sm, "reason"), registry=registry
            ),
            repairs=Counter(
                "voc_llm_repairs", "LLM answers that needed repair", sm, registry=registry
            ),
            tokens=Counter(
                "voc_llm_tokens", "LLM tokens by direction", (*sm, "direction"), registry=registry
            ),
            limiter_wait=Histogram(
                "voc_llm_ratelimit_wait_seconds",
                "Time waited for the shared LLM rate limiter",
                sm,
                buckets=_WAIT_BUCKETS,
                registry=registry,
            ),
            limiter_fallback=Gauge(
                "voc_llm_ratelimit_fallback",
                "1 while the LLM limiter uses its local fallback (Redis unreachable)",
                registry=registry,
            ),
            limiter_stale=Counter(
                "voc_llm_ratelimit_stale_slots",
                "Limiter slots given up because the caller woke too late to use them",
                sm,
                registry=registry,
            ),
            cache_hits=Counter(
                "voc_llm_cache_hits", "LLM result cache hits", sm, registry=registry
            ),
            cache_misses=Counter(
                "voc_llm_cache_misses", "LLM result cache misses", sm, registry=registry
            ),
            concurrency_wait=Histogram(
                "voc_llm_concurrency_wait_seconds",
                "Time waited for a slot of the shared LLM concurrency cap",
                sm,
                buckets=_WAIT_BUCKETS,
                registry=registry,
            ),
            concurrency_fallback=Gauge(
                "voc_llm_concurrency_fallback",
                "1 while the LLM concurrency cap uses its local fallback (Redis unreachable)",
                registry=registry,
            ),
            inflight=Gauge(
                "voc_llm_inflight",
                "LLM calls of this process holding a concurrency slot",
                sm,
                registry=registry,
            ),
            deadline_overruns=Counter(
                "voc_llm_deadline_overruns",
                "complete() calls that ended after their deadline",
                sm,
                registry=registry,
            ),
        )


_lock = threading.Lock()
_by_registry: dict[int, LLMMetrics] = {}


def llm_metrics(registry: CollectorRegistry | None = None) -> LLMMetrics:
    """The LLM metrics of `registry` (default: the process-wide one), created once."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        m = _by_registry.get(id(reg))
        if m is None:
            m = LLMMetrics.create(reg)
            _by_registry[id(reg)] = m
        return m
