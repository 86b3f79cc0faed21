"""The LLM layer against real parts: a real redis-server, the real `openai` client and
the fake LLM server as a real subprocess (see llm_fixtures.py).

- several processes sharing one bucket never exceed the limit in any 1-second window,
  and cause no provider 429s;
- a 429's Retry-After is honoured and slows the shared limiter down;
- every injected fault ends in success after retries or in a typed error, never a hang;
- a repeated call is a cache hit; `cache=False` bypasses it;
- a huge job does not starve a small one;
- Redis down -> local fallback, and back to shared limiting when Redis returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.llm.client import LLM
from shared.llm.errors import (
    LLMMalformedOutput,
    LLMTimeout,
    LLMUnavailable,
)
from shared.llm.metrics import llm_metrics
from shared.llm.ratelimit import RateLimiter
from shared.llm.settings import LLMSettings
from shared.prompts import insight, translate

if TYPE_CHECKING:
    from llm_fixtures import FakeLLM, RedisProc

# the fixtures llm_redis, fake_llm_server, fake_llm and llm_settings
pytest_plugins = ["llm_fixtures"]


@pytest.fixture(autouse=True)
def _stack_for_stack_tests() -> None:
    """These tests bring their own Redis and fake LLM: no need for the session stack."""


DIMS = [
    {"name": "Battery life", "description": "battery"},
    {"name": "Price and value", "description": "price"},
    {"name": "Delivery and shipping", "description": "delivery"},
]


def insight_input(review_id: str, text: str | None = None) -> dict[str, Any]:
    """A realistic insight input."""
    return {
        "review_id": review_id,
        "text": text or f"Battery died after two days ({review_id}). The price was great!",
        "rating": 2,
        "dimensions": DIMS,
        "five_w": {},
    }


def make_llm(settings: LLMSettings, redis: Redis | None) -> LLM:
    """An LLM with its own metrics registry (so tests can read the counters)."""
    return LLM(settings, redis, metrics=llm_metrics(CollectorRegistry()))


def counter(llm: LLM, name: str, **labels: str) -> float:
    """The value of an LLM metric sample."""
    value = llm.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def max_in_window(times: list[float], window: float) -> int:
    """The most events within any half-open window of `window` seconds."""
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


# --- multi-process workers (run in spawned processes) --------------------------------


def _limiter_worker(
    redis_url: str, kw: dict[str, Any], seconds: float, callers: int, job: str, hold_s: float
) -> list[tuple[float, float]]:
    """Callers that acquire slots as fast as the limiter allows: (go_at, waited_s)."""

    async def main() -> list[tuple[float, float]]:
        redis = Redis.from_url(redis_url)
        settings = LLMSettings(**kw)
        limiter = RateLimiter(redis, settings)
        cfg = settings.for_stage("insight")
        grants: list[tuple[float, float]] = []
        stop = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < stop:
                g = await limiter.acquire(cfg, 100, job_id=job, deadline=time.monotonic() + 30)
                grants.append((g.go_at, g.waited_s))
                await asyncio.sleep(hold_s)

        await asyncio.gather(*(caller() for _ in range(callers)))
        await redis.aclose()
        return grants

    return asyncio.run(main())


def _client_worker(
    redis_url: str, kw: dict[str, Any], seconds: float, callers: int, tag: str
) -> dict[str, int]:
    """Callers making real `complete()` calls against the fake: counts of outcomes."""

    async def main() -> dict[str, int]:
        redis = Redis.from_url(redis_url)
        llm = make_llm(LLMSettings(**kw), redis)
        out = {"ok": 0, "error": 0}
        stop = time.monotonic() + seconds

        async def caller(i: int) -> None:
            k = 0
            while time.monotonic() < stop:
                k += 1
                try:
                    await llm.complete(
                        "insight",
                        insight.PROMPT,
                        insight_input(f"{tag}-{i}-{k}"),
                        insight.InsightOutput,
                        cache=False,
                    )
                    out["ok"] += 1
                except LLMUnavailable:
                    out["error"] += 1

        await asyncio.gather(*(caller(i) for i in range(callers)))
        await llm.aclose()
        await redis.aclose()
        return out

    return asyncio.run(main())


def _settings_kw(settings: LLMSettings, **changes: Any) -> dict[str, Any]:
    kw = {
        "base_url": settings.base_url,
        "api_key": settings.api_key.get_secret_value(),
        "model": settings.model,
        "timeout_s": settings.timeout_s,
        "deadline_s": settings.deadline_s,
        "backoff_base_s": settings.backoff_base_s,
        "backoff_max_s": settings.backoff_max_s,
        "key_prefix": settings.key_prefix,
        "stages": {},
    }
    kw.update(changes)
    return kw


# --- tests -------------------------------------------------------------------------


def test_processes_sharing_one_bucket_never_exceed_the_limit(
    llm_redis: RedisProc, llm_settings: LLMSettings
) -> None:
    rate = 40
    kw = _settings_kw(llm_settings, rps=rate, limiter_horizon_s=2.0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(
            _limiter_worker, [(llm_redis.url, kw, 4.0, 8, "job-1", 0.0) for _ in range(4)]
        )
    go = [g for r in results for g, _ in r]
    assert all(go), "every grant carries its Redis time"
    # skip the first and last second (processes start and stop at different times)
    t0, t1 = min(go) + 1.0, max(go) - 0.5
    steady = [t for t in go if t0 <= t <= t1]
    # grants are spaced by exactly 1/rate on the Redis clock (µs rounding aside)
    assert max_in_window(go, 1.0 - 1e-3) <= rate
    assert len(steady) >= 0.9 * rate * (t1 - t0), "the quota is used, not wasted"


def test_processes_calling_the_provider_get_no_429(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    rate = 40
    # the burst absorbs send jitter: on a loaded 2-core machine a process may stall for
    # a few hundred ms and then send its due requests together
    fake_llm.configure(rate_limit_rps=rate, rate_limit_burst=rate / 2, latency_ms="20-80")
    kw = _settings_kw(llm_settings, rps=rate)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(
            _client_worker, [(llm_redis.url, kw, 4.0, 10, f"p{i}") for i in range(3)]
        )
    stats = fake_llm.stats(arrivals=True)
    assert sum(r["error"] for r in results) == 0
    assert stats["rate_limited"] == 0
    assert stats["requests"] == sum(r["ok"] for r in results)
    # the provider saw at most its rate (plus the jitter its burst absorbs) per second
    assert stats["max_requests_in_1s"] <= rate + rate / 2


async def test_retry_after_is_honoured_and_slows_everyone(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.configure(rate_limit_rps=1, rate_limit_burst=1)
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings, redis)
    # another deployment (own limiter state) empties the provider's bucket
    other = make_llm(llm_settings.model_copy(update={"key_prefix": "other"}), redis)
    try:
        await other.complete("insight", insight.PROMPT, insight_input("a"), insight.InsightOutput)
        t = time.monotonic()
        out = await llm.complete(
            "insight", insight.PROMPT, insight_input("b"), insight.InsightOutput
        )
        elapsed = time.monotonic() - t
        assert out.insights
        assert fake_llm.stats()["rate_limited"] == 1
        # the fake said retry-after-ms ~= 1000 (bucket of 1 at 1 rps, just emptied)
        assert elapsed >= 0.9
        assert (
            counter(
                llm,
                "voc_llm_retries_total",
                stage="insight",
                model="voc-fake-1",
                reason="rate_limited",
            )
            == 1
        )
        # everyone's effective rate was halved for the Retry-After window
        key = "{" + f"{llm_settings.key_prefix}:rl:{llm.settings.for_stage('x').limit_key}" + "}:s"
        pen = await redis.hget(key, "pen")
        assert pen is not None and float(pen) < 1.0
        # that answer said x-ratelimit-remaining-requests: 0, so the next call waits for
        # the refill instead of running into another 429
        t = time.monotonic()
        await llm.complete("insight", insight.PROMPT, insight_input("c"), insight.InsightOutput)
        assert time.monotonic() - t >= 0.8
        assert fake_llm.stats()["rate_limited"] == 1
    finally:
        await llm.aclose()
        await other.aclose()
        await redis.aclose()


FAULTS = [
    # fault config, stage, error expected when every call with the marker is hit
    ({"error_rate": 1.0}, "insight", LLMUnavailable),
    ({"timeout_rate": 1.0, "hang_s": 30}, "insight", LLMTimeout),
    ({"malformed_rate": 1.0}, "insight", LLMMalformedOutput),
    # a truncated insight list is repaired to its complete insights on the last attempt
    ({"truncated_rate": 1.0}, "insight", None),
    # a truncated translation batch misses items: check_items rejects every repair
    ({"truncated_rate": 1.0}, "translate", LLMMalformedOutput),
    ({"fenced_rate": 1.0}, "insight", None),  # repaired: always succeeds
    ({"missing_item_rate": 1.0}, "translate", LLMMalformedOutput),
    ({"bad_quote_rate": 1.0}, "insight", LLMMalformedOutput),
]


async def _call(llm: LLM, stage: str, marker: str, n: int) -> Any:
    text = f"Battery died after two days {marker} {n}. The price was great!"
    if stage == "translate":
        items: list[dict[str, Any]] = [
            {"id": f"{n}-{i}", "text": f"{text} #{i}", "source_language": None} for i in range(5)
        ]
        return await llm.complete(
            "translate",
            translate.PROMPT,
            {"target_language": "en", "items": items},
            translate.TranslateOutput,
            validate=translate.check_items(i["id"] for i in items),
            cache=False,
        )
    return await llm.complete(
        "insight",
        insight.PROMPT,
        insight_input(f"r{n}", text),
        insight.InsightOutput,
        validate=insight.check_quotes(text),
        cache=False,
    )


@pytest.mark.parametrize(("fault", "stage", "error"), FAULTS, ids=lambda v: str(v))
async def test_injected_faults_end_in_success_or_a_typed_error(
    llm_redis: RedisProc,
    llm_settings: LLMSettings,
    fake_llm: FakeLLM,
    fault: dict[str, Any],
    stage: str,
    error: type[Exception] | None,
) -> None:
    settings = llm_settings.model_copy(update={"timeout_s": 0.5, "max_attempts": 3})
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(settings, redis)
    try:
        # 1. the fault hits only inputs with the marker: those fail (typed), others pass
        fake_llm.configure(fault_match="FAULT", **fault)
        ok = await asyncio.wait_for(_call(llm, stage, "fine", 1), 30)
        assert ok is not None
        if error is None:
            assert await asyncio.wait_for(_call(llm, stage, "FAULT", 2), 30) is not None
        else:
            with pytest.raises(error):
                await asyncio.wait_for(_call(llm, stage, "FAULT", 3), 30)
        hit = fake_llm.stats()["faults_total"]
        assert hit >= 1
        # 2. the same fault at random on half of all calls: retries get every call through
        fake_llm.configure(
            fault_match=None, **{k: (0.3 if k.endswith("rate") else v) for k, v in fault.items()}
        )
        results = await asyncio.wait_for(
            asyncio.gather(*(_call(llm, stage, "x", i) for i in range(10)), return_exceptions=True),
            60,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        # with 3 attempts at a 30% fault rate, a failure is possible (p=2.7%) but rare
        assert len(failures) <= 2, failures
        assert all(isinstance(f, error or ()) for f in failures), failures
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_repeated_call_is_a_cache_hit(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(llm_settings, redis)
    try:
        inp = insight_input("dup")
        first = await llm.complete("insight", insight.PROMPT, inp, insight.InsightOutput)
        second = await llm.complete("insight", insight.PROMPT, inp, insight.InsightOutput)
        assert first == second
        assert fake_llm.stats()["requests"] == 1
        labels = {"stage": "insight", "model": "voc-fake-1"}
        assert counter(llm, "voc_llm_cache_hits_total", **labels) == 1
        assert counter(llm, "voc_llm_cache_misses_total", **labels) == 1
        # identical calls in flight at once cost one provider call too
        inp2 = insight_input("dup2")
        many = await asyncio.gather(
            *(
                llm.complete("insight", insight.PROMPT, inp2, insight.InsightOutput)
                for _ in range(5)
            )
        )
        assert all(m == many[0] for m in many)
        assert fake_llm.stats()["requests"] == 2
        # cache=False (replays with --no-cache) calls again
        await llm.complete("insight", insight.PROMPT, inp, insight.InsightOutput, cache=False)
        assert fake_llm.stats()["requests"] == 3
        # another prompt version is another key
        v2 = dataclasses.replace(insight.PROMPT, version=insight.PROMPT.version + ".next")
        await llm.complete("insight", v2, inp, insight.InsightOutput)
        assert fake_llm.stats()["requests"] == 4
    finally:
        await llm.aclose()
        await redis.aclose()


def test_a_huge_job_does_not_starve_a_small_one(
    llm_redis: RedisProc, llm_settings: LLMSettings
) -> None:
    rate = 20
    kw = _settings_kw(llm_settings, rps=rate, limiter_horizon_s=1.0, limiter_active_window_s=2.0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        big, small = pool.starmap(
            _limiter_worker,
            [
                (llm_redis.url, kw, 6.0, 30, "huge-job", 0.05),
                (llm_redis.url, kw, 6.0, 2, "small-job", 0.05),
            ],
        )
    wait_big = statistics.median(w for _, w in big[len(big) // 3 :])
    wait_small = statistics.median(w for _, w in small[len(small) // 3 :])
    # without fair sharing the small job would queue behind all 30 callers of the big
    # one (~1.5 s per call); with it, behind at most half the horizon (~0.5 s)
    assert wait_small < 0.8, (wait_small, wait_big)
    assert wait_small < wait_big / 2, (wait_small, wait_big)
    go = [g for g, _ in big + small]
    assert max_in_window(go, 1.0 - 1e-3) <= rate


async def test_redis_down_uses_a_local_limit_and_recovers(
    llm_settings: LLMSettings, fake_llm: FakeLLM, new_redis: Callable[[], RedisProc]
) -> None:
    own = new_redis()
    settings = llm_settings.model_copy(update={"rps": 20.0, "fallback_fraction": 0.25})
    redis = Redis.from_url(own.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    llm = make_llm(settings, redis)
    try:
        await llm.complete("insight", insight.PROMPT, insight_input("u1"), insight.InsightOutput)
        assert not llm.limiter.degraded
        own.stop()
        t = time.monotonic()
        outs = await asyncio.wait_for(
            asyncio.gather(
                *(
                    llm.complete(
                        "insight", insight.PROMPT, insight_input(f"d{i}"), insight.InsightOutput
                    )
                    for i in range(6)
                )
            ),
            30,
        )
        elapsed = time.monotonic() - t
        assert all(o.insights for o in outs)
        assert llm.limiter.degraded
        # local limit: 25% of 20 rps = 5 rps -> 6 calls take about a second
        assert elapsed >= 0.9
        own.start()
        await asyncio.sleep(1.2)  # past the probe interval
        await llm.complete("insight", insight.PROMPT, insight_input("u2"), insight.InsightOutput)
        assert not llm.limiter.degraded
    finally:
        await llm.aclose()
        await redis.aclose()
        own.stop()


async def test_token_bucket_paces_by_tokens_per_minute(
    llm_redis: RedisProc, llm_settings: LLMSettings
) -> None:
    # 6000 tokens/min = 100 tokens/s, bucket of 1 s; calls of 50 tokens -> 2 per second
    settings = llm_settings.model_copy(update={"rps": 100.0, "tpm": 6000, "tpm_burst_s": 1.0})
    redis = Redis.from_url(llm_redis.url)
    limiter = RateLimiter(redis, settings)
    cfg = settings.for_stage("insight")
    try:
        go = []
        for _ in range(7):
            g = await limiter.acquire(cfg, 50, deadline=time.monotonic() + 10)
            go.append(g.go_at)
        span = go[-1] - go[0]
        # the first 2 fit the full bucket, the next 5 come every 0.5 s
        assert 2.3 <= span <= 2.8, span
        # usage said the calls were cheaper: the refund lets the next one go sooner
        await limiter.adjust(cfg, -200)
        g = await limiter.acquire(cfg, 50, deadline=time.monotonic() + 10)
        assert g.go_at - go[-1] < 0.3
    finally:
        await redis.aclose()
