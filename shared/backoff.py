"""Capped exponential backoff, safe for any number of tries.

One formula for every "wait longer after each failure, up to a ceiling" in the code base
(LLM retries, waiting for a concurrency slot, a job's learning, callback deliveries). The
exponent is bounded, because some of those counts grow for as long as the trouble lasts:
a waiter polling a one-slot server for minutes (found by `make test-real-llm`: about
1,000 polls made `0.02 * 2**polls` overflow a float and crashed learn), or a job whose
learning fails all night.
"""

from __future__ import annotations

# 2**64 times any sensible base is far past any ceiling, and still a finite float.
_MAX_DOUBLINGS = 64


def capped_exponential(n: int, base_s: float, cap_s: float) -> float:
    """`base_s * 2**(n - 1)` for the n-th try (n below 1 counts as 1), at most `cap_s`."""
    return float(min(cap_s, base_s * 2.0 ** min(max(0, n - 1), _MAX_DOUBLINGS)))
