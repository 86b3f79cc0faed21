"""The short chaos run of `make test`: one job through faults, nothing lost or doubled.

The same run as `make chaos` (`voc.chaos`), smaller: two replicas per stage, 160 reviews
in eight waves and one fault after each of the first seven (SIGKILL of stage replicas, a
replica joining and leaving, the broker, Postgres and Redis restarted), so each lands
while the stages work on a wave. The
checks are `voc.chaos.check`: every review stored, translated, analysed and themed
exactly once, every insight in one theme, no dead letters, a final report covering the
job, no consumer lag left.
"""

from __future__ import annotations

import pytest

from voc import chaos
from voc.stack import Stack

pytestmark = pytest.mark.e2e


def test_a_job_rides_through_kills_scaling_and_infrastructure_restarts(
    stack: object, stack_ctl: Stack
) -> None:
    result = chaos.run(
        stack_ctl,
        reviews=160,
        replicas=2,
        faults=["kill", "broker", "kill", "postgres", "scale", "redis", "kill"],
        outage_s=3.0,
        latency_ms="100-400",
        timeout_s=600.0,
        seed=16,
    )
    assert [f.kind for f in result.faults] == [
        "kill",
        "broker",
        "kill",
        "postgres",
        "scale",
        "redis",
        "kill",
    ]
    assert result.completed_s is not None, result.result()
    failed = [name for name, held in result.checks.items() if not held]
    assert not failed, (failed, result.details)
