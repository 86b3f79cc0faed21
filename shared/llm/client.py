"""The LLM client the stages call: structured output over any OpenAI-compatible endpoint.

    llm = build_llm(LLMSettings(), redis)
    out = await llm.complete("insight", insight.PROMPT, payload, insight.InsightOutput,
                             job_id=job_id, validate=insight.check_quotes(text))

One `complete()` call: result cache lookup (and in-process de-duplication of identical
concurrent calls) -> a slot of the shared concurrency cap (`shared.llm.concurrency`) ->
shared rate limiter -> provider call with a timeout sized from the expected answer ->
repair and validation of the answer. The answer's shape is enforced by the provider where
it can (`VOC_LLM_STRUCTURED`, a JSON Schema derived by `shared.llm.schema`), and repaired
and validated in every case.

Transport failures (429, 5xx, timeouts, connection errors) are retried with exponential
backoff and full jitter, honouring `Retry-After`; a 429 also slows the shared limiter down
for everyone; a timed-out call is retried with a longer timeout. Malformed answers (or ones
the caller's `validate` rejects) are retried with a correction that quotes every validation
error, at a higher temperature each time, so a retry never repeats the request it
corrects; truncated ones with a larger `max_tokens`. A call that is abandoned (timed out,
or its task cancelled) closes its HTTP connection, so the server can stop generating for
it. Failures end in one of the typed errors of `shared.llm.errors`, never in a hang: every
wait is bounded by `VOC_LLM_DEADLINE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx2
import orjson
from openai import AsyncOpenAI, DefaultAioHttpClient
from pydantic import BaseModel
from redis.asyncio import Redis

from shared.llm.cache import ResultCache, cache_key
from shared.llm.concurrency import ConcurrencyLimiter
from shared.llm.errors import (
    LLMError,
    LLMMalformedOutput,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
)
from shared.llm.metrics import LLMMetrics, llm_metrics
from shared.llm.prompts import PromptTemplate
from shared.llm.ratelimit import RateLimiter, ShareOf, estimate_tokens
from shared.llm.repair import describe_error, echo_hint, repeating_tail, validate_reply
from shared.llm.retry import (
    PROVIDER_ERRORS,
    REJECTED,
    ProviderRetry,
    backoff_delay,
    call_outcome,
    parse_ratelimit_headers,
    provider_failure,
)
from shared.llm.schema import SCHEMA_MODES, response_format
from shared.llm.settings import LLMSettings, StageConfig, SystemRole

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

STAGE_HEADER = "X-Voc-Stage"
PROMPT_VERSION_HEADER = "X-Voc-Prompt-Version"
_MAX_TOKENS_GROWTH = 4
# A call that ends this long after its deadline (plus the Redis timeout: the cache write
# after the last provider call) counts as an overrun; the HTTP layer's own timeout is a
# second behind the asyncio one.
DEADLINE_GRACE_S = 1.0

CORRECTION = (
    "Your previous answer (retry {retry}) could not be used.\n{error}\n{hint}"
    "Answer again with only the JSON object, exactly as the schema in the instructions "
    "requires - no prose, no code fences."
)


LOOP_HINT = (
    "It repeated {unit!r} over and over until it was cut off. Write every value once, "
    "briefly, and close the JSON object."
)


def expected_output_tokens(input_chars: int, max_tokens: int) -> int:
    """A generous guess of an answer's length: twice the input's ~3-characters tokens plus
    a fixed overhead, at most `max_tokens`. Stages answer in proportion to their input
    (a translation, the insights of one review), never with more than `max_tokens`."""
    return min(max_tokens, 64 + 2 * (input_chars // 3))


def call_timeout(cfg: StageConfig, expected_tokens: int, remaining_s: float) -> float:
    """One provider call's timeout: `timeout_base_s + expected_tokens / decode_tps`, at
    most `timeout_s` and the time left before the deadline (`decode_tps=0`: `timeout_s`)."""
    timeout = cfg.timeout_s
    if cfg.decode_tps > 0:
        timeout = min(timeout, cfg.timeout_base_s + expected_tokens / cfg.decode_tps)
    return max(0.05, min(timeout, remaining_s))


def shape_messages(messages: list[dict[str, str]], role: SystemRole) -> list[dict[str, str]]:
    """The chat messages as the provider wants them: with `role="user"` the system text
    opens the first user turn (Gemma's template; llama.cpp's `gemma` format would drop
    a system message), separated from it by a blank line."""
    if role == "system":
        return messages
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if not system:
        return rest
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def hotter(temperature: float, step: float, ceiling: float) -> float:
    """The next corrective retry's temperature: `step` higher, at most `ceiling` (never
    lower than it was)."""
    return max(temperature, min(temperature + step, ceiling))


class LLM:
    """Structured-output LLM calls with shared rate limiting, retries and caching."""

    def __init__(
        self,
        settings: LLMSettings,
        redis: Redis | None,
        *,
        metrics: LLMMetrics | None = None,
        limiter: RateLimiter | None = None,
        cache: ResultCache | None = None,
        rng: random.Random | None = None,
        share_of: ShareOf | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or llm_metrics()
        gate = asyncio.Semaphore(settings.redis_max_concurrency)
        self.limiter = limiter or RateLimiter(
            redis, settings, self.metrics, gate=gate, share_of=share_of
        )
        self.slots = ConcurrencyLimiter(redis, settings, self.metrics, gate=gate)
        self.cache = cache or ResultCache(
            redis, ttl_s=settings.cache_ttl_s, timeout_s=settings.redis_timeout_s, gate=gate
        )
        self._rng = rng or random.Random()
        self._clients: dict[tuple[str, str], AsyncOpenAI] = {}
        self._inflight: dict[str, asyncio.Future[BaseModel]] = {}

    def _client(self, cfg: StageConfig) -> AsyncOpenAI:
        # Local servers (vLLM, Ollama) need no key, but the SDK insists on a non-empty one.
        key = (cfg.base_url, cfg.api_key.get_secret_value() or "EMPTY")
        client = self._clients.get(key)
        if client is None:
            # The aiohttp transport costs ~1.5 ms of CPU per call against httpx2's ~2.7
            # at 200 calls in flight (httpx2's pool walks all its connections for every
            # request); at 200 calls/s that is a fifth of a core the event loop gets back.
            client = AsyncOpenAI(
                api_key=key[1],
                base_url=cfg.base_url,
                timeout=cfg.timeout_s,
                max_retries=0,
                http_client=DefaultAioHttpClient(timeout=cfg.timeout_s),
            )
            self._clients[key] = client
        return client

    def openai_client(self, cfg: StageConfig) -> AsyncOpenAI:
        """The SDK client of `cfg`'s endpoint, shared with the chat calls (used by
        `shared.llm.embeddings`, which reuses this pool, limiter, cache and metrics)."""
        return self._client(cfg)

    async def aclose(self) -> None:
        """Close the HTTP connection pools."""
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()

    async def complete(
        self,
        stage: str,
        prompt: PromptTemplate,
        input: dict[str, Any],
        output_model: type[T],
        *,
        job_id: str | None = None,
        cache: bool = True,
        validate: Callable[[T], None] | None = None,
    ) -> T:
        """Ask the model of `stage` and return its answer as a validated `output_model`.

        `validate` may raise `ValueError` to reject a semantically wrong answer; that
        counts as malformed and is retried. `cache=False` skips the cache lookup (the
        fresh answer is still stored). `job_id` shares the quota fairly between jobs.
        Raises `LLMMalformedOutput`, `LLMRequestRejected` (not retryable) or
        `LLMUnavailable` / `LLMTimeout` / `LLMRateLimited` (retryable).
        """
        cfg = self.settings.for_stage(stage)
        start = time.monotonic()
        deadline = start + self.settings.deadline_s
        key = cache_key(self.settings.key_prefix, stage, prompt, cfg.model, input, scope=job_id)
        call = functools.partial(
            self._call, cfg, prompt, input, output_model, job_id, validate, key, deadline
        )
        try:
            if not cache:
                return await call()
            # Identical calls in flight share one lookup and one provider call: the first
            # registers itself before its first await, the others wait for its answer.
            leader = self._inflight.get(key)
            if leader is not None:
                shared = await self._follow(leader, output_model, validate)
                if shared is not None:
                    return shared
            fut: asyncio.Future[BaseModel] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_consume)
            self._inflight[key] = fut
            try:
                result = await self._from_cache(cfg, key, output_model, validate)
                if result is None:
                    result = await call()
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
                raise
            else:
                fut.set_result(result)
                return result
            finally:
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
        finally:
            end = time.monotonic()
            self.metrics.complete_latency.labels(stage, cfg.model).observe(end - start)
            if end > deadline + DEADLINE_GRACE_S + self.settings.redis_timeout_s:
                self.metrics.deadline_overruns.labels(stage, cfg.model).inc()
                log.warning("llm %s: call ended %.1fs after its deadline", stage, end - deadline)

    async def _follow(
        self,
        leader: asyncio.Future[BaseModel],
        output_model: type[T],
        validate: Callable[[T], None] | None,
    ) -> T | None:
        """Wait for an identical call in flight; None if it was cancelled."""
        await asyncio.wait([leader])
        if leader.cancelled():
            return None
        exc = leader.exception()
        if exc is not None:
            raise exc
        value = leader.result()
        if not isinstance(value, output_model):
            return None
        copy = value.model_copy(deep=True)
        if validate is not None:
            validate(copy)
        return copy

    async def _from_cache(
        self,
        cfg: StageConfig,
        key: str,
        output_model: type[T],
        validate: Callable[[T], None] | None,
    ) -> T | None:
        raw = await self.cache.get(key)
        if raw is not None:
            try:
                result = output_model.model_validate_json(raw)
                if validate is not None:
                    validate(result)
            except ValueError as exc:
                log.warning("llm cache: stored answer rejected (%s); calling again", exc)
            else:
                self.metrics.cache_hits.labels(cfg.stage, cfg.model).inc()
                return result
        self.metrics.cache_misses.labels(cfg.stage, cfg.model).inc()
        return None

    async def _call(
        self,
        cfg: StageConfig,
        prompt: PromptTemplate,
        input: dict[str, Any],
        output_model: type[T],
        job_id: str | None,
        validate: Callable[[T], None] | None,
        key: str,
        deadline: float,
    ) -> T:
        s = self.settings
        m = self.metrics
        stage, model = cfg.stage, cfg.model
        base_messages = shape_messages(prompt.messages(input), cfg.system_role)
        messages = base_messages
        input_chars = len(prompt.user(input))
        # The prompt's own model gets the schema narrowed for this input (exact counts, the
        # ids to echo); another model asked through the prompt gets its plain schema.
        narrowed = None
        if cfg.structured in SCHEMA_MODES and output_model is prompt.output_model:
            narrowed = prompt.answer_schema(input)
        fmt = response_format(
            cfg.structured, stage, output_model, strict=s.structured_strict, schema=narrowed
        )
        max_tokens = cfg.max_tokens
        temperature = cfg.temperature
        frequency_penalty = 0.0
        cut_at = 0  # the max_tokens an answer was last cut off at
        failures = 0
        timeouts = 0
        malformed = 0
        calls = 0
        while True:
            est = estimate_tokens(messages, max_tokens)
            try:
                async with self.slots.hold(cfg, deadline):
                    grant = await self.limiter.acquire(cfg, est, job_id=job_id, deadline=deadline)
                    m.limiter_wait.labels(stage, model).observe(grant.waited_s)
                    calls += 1
                    # Sized when the call goes (slot and limiter waits are behind us), and
                    # longer after each timeout: the guess may have been too short. An
                    # answer cut off at max_tokens says the next one is at least as long.
                    guess = max(expected_output_tokens(input_chars, max_tokens), cut_at)
                    expected = guess * 2**timeouts
                    timeout = call_timeout(cfg, expected, deadline - time.monotonic())
                    body: dict[str, Any] = {
                        "model": model,
                        "messages": messages,
                        "temperature": temperature,
                        "max_tokens": max_tokens,
                    }
                    if fmt is not None:
                        body["response_format"] = fmt
                    if frequency_penalty:
                        body["frequency_penalty"] = frequency_penalty
                    text, finish = await self._attempt(cfg, prompt, body, est, timeout)
            except ProviderRetry as r:
                failures += 1
                timeouts += r.kind == "timeout"
                m.errors.labels(stage, model, r.kind).inc()
                if r.kind == "rate_limited":
                    await self.limiter.penalize(cfg, r.retry_after or 1.0)
                delay = backoff_delay(
                    failures,
                    base_s=s.backoff_base_s,
                    cap_s=s.backoff_max_s,
                    retry_after_s=r.retry_after,
                    rng=self._rng,
                )
                if failures >= s.max_attempts or time.monotonic() + delay >= deadline:
                    raise _give_up(r, stage, calls) from r.cause
                m.retries.labels(stage, model, r.kind).inc()
                log.info("llm %s: %s on attempt %d, retrying in %.2fs", stage, r.kind, calls, delay)
                await asyncio.sleep(delay)
                continue

            truncated = finish == "length"
            try:
                result, repaired = validate_reply(text, output_model, validate)
                if truncated and malformed + 1 < s.malformed_attempts:
                    raise ValueError("the answer was cut off at max_tokens")
            except ValueError as exc:
                malformed += 1
                loop = repeating_tail(text) if truncated else None
                kind = "looped" if loop else "truncated" if truncated else "malformed"
                m.errors.labels(stage, model, kind).inc()
                reason = describe_error(exc, s.correction_max_chars)
                if malformed >= s.malformed_attempts:
                    log.warning("llm %s: answer still %s after %d calls", stage, kind, calls)
                    raise LLMMalformedOutput(
                        f"{stage}: {kind} answer after {malformed} tries: "
                        f"{reason.splitlines()[0][:200]}",
                        stage=stage,
                        attempts=calls,
                        raw=text or "",
                        reason=reason,
                    ) from exc
                if time.monotonic() >= deadline:
                    raise LLMTimeout(
                        f"{stage}: deadline passed", stage=stage, attempts=calls
                    ) from exc
                m.retries.labels(stage, model, kind).inc()
                if truncated and loop is None:
                    cut_at = max_tokens
                    max_tokens = min(max_tokens * 2, cfg.max_tokens * _MAX_TOKENS_GROWTH)
                    messages = base_messages
                else:
                    # A retry must differ from the call it corrects: at temperature 0 the
                    # same request gets the same answer, byte for byte. An answer that
                    # looped until it was cut off would only loop longer with more tokens:
                    # it is corrected, and repeating is penalised from now on.
                    temperature = hotter(
                        temperature, s.retry_temperature_step, s.retry_temperature_max
                    )
                    hint: str | None
                    if loop is not None:
                        frequency_penalty = s.loop_frequency_penalty
                        hint = LOOP_HINT.format(unit=loop.strip()[:80])
                    else:
                        hint = echo_hint(text, input)
                    correction = CORRECTION.format(
                        retry=malformed, error=reason, hint=f"{hint}\n" if hint else ""
                    )
                    # a loop is shown shortened: its repeats teach nothing
                    shown = (text or "")[: 1000 if loop is not None else 4000]
                    messages = [
                        *base_messages,
                        {"role": "assistant", "content": shown},
                        {"role": "user", "content": correction},
                    ]
                continue
            if repaired:
                m.repairs.labels(stage, model).inc()
            if s.cache_ttl_s > 0:
                await self.cache.set(key, result.model_dump_json())
            return result

    async def _attempt(
        self,
        cfg: StageConfig,
        prompt: PromptTemplate,
        body: dict[str, Any],
        estimate: int,
        timeout: float,
    ) -> tuple[str | None, str | None]:
        """One provider call: (content, finish_reason), or `ProviderRetry` / a final error.

        On timeout or cancellation the request's task is cancelled inside httpx, which
        closes the connection instead of returning it to the pool: the server sees the
        client go away (tests/integration/test_llm_concurrency.py checks that it does).
        """
        m = self.metrics
        stage, model = cfg.stage, cfg.model
        t0 = time.monotonic()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                # The SDK's generic POST: same client, auth, timeouts and typed errors as
                # chat.completions.create, without its per-call parameter transformation
                # (about 1 ms of CPU per call) and with the headers we need at hand.
                response = await self._client(cfg).post(
                    "/chat/completions",
                    cast_to=httpx2.Response,
                    body=body,
                    options={
                        "headers": {STAGE_HEADER: stage, PROMPT_VERSION_HEADER: prompt.version},
                        "timeout": timeout + 1.0,
                    },
                )
                doc = orjson.loads(response.content)
                if not isinstance(doc, dict):
                    raise ValueError("chat completion is not a JSON object")
            outcome = "ok"
        except PROVIDER_ERRORS as exc:
            failure = provider_failure(exc, stage)
            outcome = call_outcome(failure)
            if outcome == REJECTED:
                m.errors.labels(stage, model, outcome).inc()
            raise failure from exc
        finally:
            m.calls.labels(stage, model, outcome).inc()
            m.latency.labels(stage, model).observe(time.monotonic() - t0)

        pause = parse_ratelimit_headers(response.headers).pause_s()
        if pause > 0:
            await self.limiter.hold(cfg, pause)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            tokens_in = _int(usage.get("prompt_tokens"))
            tokens_out = _int(usage.get("completion_tokens"))
            m.tokens.labels(stage, model, "in").inc(tokens_in)
            m.tokens.labels(stage, model, "out").inc(tokens_out)
            total = _int(usage.get("total_tokens")) or tokens_in + tokens_out
            await self.limiter.adjust(cfg, total - estimate)
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None, None
        choice = choices[0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content") if isinstance(message, dict) else None
        finish = choice.get("finish_reason")
        return (
            content if isinstance(content, str) else None,
            finish if isinstance(finish, str) else None,
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _give_up(r: ProviderRetry, stage: str, calls: int) -> LLMError:
    msg = f"{stage}: {r.kind} after {calls} calls: {str(r.cause)[:200]}"
    log.warning("llm %s: giving up after %d calls (%s)", stage, calls, r.kind)
    if r.kind == "timeout":
        return LLMTimeout(msg, stage=stage, attempts=calls)
    if r.kind == "rate_limited":
        return LLMRateLimited(msg, stage=stage, attempts=calls, retry_after=r.retry_after or 0.0)
    return LLMUnavailable(msg, stage=stage, attempts=calls)


def _consume(fut: asyncio.Future[BaseModel]) -> None:
    """Mark a shared future's exception as retrieved (followers may be none)."""
    if not fut.cancelled():
        with contextlib.suppress(BaseException):
            fut.exception()


def build_llm(
    settings: LLMSettings, redis: Redis | None, *, share_of: ShareOf | None = None
) -> LLM:
    """The wiring factory: an `LLM` with the shared limiter and cache on `redis`.

    `redis` may be None (tests, tools): then the limit is local and nothing is cached.
    `share_of` names a job's fairness share for the limiter (the stages pass
    `shared.db.tenants.JobTenants`, so the quota is divided among tenants).
    """
    return LLM(settings, redis, share_of=share_of)
