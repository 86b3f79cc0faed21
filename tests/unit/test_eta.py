"""The job ETA from per-stage pending reviews and the speeds the lag exporter publishes."""

from __future__ import annotations

import asyncio

from shared.eta import (
    STAGE_RATES_KEY,
    StageRate,
    decode_stage_rates,
    encode_stage_rates,
    job_eta,
    pending_by_stage,
    read_stage_rates,
    stage_eta,
)


def _rate(stage: str, rps: float | None, lag: int = 10) -> StageRate:
    return StageRate(stage, lag, 1.0, 1.0, 1.0, rps, 1)


def test_stage_eta() -> None:
    assert stage_eta(0, None) == 0.0
    assert stage_eta(100, 20.0) == 5.0
    assert stage_eta(100, None) is None
    assert stage_eta(100, 0.0) is None
    assert stage_eta(100, float("nan")) is None


def test_job_eta_is_the_slowest_stage() -> None:
    eta = job_eta(
        {"translate": 100, "insight": 300},
        {"translate": _rate("translate", 50.0), "insight": _rate("insight", 10.0)},
    )
    assert eta.stages["translate"].eta_s == 2.0
    assert eta.stages["insight"].eta_s == 30.0
    assert eta.stages["insight"].pending == 300
    assert eta.eta_s == 30.0


def test_job_eta_unknown_when_a_lagging_stage_has_no_speed_or_no_figures() -> None:
    assert job_eta({"insight": 5}, {"insight": _rate("insight", None, lag=3)}).eta_s is None
    assert job_eta({"insight": 5}, {}).eta_s is None


def test_stage_without_backlog_is_not_the_bottleneck() -> None:
    eta = job_eta(
        {"translate": 10, "insight": 100},
        {"translate": _rate("translate", None, lag=0), "insight": _rate("insight", 10.0)},
    )
    assert eta.stages["translate"].eta_s is None
    assert eta.eta_s == 10.0


def test_finished_job_has_zero_eta() -> None:
    eta = job_eta({"translate": 0, "insight": -3}, {})
    assert eta.eta_s == 0.0
    assert eta.stages["insight"].pending == 0


def test_pending_by_stage() -> None:
    assert pending_by_stage(100, {"translate": 100, "insight": 40, "theme": 120}) == {
        "translate": 0,
        "insight": 60,
        "theme": 0,
    }


def test_encode_decode_roundtrip_and_garbage() -> None:
    rates = {"insight": _rate("insight", 12.5)}
    assert decode_stage_rates(encode_stage_rates(rates, 1.0)) == rates
    assert decode_stage_rates(None) == {}
    assert decode_stage_rates(b"{}") == {}
    assert decode_stage_rates(b"nope") == {}


class _FakeRedis:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    async def get(self, name: str) -> bytes | None:
        return self.data.get(name)


def test_read_stage_rates() -> None:
    rates = {"theme": _rate("theme", 3.0)}
    redis = _FakeRedis({STAGE_RATES_KEY: encode_stage_rates(rates, 2.0)})
    assert asyncio.run(read_stage_rates(redis)) == rates
    assert asyncio.run(read_stage_rates(_FakeRedis({}))) == {}
