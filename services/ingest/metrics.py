"""Ingest-specific Prometheus metrics: what became of each submitted row.

The generic stage metrics (records in/out, batch sizes and latency, commits, dead
letters) come from `shared.metrics` through the runner; this adds the row outcomes that
only ingest knows. Counters count processing, so a replayed chunk is counted again.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from services.ingest.core import IngestOutcome
from shared import metrics as m

ROWS = Counter(
    "vocstream_ingest_rows_total",
    "Submitted rows by outcome: accepted (stored and emitted), duplicate",
    ["outcome"],
)


def observe(outcomes: Iterable[IngestOutcome]) -> None:
    """Count the rows of a processed batch by outcome."""
    accepted = duplicates = 0
    for o in outcomes:
        accepted += o.accepted
        duplicates += o.duplicates
    m.REVIEWS_IN.labels("ingest").inc(accepted + duplicates)
    ROWS.labels("accepted").inc(accepted)
    ROWS.labels("duplicate").inc(duplicates)
