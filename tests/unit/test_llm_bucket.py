"""The limiter's arithmetic and the retry policy, as pure functions (no Redis, no clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.llm.ratelimit import (
    LocalLimiter,
    RateLimiter,
    decayed_usage,
    estimate_tokens,
    fair_cap,
    gcra_advance,
    gcra_conform_at,
    gcra_reserve,
    one_share,
)
from shared.llm.retry import (
    backoff_delay,
    parse_duration,
    parse_ratelimit_headers,
    parse_retry_after,
)
from shared.llm.settings import LLMSettings, overrides_from_env


def schedule(n: int, rate: float, burst: float, cost: float = 1, now: float = 0.0) -> list[float]:
    """Go times of `n` requests all asking at `now`."""
    tat = now
    out = []
    for _ in range(n):
        go, tat = gcra_reserve(tat, now, cost, 1 / rate, burst)
        out.append(go)
    return out


def test_paced_bucket_spaces_requests_evenly() -> None:
    go = schedule(5, rate=10, burst=1)
    assert go == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_burst_lets_the_first_requests_go_at_once() -> None:
    go = schedule(6, rate=10, burst=3)
    assert go[:3] == pytest.approx([0.0, 0.0, 0.0])
    assert go[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_idle_time_refills_but_never_beyond_the_burst() -> None:
    interval, burst = 0.1, 3
    tat = 0.0
    for _ in range(3):
        _, tat = gcra_reserve(tat, 0.0, 1, interval, burst)
    # ten seconds idle: the bucket is full again, but only `burst` deep
    now = 10.0
    gos = []
    for _ in range(5):
        go, tat = gcra_reserve(tat, now, 1, interval, burst)
        gos.append(go)
    assert gos == pytest.approx([10.0, 10.0, 10.0, 10.1, 10.2])


def test_token_cost_is_charged_by_size() -> None:
    # 100 tokens/s, bucket of 100 tokens: 60 + 60 -> the second waits for 20 tokens
    interval = 1 / 100
    go1, tat = gcra_reserve(0.0, 0.0, 60, interval, 100)
    go2, tat = gcra_reserve(tat, 0.0, 60, interval, 100)
    assert go1 == 0.0
    assert go2 == pytest.approx(0.2)
    # a call larger than the bucket waits for a full bucket, then overdraws it
    go3 = gcra_conform_at(tat, 0.0, 500, interval, 100)
    assert go3 == pytest.approx(tat)


def test_advance_never_moves_the_bucket_into_the_past() -> None:
    assert gcra_advance(tat=5.0, go=2.0, cost=1, interval=0.5) == 5.5
    assert gcra_advance(tat=1.0, go=2.0, cost=1, interval=0.5) == 2.5


@pytest.mark.parametrize(("rate", "burst"), [(7, 1), (200, 1), (50, 5)])
def test_any_one_second_window_holds_at_most_rate_plus_burst(rate: int, burst: int) -> None:
    rng = random.Random(rate)
    tat, now, go_times = 0.0, 0.0, []
    for _ in range(rate * 6):
        now += rng.expovariate(rate * 1.5)  # asking faster than the rate
        go, tat = gcra_reserve(tat, now, 1, 1 / rate, burst)
        go_times.append(go)
    go_times.sort()
    j = best = 0
    for i, t in enumerate(go_times):
        while go_times[j] <= t - 1.0 + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    assert best <= rate + burst - 1 + 1  # GCRA bound: rate * window + burst


def test_fair_cap_shares_the_horizon_among_active_jobs() -> None:
    assert fair_cap(2.0, 200, 1) == 400
    assert fair_cap(2.0, 200, 4) == 100
    assert fair_cap(1.0, 3, 10) == 1  # never zero: every job can make progress


def test_local_limiter_paces_like_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("shared.llm.ratelimit.time.monotonic", lambda: clock[0])
    local = LocalLimiter()
    waits = [local.reserve("k", rps=4, burst=1, tps=0, token_burst=1, cost=10) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_token_estimate_grows_with_the_prompt_and_is_bounded_by_max_tokens() -> None:
    small = estimate_tokens([{"role": "user", "content": "x" * 30}], 2048)
    big = estimate_tokens([{"role": "user", "content": "x" * 30_000}], 2048)
    assert 64 <= small < big
    assert big <= 10_000 + 4 + 2048


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (10, 10.0)]:
        samples = [backoff_delay(attempt, base_s=0.5, cap_s=10.0, rng=rng) for _ in range(500)]
        assert all(0 <= s <= ceiling for s in samples)
        # full jitter: spread over the whole range, not bunched at the ceiling
        assert min(samples) < ceiling * 0.1
        assert max(samples) > ceiling * 0.9


def test_backoff_honours_retry_after_plus_a_little_jitter() -> None:
    rng = random.Random(2)
    samples = [
        backoff_delay(1, base_s=0.5, cap_s=10.0, retry_after_s=3.0, rng=rng) for _ in range(200)
    ]
    assert all(3.0 <= s <= 3.5 for s in samples)
    assert len({round(s, 3) for s in samples}) > 50  # callers do not come back together


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    when = datetime(2030, 1, 1, tzinfo=UTC)
    now = (when - timedelta(seconds=30)).timestamp()
    assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, now) == (
        pytest.approx(30.0)
    )
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("20ms", 0.02),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.25", 0.25),
        ("", None),
        ("abc", None),
        (None, None),
    ],
)
def test_reset_durations(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_exhausted_window_pauses_for_one_refill() -> None:
    h = parse_ratelimit_headers(
        {
            "x-ratelimit-limit-requests": "20",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "100ms",
        }
    )
    assert h.pause_s() == pytest.approx(0.005)  # 100 ms to refill 20 -> 5 ms for one
    ok = parse_ratelimit_headers({"x-ratelimit-remaining-requests": "7"})
    assert ok.pause_s() == 0.0
    no_limit = parse_ratelimit_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    )
    assert no_limit.pause_s() == 1.0


def test_stage_overrides_from_env() -> None:
    env = {
        "VOC_LLM_TRANSLATE_MODEL": "qwen-mt",
        "VOC_LLM_INSIGHT_TIMEOUT_S": "12",
        "VOC_LLM_MAX_TOKENS": "999",  # global, not a stage override
    }
    o = overrides_from_env(env)
    assert set(o) == {"translate", "insight"}
    s = LLMSettings(model="base", stages=o)
    assert s.for_stage("translate").model == "qwen-mt"
    assert s.for_stage("insight").timeout_s == 12.0
    assert s.for_stage("learn").model == "base"
    assert s.for_stage("translate").limit_key.endswith("|qwen-mt")
    assert "sk-" not in repr(s)  # the key is masked


def test_fair_cap_weighs_a_heavy_share_down() -> None:
    # one light and one heavy share of a 400-reservation queue: 1 / 1.25 and 0.25 / 1.25
    assert fair_cap(2.0, 200, 2, n_heavy=1, heavy=False, heavy_weight=0.25) == 320
    assert fair_cap(2.0, 200, 2, n_heavy=1, heavy=True, heavy_weight=0.25) == 80
    # alone, or among equals, a heavy share gets what a light one would
    assert fair_cap(2.0, 200, 1, n_heavy=1, heavy=True, heavy_weight=0.25) == 400
    assert fair_cap(2.0, 200, 2, n_heavy=2, heavy=True, heavy_weight=0.25) == 200
    # weight 1 is the equal split
    assert fair_cap(2.0, 200, 2, n_heavy=1, heavy=True, heavy_weight=1.0) == 200


def test_usage_halves_every_half_life() -> None:
    assert decayed_usage(100.0, 10.0, 10.0, 60.0) == 100.0
    assert decayed_usage(100.0, 10.0, 70.0, 60.0) == pytest.approx(50.0)
    assert decayed_usage(100.0, 10.0, 190.0, 60.0) == pytest.approx(12.5)
    # a clock that steps back never adds usage
    assert decayed_usage(100.0, 10.0, 5.0, 60.0) == 100.0


async def test_a_stage_of_one_share_puts_every_job_in_it() -> None:
    async def tenant_of(job_id: str) -> str | None:
        return {"a": "tenant-a"}.get(job_id)

    by_tenant = RateLimiter(None, LLMSettings(), share_of=tenant_of)
    assert await by_tenant.share("a") == "t:tenant-a"
    assert await by_tenant.share("b") == "j:b"  # unknown tenant: its own share
    serial = RateLimiter(None, LLMSettings(), share_of=one_share("stage:theme"))
    assert {await serial.share(j) for j in ("a", "b", "c")} == {"t:stage:theme"}
