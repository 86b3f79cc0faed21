"""The stage runtime: consume a batch, run the stage's handler, upsert, produce, then commit.

Every pipeline service is a `StageHandler` run by `StageRunner`. The runtime owns the
delivery semantics, so no stage re-implements them:

1. `getmany` a batch of records from the input topic (manual commits only);
2. decode each record into the topic's event model; an undecodable or schema-invalid
   record is a poison record and goes to the stage's dead-letter topic;
3. `handler.handle(batch)` returns rows to upsert, events to emit and reviews that failed
   (each with its `shared.errors.Failure`);
4. all rows are upserted in one Postgres transaction (statements of 20 rows);
5. output, retry-tier and dead-letter records are produced and acknowledged (acks=all);
6. only then the offsets are committed: per partition, the end of the contiguous run of
   finished batches, so several batches can be in flight without ever committing past an
   unfinished record.

A crash anywhere before step 6 replays the batch; deterministic ids make the replay upsert
the same rows, so nothing is lost and nothing doubles. One concern per module:

- `contract`: what a handler gets and returns (`Incoming`, `StageResult`, ...);
- `offsets`: the per-partition tracker of what may be committed;
- `runner`: the poll loop, batches in flight, commits, rebalances, stopping;
- `batch`: decode, handle, write, and narrowing a failure down to its record;
- `sink`: upsert, then produce, then cleanup;
- `deadletters`: retry tiers and dead-letter topics, their headers and rows;
- `faults`: riding through infrastructure outages, giving up on what keeps failing;
- `observer`: what the runner reports (Prometheus by default);
- `service`: process start-up (`run_service`, `main`).
"""

from shared.stage.contract import (
    DeadLetterOut,
    Incoming,
    Outgoing,
    PostProduce,
    StageHandler,
    StageResult,
    Ticks,
)
from shared.stage.faults import INFRA_ERRORS
from shared.stage.runner import StageRunner
from shared.stage.service import main, run_service

__all__ = [
    "INFRA_ERRORS",
    "DeadLetterOut",
    "Incoming",
    "Outgoing",
    "PostProduce",
    "StageHandler",
    "StageResult",
    "StageRunner",
    "Ticks",
    "main",
    "run_service",
]
