"""Text embeddings over any OpenAI-compatible `/embeddings` endpoint, under the LLM quota.

    embedder = build_embedder(llm)            # shares the LLM's limiter, cache and metrics
    vectors = await embedder.embed(["sound: the sound is great", ...], job_id=job_id)

One `embed()` call: truncate every input to `VOC_LLM_EMBED_MAX_CHARS`, de-duplicate
identical inputs, look each up in the LLM result cache (key: a hash of model, dimensions
and text, so a replay or a duplicate review costs nothing), then send the misses in
batches of `VOC_LLM_EMBED_BATCH` inputs per call, each call paced by the shared Redis
token bucket (`shared.llm.ratelimit`) like every chat call. Transport failures are
retried with backoff and jitter, honouring `Retry-After`; a 429 slows the shared limiter
down for everyone. Failures end in the typed errors of `shared.llm.errors`.

A vector comes back as the float32 values the provider sent (`array('f')`): the cache
stores exactly those bytes, so a cache hit and a fresh call give bit-identical vectors,
which the theme stage's deterministic clustering relies on. An embedding depends on its
own text only (never on the other inputs of its batch), so the cache needs no tenant in
its key: nobody can change another tenant's vector by what they upload.

Settings (environment, default in brackets); endpoint and key default to the theme
stage's LLM settings (`VOC_LLM_THEME_BASE_URL` / `VOC_LLM_BASE_URL` ...):

- `VOC_LLM_EMBED_MODEL` [voc-fake-embed-1]: e.g. text-embedding-3-small, text-embedding-v3
  (DashScope), nomic-embed-text (Ollama), BAAI/bge-m3 (vLLM)
- `VOC_LLM_EMBED_BASE_URL`, `VOC_LLM_EMBED_API_KEY`: a different endpoint for embeddings
- `VOC_LLM_EMBED_DIMENSIONS` [unset]: ask for shorter vectors (models that support it)
- `VOC_LLM_EMBED_BATCH` [64]: inputs per embeddings call
- `VOC_LLM_EMBED_MAX_CHARS` [2000]: inputs are cut to this many characters
- `VOC_LLM_EMBED_RPS`, `VOC_LLM_EMBED_TPM` [the theme stage's]: the embedding model's quota
  (a provider limits each model separately, so it has its own bucket in Redis)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import math
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx2
import orjson
from openai import AsyncOpenAI
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.llm.cache import ResultCache
from shared.llm.errors import (
    LLMError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
)
from shared.llm.metrics import LLMMetrics
from shared.llm.ratelimit import RateLimiter
from shared.llm.retry import (
    PROVIDER_ERRORS,
    REJECTED,
    ProviderRetry,
    backoff_delay,
    call_outcome,
    parse_ratelimit_headers,
    provider_failure,
)
from shared.llm.settings import LLMSettings, StageConfig

log = logging.getLogger(__name__)

STAGE = "embed"  # the `stage` label of the embedding calls' metrics and limiter bucket
STAGE_HEADER = "X-Voc-Stage"

Vector = array  # array('f'): the provider's float32 values
_BIG_ENDIAN = sys.byteorder == "big"  # the cache holds little-endian bytes everywhere


class EmbedSettings(BaseSettings):
    """Which model embeds, where, in what batches and under which quota."""

    model_config = SettingsConfigDict(env_prefix="VOC_LLM_EMBED_", extra="ignore")

    model: str = "voc-fake-embed-1"
    base_url: str | None = None
    api_key: SecretStr | None = None
    dimensions: int | None = Field(default=None, ge=1, le=16_384)
    batch: int = Field(default=64, ge=1, le=2048)
    max_chars: int = Field(default=2000, ge=16)
    rps: float | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, ge=0)

    def stage_config(self, llm: LLMSettings) -> StageConfig:
        """The embedding calls' resolved settings: the theme stage's, with ours on top."""
        base = llm.for_stage("theme")
        return dataclasses.replace(
            base,
            stage=STAGE,
            model=self.model,
            base_url=self.base_url or base.base_url,
            api_key=self.api_key or base.api_key,
            rps=self.rps if self.rps is not None else base.rps,
            tpm=self.tpm if self.tpm is not None else base.tpm,
        )


class EmbedsText(Protocol):
    """Port: what the theme stage needs from an embedding model."""

    async def embed(
        self, texts: Sequence[str], *, job_id: str | None = None, cache: bool = True
    ) -> list[Vector]:
        """One vector per text, in order (`cache=False`: ask the provider again)."""
        ...


def embed_cache_key(prefix: str, cfg: StageConfig, dimensions: int | None, text: str) -> str:
    """The Redis key of one text's vector: `<prefix>:cache:embed:<sha256>`."""
    h = hashlib.sha256()
    for part in (STAGE, cfg.model, str(dimensions or 0), text):
        h.update(part.encode())
        h.update(b"\x00")
    return f"{prefix}:cache:{STAGE}:{h.hexdigest()}"


def pack_vector(vector: Vector) -> str:
    """A vector as cache text: base64 of its float32 little-endian bytes."""
    v = array("f", vector)
    if _BIG_ENDIAN:
        v.byteswap()
    return base64.b64encode(v.tobytes()).decode()


def unpack_vector(text: str) -> Vector | None:
    """The vector `pack_vector` stored, or None if the text is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if not raw or len(raw) % 4:
        return None
    v = array("f")
    v.frombytes(raw)
    if _BIG_ENDIAN:
        v.byteswap()
    return v


def estimate_embed_tokens(texts: Sequence[str]) -> int:
    """An upper-ish token estimate of one call (about 3 characters per token)."""
    return sum(len(t) // 3 + 1 for t in texts)


class Embedder:
    """Batched, cached, rate-limited embeddings (see the module docstring)."""

    def __init__(
        self,
        settings: LLMSettings,
        embed: EmbedSettings,
        *,
        limiter: RateLimiter,
        cache: ResultCache,
        metrics: LLMMetrics,
        client_for: Callable[[StageConfig], AsyncOpenAI],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.embed_settings = embed
        self.cfg = embed.stage_config(settings)
        self.limiter = limiter
        self.cache = cache
        self.metrics = metrics
        self._client_for = client_for
        self._rng = rng or random.Random()

    async def embed(
        self, texts: Sequence[str], *, job_id: str | None = None, cache: bool = True
    ) -> list[Vector]:
        """One vector per text, in order (identical texts get one lookup and one vector;
        `cache=False`, a `--no-cache` replay, skips the lookup, the answers are still
        stored).

        Raises `LLMRequestRejected` (not retryable: the provider refused the input or the
        model) or `LLMUnavailable` / `LLMTimeout` / `LLMRateLimited` (retryable).
        """
        cfg = self.cfg
        start = time.monotonic()
        limit = self.embed_settings.max_chars
        cut = [t[:limit] if t.strip() else "-" for t in texts]  # an empty input is a 400
        unique = list(dict.fromkeys(cut))
        found: dict[str, Vector] = {}
        try:
            if cache:
                found = await self._lookup(unique)
            missing = [t for t in unique if t not in found]
            size = self.embed_settings.batch
            chunks = [missing[i : i + size] for i in range(0, len(missing), size)]
            answers = await asyncio.gather(*(self._fetch(c, job_id) for c in chunks))
            for chunk, vectors in zip(chunks, answers, strict=True):
                found.update(zip(chunk, vectors, strict=True))
            return [found[t] for t in cut]
        finally:
            self.metrics.complete_latency.labels(STAGE, cfg.model).observe(time.monotonic() - start)

    def _key(self, text: str) -> str:
        return embed_cache_key(
            self.settings.key_prefix, self.cfg, self.embed_settings.dimensions, text
        )

    async def _lookup(self, texts: Sequence[str]) -> dict[str, Vector]:
        raw = await asyncio.gather(*(self.cache.get(self._key(t)) for t in texts))
        found: dict[str, Vector] = {}
        for text, value in zip(texts, raw, strict=True):
            vector = unpack_vector(value) if value is not None else None
            if vector is not None:
                found[text] = vector
        hits = len(found)
        self.metrics.cache_hits.labels(STAGE, self.cfg.model).inc(hits)
        self.metrics.cache_misses.labels(STAGE, self.cfg.model).inc(len(texts) - hits)
        return found

    async def _fetch(self, texts: list[str], job_id: str | None) -> list[Vector]:
        """Embed one batch with retries, then store every vector in the cache."""
        vectors = await self._call(texts, job_id)
        if self.settings.cache_ttl_s > 0:
            await asyncio.gather(
                *(
                    self.cache.set(self._key(t), pack_vector(v))
                    for t, v in zip(texts, vectors, strict=True)
                )
            )
        return vectors

    async def _call(self, texts: list[str], job_id: str | None) -> list[Vector]:
        s = self.settings
        cfg = self.cfg
        m = self.metrics
        deadline = time.monotonic() + s.deadline_s
        estimate = estimate_embed_tokens(texts)
        failures = 0
        calls = 0
        while True:
            grant = await self.limiter.acquire(cfg, estimate, job_id=job_id, deadline=deadline)
            m.limiter_wait.labels(STAGE, cfg.model).observe(grant.waited_s)
            calls += 1
            try:
                return await self._attempt(texts, estimate, deadline)
            except ProviderRetry as r:
                failures += 1
                m.errors.labels(STAGE, cfg.model, r.kind).inc()
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
                    raise _give_up(r, calls) from r.cause
                m.retries.labels(STAGE, cfg.model, r.kind).inc()
                log.info("llm embed: %s on attempt %d, retrying in %.2fs", r.kind, calls, delay)
                await asyncio.sleep(delay)

    async def _attempt(self, texts: list[str], estimate: int, deadline: float) -> list[Vector]:
        """One provider call: the batch's vectors, or `ProviderRetry` / a final error."""
        cfg = self.cfg
        m = self.metrics
        timeout = max(0.05, min(cfg.timeout_s, deadline - time.monotonic()))
        body: dict[str, Any] = {"model": cfg.model, "input": texts, "encoding_format": "float"}
        if self.embed_settings.dimensions is not None:
            body["dimensions"] = self.embed_settings.dimensions
        t0 = time.monotonic()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                # The SDK's generic POST (same client, auth and typed errors as
                # embeddings.create) with the body decoded by orjson: the SDK's model
                # construction visits every float of every vector, which made it most of
                # theme's CPU.
                raw = await self._client_for(cfg).post(
                    "/embeddings",
                    cast_to=httpx2.Response,
                    body=body,
                    options={"headers": {STAGE_HEADER: STAGE}, "timeout": timeout + 1.0},
                )
                response = orjson.loads(raw.content)
            vectors = _vectors(response, len(texts))
            outcome = "ok"
        except PROVIDER_ERRORS as exc:
            failure = provider_failure(exc, STAGE)
            outcome = call_outcome(failure)
            if outcome == REJECTED:
                m.errors.labels(STAGE, cfg.model, outcome).inc()
            raise failure from exc
        finally:
            m.calls.labels(STAGE, cfg.model, outcome).inc()
            m.latency.labels(STAGE, cfg.model).observe(time.monotonic() - t0)

        pause = parse_ratelimit_headers(raw.headers).pause_s()
        if pause > 0:
            await self.limiter.hold(cfg, pause)
        usage = response.get("usage")
        tokens = 0
        if isinstance(usage, dict):
            tokens = _count(usage.get("total_tokens")) or _count(usage.get("prompt_tokens"))
        if tokens:
            m.tokens.labels(STAGE, cfg.model, "in").inc(tokens)
            await self.limiter.adjust(cfg, tokens - estimate)
        return vectors


def _count(value: Any) -> int:
    """A token count from the answer's `usage` (0 when it is not a non-negative int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _vectors(response: Any, expected: int) -> list[Vector]:
    """The answer's vectors in input order; ValueError if it does not fit the request."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(d, dict)
        and isinstance(d.get("index"), int)
        and isinstance(d.get("embedding"), list)
        for d in data
    ):
        raise ValueError("embeddings answer has no list of indexed vectors")
    data = sorted(data, key=lambda d: d["index"])
    if [d["index"] for d in data] != list(range(expected)):
        raise ValueError(f"embeddings answer has {len(data)} vectors for {expected} inputs")
    try:
        out = [array("f", d["embedding"]) for d in data]
    except TypeError as exc:  # a non-number inside a vector
        raise ValueError(f"embeddings answer has a vector that is not numbers: {exc}") from exc
    width = len(out[0]) if out else 0
    if not width or any(len(v) != width for v in out):
        raise ValueError("embeddings answer has empty or unequal vectors")
    # a value beyond float32 became inf, and inf or NaN would poison every centroid it
    # joins; the sum of a vector is finite exactly when all of its values are (float32)
    if not all(math.isfinite(sum(v)) for v in out):
        raise ValueError("embeddings answer has a vector with an infinite or NaN value")
    return out


def _give_up(r: ProviderRetry, calls: int) -> LLMError:
    msg = f"embed: {r.kind} after {calls} calls: {str(r.cause)[:200]}"
    log.warning("llm embed: giving up after %d calls (%s)", calls, r.kind)
    if r.kind == "timeout":
        return LLMTimeout(msg, stage=STAGE, attempts=calls)
    if r.kind == "rate_limited":
        return LLMRateLimited(msg, stage=STAGE, attempts=calls, retry_after=r.retry_after or 0.0)
    return LLMUnavailable(msg, stage=STAGE, attempts=calls)


class _LLMParts(Protocol):
    """What `build_embedder` takes from an `LLM`: its settings, limiter, cache, metrics
    and OpenAI clients."""

    settings: LLMSettings
    limiter: RateLimiter
    cache: ResultCache
    metrics: LLMMetrics

    def openai_client(self, cfg: StageConfig) -> AsyncOpenAI:
        """The SDK client of an endpoint (shared connection pool)."""
        ...


def build_embedder(llm: _LLMParts, embed: EmbedSettings | None = None) -> Embedder:
    """The wiring factory: an `Embedder` sharing `llm`'s limiter, cache, metrics and
    HTTP clients (so `llm.aclose()` closes its connections too)."""
    return Embedder(
        llm.settings,
        embed or EmbedSettings(),
        limiter=llm.limiter,
        cache=llm.cache,
        metrics=llm.metrics,
        client_for=llm.openai_client,
    )
