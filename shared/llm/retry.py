"""Retry policy of LLM calls: exponential backoff with full jitter, `Retry-After`, and
the provider's `x-ratelimit-*` headers. Pure functions, so they are unit-tested alone.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from shared.backoff import capped_exponential
from shared.llm.errors import LLMRequestRejected

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")

# Retry-After values above this are treated as a refusal rather than a pause.
MAX_RETRY_AFTER_S = 120.0


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to sleep before retry number `attempt` (1 = the first retry).

    Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))], so retries of many
    callers spread out instead of arriving together. When the provider said
    `Retry-After`, sleep at least that long, plus a jitter of up to `base_s` so the
    callers it told to wait do not all come back in the same millisecond.
    """
    r = rng or random
    ceiling = capped_exponential(attempt, base_s, cap_s)
    if retry_after_s is not None and retry_after_s > 0:
        return min(retry_after_s, MAX_RETRY_AFTER_S) + r.uniform(0, base_s)
    return r.uniform(0, ceiling)


def parse_duration(value: str | None) -> float | None:
    """Parse OpenAI-style reset durations ("1s", "6m0s", "20ms", "1h2m3.5s", "0.25")."""
    if value is None:
        return None
    v = value.strip().lower()
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in _DURATION_RE.finditer(v):
        if m.start() != pos:
            return None
        pos = m.end()
        n = float(m.group(1))
        total += {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[m.group(2)]
    return total if pos == len(v) else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, then `retry-after`
    (seconds or an HTTP date). None when absent or unparsable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RateLimitHeaders:
    """The provider's view of its quota, from the `x-ratelimit-*` response headers."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    def pause_s(self) -> float:
        """How long everyone should hold off when a window is exhausted.

        `x-ratelimit-reset-*` is the time until the window is full again; with the limit
        known, one request's worth of refill is `reset / (limit - remaining)`, which is
        all we need to wait for the next call, so the quota is not wasted.
        """
        pause = 0.0
        if self.remaining_requests is not None and self.remaining_requests <= 0:
            reset = self.reset_requests_s or 0.0
            if self.limit_requests:
                reset /= max(1, self.limit_requests - self.remaining_requests)
            pause = max(pause, reset)
        if self.remaining_tokens is not None and self.remaining_tokens <= 0:
            pause = max(pause, self.reset_tokens_s or 0.0)
        return min(pause, MAX_RETRY_AFTER_S)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitHeaders:
    """Read `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (missing -> None)."""
    return RateLimitHeaders(
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
        reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


# 4xx answers that are the provider's trouble, not the request's: retried like a 5xx.
RETRYABLE_STATUS = frozenset({408, 409, 425})


class ProviderRetry(Exception):
    """A retryable failure of one provider call: its `kind` (the calls metric's outcome),
    the `cause`, and how long the provider asked us to wait (`retry_after`, seconds)."""

    def __init__(self, kind: str, cause: BaseException, retry_after: float | None = None):
        super().__init__(kind)
        self.kind = kind
        self.cause = cause
        self.retry_after = retry_after


def provider_failure(exc: BaseException, stage: str) -> ProviderRetry | LLMRequestRejected:
    """What an exception of one `openai` call means: a `ProviderRetry` (429, 5xx, 408/409/
    425, timeouts, connection errors, a body that is no answer) or, for any other 4xx, an
    `LLMRequestRejected` that no retry cures. `exc` is one of `PROVIDER_ERRORS`."""
    if isinstance(exc, openai.RateLimitError):
        return ProviderRetry("rate_limited", exc, parse_retry_after(exc.response.headers))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in RETRYABLE_STATUS:
            return ProviderRetry("server_error", exc, parse_retry_after(exc.response.headers))
        return LLMRequestRejected(
            f"{stage}: provider refused the request ({exc.status_code}): {exc.message[:200]}",
            stage=stage,
            status_code=exc.status_code,
        )
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ProviderRetry("timeout", exc)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderRetry("connection", exc)
    # openai.APIResponseValidationError or ValueError: the body is not an answer
    return ProviderRetry("server_error", exc)


REJECTED = "rejected"  # the calls metric's outcome of an `LLMRequestRejected`


def call_outcome(failure: ProviderRetry | LLMRequestRejected) -> str:
    """The calls metric's outcome of a `provider_failure`: the retry kind, or `rejected`
    (which also counts as an error: no retry will cure it)."""
    return failure.kind if isinstance(failure, ProviderRetry) else REJECTED


# What `provider_failure` understands. APITimeoutError is an APIConnectionError, and both
# come before the generic `openai.APIError` subclasses they would otherwise fall under.
PROVIDER_ERRORS: tuple[type[BaseException], ...] = (
    openai.RateLimitError,
    openai.APIStatusError,
    openai.APITimeoutError,
    TimeoutError,
    openai.APIConnectionError,
    openai.APIResponseValidationError,
    ValueError,
)
