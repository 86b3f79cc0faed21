"""The shared concurrency cap against real parts (issue 15, point 2): a real redis-server,
the real `openai` client and the fake LLM in its single-slot mode, which generates one
request at a time and queues the rest, as llama.cpp does.

- 25 calls at once to a single-slot server: without a cap they queue inside the server,
  time out, are retried, and the server generates for clients that are gone; with the cap
  the queue is ours and the server never queues anything;
- processes (replicas) share the cap through Redis;
- a killed holder's slot comes back when its lease expires; a running call keeps its slot
  by renewing the lease;
- Redis down: each process keeps its share of the cap locally;
- an abandoned call closes its connection: the server sees the client go;
- the per-call timeout is sized from the expected answer, not the fixed ceiling.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from shared.llm.client import LLM
from shared.llm.concurrency import ConcurrencyLimiter
from shared.llm.errors import LLMRateLimited, LLMTimeout
from shared.llm.metrics import llm_metrics
from shared.llm.settings import LLMSettings
from shared.prompts import insight, translate

if TYPE_CHECKING:
    from llm_fixtures import FakeLLM, RedisProc

pytest_plugins = ["llm_fixtures"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _stack_for_stack_tests() -> None:
    """These tests bring their own Redis and fake LLM: no need for the session stack."""


def make_llm(settings: LLMSettings, redis: Redis | None) -> LLM:
    """An LLM with its own metrics registry (so tests can read the counters)."""
    return LLM(settings, redis, metrics=llm_metrics(CollectorRegistry()))


def one_review(i: int, tag: str = "t") -> dict[str, Any]:
    """A single-review translate input (the calls that flooded the server in issue 15)."""
    return {
        "target_language": "en",
        "items": [
            {
                "id": f"{tag}{i}",
                "text": f"Der Akku hält nicht lange ({tag}{i}).",
                "source_language": "de",
            }
        ],
    }


async def translate_one(llm: LLM, i: int, tag: str = "t") -> translate.TranslateOutput:
    inp = one_review(i, tag)
    return await llm.complete(
        "translate",
        translate.PROMPT,
        inp,
        translate.TranslateOutput,
        validate=translate.check_items([f"{tag}{i}"]),
        cache=False,
    )


async def warm(llm: LLM, fake: FakeLLM) -> None:
    """One request without a timeout, then zeroed stats: the SDK's first request looks its
    platform up in a thread, which on a starved machine alone can outlast a short timeout."""
    client = llm._client(llm.settings.for_stage("translate"))
    await client.models.list()
    httpx.post(fake.url + "/stats/reset", timeout=10).raise_for_status()


async def wait_for_stat(fake: FakeLLM, key: str, value: int, timeout: float = 60.0) -> None:
    """Poll the fake's /stats (without blocking the event loop the calls run on)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=fake.url, timeout=10) as http:
        while True:
            stats = (await http.get("/stats")).json()
            if stats[key] >= value:
                return
            assert time.monotonic() < deadline, f"fake never reached {key}={value}: {stats}"
            await asyncio.sleep(0.1)


async def test_a_single_slot_server_gets_one_call_at_a_time(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # each answer takes ~0.15 s to generate: 25 queued at the server need ~4 s, twice the
    # per-call timeout, so the calls at the back of its queue time out (and are retried)
    fake_llm.configure(slots=1, token_latency_ms=4)
    # (a Redis timeout well above a busy machine's stalls: this is about the shared cap,
    # not its fallback)
    settings = llm_settings.model_copy(
        update={
            "timeout_s": 2.0,
            "decode_tps": 0.0,
            "max_attempts": 3,
            "deadline_s": 60.0,
            "redis_timeout_s": 10.0,
        }
    )
    redis = Redis.from_url(llm_redis.url)
    capped = make_llm(settings.model_copy(update={"max_concurrency": 1}), redis)
    try:
        await warm(capped, fake_llm)
        outs = await asyncio.wait_for(
            asyncio.gather(*(translate_one(capped, i) for i in range(25))), 90
        )
        assert all(len(o.items) == 1 for o in outs)
        stats = fake_llm.stats()
        assert stats["requests"] == 25, "no call was retried"
        assert stats["max_active"] == 1
        assert stats["max_queued"] == 0, "the queue is ours, not the server's"
        assert stats["client_gone"] == 0 and stats["wasted_generations"] == 0
        # the slot is taken and given back 25 times; nothing stays held
        keys = [k async for k in redis.scan_iter(f"{{{settings.key_prefix}:cc:*")]
        holders = [k for k in keys if k.endswith(b":h")]
        assert [await redis.zcard(k) for k in holders] == [0] * len(holders)
    finally:
        await capped.aclose()
        await redis.aclose()


def _capped_worker(redis_url: str, kw: dict[str, Any], tag: str, calls: int) -> int:
    """One replica: `calls` translate calls at once through the shared cap; returns the
    number answered."""

    async def main() -> int:
        redis = Redis.from_url(redis_url)
        llm = make_llm(LLMSettings(**kw), redis)
        try:
            outs = await asyncio.gather(*(translate_one(llm, i, tag) for i in range(calls)))
            return sum(len(o.items) for o in outs)
        finally:
            await llm.aclose()
            await redis.aclose()

    return asyncio.run(main())


def test_replicas_share_the_cap(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    fake_llm.configure(slots=2, token_latency_ms=3)
    kw = {
        "base_url": llm_settings.base_url,
        "api_key": "sk-test",
        "model": llm_settings.model,
        # generous: a call given up on while the server still generates for it would let
        # the next one in (the cap cannot help with that, only the timeout can)
        "timeout_s": 60.0,
        "deadline_s": 120.0,
        "key_prefix": llm_settings.key_prefix,
        "redis_timeout_s": 10.0,
        "max_concurrency": 2,
        "stages": {},
    }
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        answered = pool.starmap(
            _capped_worker, [(llm_redis.url, kw, f"p{i}-", 8) for i in range(3)]
        )
    assert answered == [8, 8, 8]
    stats = fake_llm.stats()
    assert stats["requests"] == 24
    assert stats["max_active"] <= 2
    assert stats["max_queued"] == 0, "three processes never had more than 2 calls out"


# Run as a child process: take the only slot and hold it until killed.
HOLD_FOREVER = """
import asyncio, sys, time
from redis.asyncio import Redis
from shared.llm.concurrency import ConcurrencyLimiter
from shared.llm.settings import LLMSettings

async def main():
    settings = LLMSettings(
        key_prefix=sys.argv[2], concurrency_lease_s=float(sys.argv[3]), max_concurrency=1,
        redis_timeout_s=10.0, base_url=sys.argv[5], stages={},
    )
    slots = ConcurrencyLimiter(Redis.from_url(sys.argv[1]), settings)
    assert settings.for_stage("insight").limit_key == sys.argv[4]
    async with slots.hold(settings.for_stage("insight"), time.monotonic() + 10):
        print("holding", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def _settings_with_cap(base: LLMSettings, **changes: Any) -> tuple[LLMSettings, Any]:
    settings = base.model_copy(update={"max_concurrency": 1, **changes})
    return settings, settings.for_stage("insight")


async def test_a_killed_holders_slot_comes_back_after_its_lease(
    llm_redis: RedisProc, llm_settings: LLMSettings
) -> None:
    lease = 5.0  # renewed every 1.7 s: room for a starved machine's stalls
    settings, cfg = _settings_with_cap(
        llm_settings, concurrency_lease_s=lease, redis_timeout_s=10.0
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_FOREVER,
            llm_redis.url,
            settings.key_prefix,
            str(lease),
            cfg.limit_key,
            settings.base_url,
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    redis = Redis.from_url(llm_redis.url)
    slots = ConcurrencyLimiter(redis, settings)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"holding"
        # the holder renews: a waiter gets nothing for longer than a lease
        with pytest.raises(LLMRateLimited):
            async with slots.hold(cfg, time.monotonic() + 2 * lease):
                pass
        os.kill(child.pid, signal.SIGKILL)  # no release: only the lease can free the slot
        child.wait(10)
        async with slots.hold(cfg, time.monotonic() + 4 * lease):
            got_it = True
        assert got_it
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        await redis.aclose()


async def test_a_long_wait_for_a_slot_never_overflows_the_poll_backoff(
    llm_redis: RedisProc, llm_settings: LLMSettings
) -> None:
    # A single-slot server answering in minutes keeps its waiters polling for minutes. The
    # backoff's exponent grew with every poll until `0.02 * 2**polls` no longer fit a float
    # (about 1,000 polls): `make test-real-llm` saw learn crash with OverflowError there.
    settings, cfg = _settings_with_cap(llm_settings, concurrency_poll_s=0.001, redis_timeout_s=10.0)
    redis = Redis.from_url(llm_redis.url)
    holder = ConcurrencyLimiter(redis, settings)
    waiter = ConcurrencyLimiter(redis, settings)  # another process's: no local wake-up
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_until_released() -> None:
        async with holder.hold(cfg, time.monotonic() + 120):
            held.set()
            await release.wait()

    polls = 0
    ask = waiter._eval

    async def counted(*args: Any) -> Any:
        nonlocal polls
        polls += 1
        return await ask(*args)

    waiter._eval = counted  # type: ignore[method-assign,assignment]

    async def wait_for_the_slot() -> None:
        async with waiter.hold(cfg, time.monotonic() + 120):
            pass

    holding = asyncio.create_task(hold_until_released())
    waiting: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(held.wait(), 30)
        waiting = asyncio.create_task(wait_for_the_slot())
        started = time.monotonic()
        while polls < 1_500:
            assert time.monotonic() - started < 90, f"only {polls} polls"
            if waiting.done():
                waiting.result()  # raises what ended the wait (OverflowError before the fix)
                pytest.fail("the waiter got a slot that was held")
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(waiting, 30)
    finally:
        release.set()
        for task in (holding, waiting):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(holding, *(t for t in [waiting] if t), return_exceptions=True)
        await redis.aclose()


async def test_redis_down_keeps_a_local_share_of_the_cap(
    llm_settings: LLMSettings, fake_llm: FakeLLM, new_redis: Callable[[], RedisProc]
) -> None:
    own = new_redis()
    fake_llm.configure(token_latency_ms=3)
    settings = llm_settings.model_copy(update={"max_concurrency": 4, "fallback_fraction": 0.5})
    redis = Redis.from_url(own.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    llm = make_llm(settings, redis)
    try:
        await translate_one(llm, 0, "up")
        assert not llm.slots.degraded
        own.stop()
        outs = await asyncio.wait_for(
            asyncio.gather(*(translate_one(llm, i, "down") for i in range(8))), 60
        )
        assert all(len(o.items) == 1 for o in outs)
        assert llm.slots.degraded
        assert fake_llm.stats()["max_active"] <= 2, "half of a cap of 4 in this process"
        assert llm.metrics.registry.get_sample_value("voc_llm_concurrency_fallback") == 1
        own.start()
        await asyncio.sleep(1.2)  # past the probe interval
        await translate_one(llm, 9, "back")
        assert not llm.slots.degraded
    finally:
        await llm.aclose()
        await redis.aclose()
        own.stop()


@pytest.mark.parametrize("how", ["cancelled", "timed_out"])
async def test_an_abandoned_call_disconnects_from_the_server(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM, how: str
) -> None:
    # a generation of ~30 tokens at 3 s each: far longer than we wait
    fake_llm.configure(token_latency_ms=3000, finish_for_gone_clients=False)
    settings = llm_settings.model_copy(
        update={
            "timeout_s": 0.8 if how == "timed_out" else 60.0,
            "decode_tps": 0.0,
            "max_attempts": 1,
        }
    )
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(settings, redis)
    try:
        await warm(llm, fake_llm)
        task = asyncio.ensure_future(translate_one(llm, 1))
        await wait_for_stat(fake_llm, "active", 1)
        if how == "cancelled":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(LLMTimeout):
                await task
        await wait_for_stat(fake_llm, "client_gone", 1)
        stats = fake_llm.stats()
        assert stats["client_gone_generating"] == 1 and stats["ok"] == 0
        assert stats["active"] == 0, "the server stopped generating for nobody"
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_the_timeout_is_sized_from_the_expected_answer(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # The server hangs. The ceiling (timeout_s) is 20 s, but a one-review answer is ~100
    # tokens: at 1000 tokens/s plus a 0.3 s base the call gives up after well under a
    # second, and the retry (with a doubled timeout) too - long before the ceiling.
    settings = llm_settings.model_copy(
        update={"timeout_s": 20.0, "timeout_base_s": 0.3, "decode_tps": 1000.0, "max_attempts": 2}
    )
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(settings, redis)
    try:
        await warm(llm, fake_llm)
        fake_llm.configure(timeout_rate=1.0, hang_s=60)
        with pytest.raises(LLMTimeout):
            await asyncio.wait_for(translate_one(llm, 1), 10)
        # the server saw the first try go (a starved client may give up the second one
        # before it is even sent)
        await wait_for_stat(fake_llm, "client_gone", 1)
        assert fake_llm.stats()["ok"] == 0
    finally:
        await llm.aclose()
        await redis.aclose()


async def test_insight_calls_in_flight_never_exceed_the_cap_of_their_model(
    llm_redis: RedisProc, llm_settings: LLMSettings, fake_llm: FakeLLM
) -> None:
    # two stages on one provider+model share its slots (the cap belongs to the model)
    fake_llm.configure(slots=3, token_latency_ms=2)
    settings = llm_settings.model_copy(update={"max_concurrency": 3})
    redis = Redis.from_url(llm_redis.url)
    llm = make_llm(settings, redis)
    try:
        text = "Battery died after two days. The price was great!"
        insights = [
            llm.complete(
                "insight",
                insight.PROMPT,
                {
                    "review_id": f"i{i}",
                    "text": text,
                    "rating": 2,
                    "dimensions": [{"name": "Battery life"}],
                },
                insight.InsightOutput,
                validate=insight.check_quotes(text),
                cache=False,
            )
            for i in range(10)
        ]
        await asyncio.wait_for(
            asyncio.gather(*insights, *(translate_one(llm, i, "mix") for i in range(10))), 60
        )
        stats = fake_llm.stats()
        assert stats["requests"] == 20 and stats["max_queued"] == 0
        assert stats["max_active"] <= 3
    finally:
        await llm.aclose()
        await redis.aclose()
