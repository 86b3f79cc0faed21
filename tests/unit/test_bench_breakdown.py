"""`bench.e2e.breakdown`: where a job's time above the quota's bound goes."""

from bench.e2e import breakdown


def test_breakdown_splits_fill_ramp_short_and_drain() -> None:
    rps = 10.0
    # first call at 5 s; second 0 has 2 calls, seconds 1-3 are full, second 4 has 5, the
    # last (partial) second one call; the job completes 2 s after the last call
    arrivals = [5.0, 5.5]
    arrivals += [5.0 + s + i / 10 for s in (1, 2, 3) for i in range(10)]
    arrivals += [9.0 + i / 10 for i in range(5)] + [10.2]
    progress = [
        (0.0, {"translate": 0, "insight": 0, "theme": 0}),
        (8.5, {"translate": 100, "insight": 40, "theme": 0}),
    ]
    # one call of second 2 was refused with a 429: it did no work
    b = breakdown(arrivals, progress, completed_s=12.2, rps=rps, reviews=100, refused=[7.5])
    assert b["fill_s"] == 5.0
    assert b["ramp_s"] == 1.0  # second 0 had 2 of 10: below 90%
    # second 2 lacks a tenth of the quota (translate still had reviews left then) and
    # second 4 half of it (translate done: insight, the first stage with reviews left)
    assert b["short_s"] == 0.6
    assert b["short_by_stage_s"] == {"insight": 0.5, "translate": 0.1}
    assert b["refused_s"] == 0.1
    assert b["drain_s"] == 2.0


def test_breakdown_is_empty_when_the_job_did_not_complete() -> None:
    assert breakdown([1.0, 2.0], [], completed_s=None, rps=10.0, reviews=1) == {}
    assert breakdown([], [], completed_s=3.0, rps=10.0, reviews=1) == {}
