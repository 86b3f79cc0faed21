"""The fake OpenAI-compatible server: a bare ASGI app served by uvicorn (uvloop, httptools).

Routes:
- `POST /v1/chat/completions`: the stage comes from `X-Voc-Stage` (or is guessed from the
  input), the input is the first user message that parses as a JSON object, the answer
  is `voc.fake_llm.answers`' for that stage. Returns `usage` and `x-ratelimit-*` headers.
- `POST /v1/embeddings`: deterministic vectors (`voc.fake_llm.embeddings`) in which the
  lexicon's multilingual synonyms lie close; float or base64 encoding, `dimensions`.
- `GET /v1/models`, `GET /health`
- `GET|POST /admin/config`: read or change the config on a running server (and
  `POST /stats/reset`): only with the admin token, or from loopback (`admin.py`)
- `GET /stats` (add `?arrivals=1` for the arrival times and those of the 429s, on the
  machine's monotonic clock), `POST /stats/reset`
- `GET /metrics`: Prometheus text

Order of decisions per request: server-side rate limit (429 with `Retry-After`,
`retry-after-ms` and `x-ratelimit-*`), then `response_format` (a `json_schema` that a
strict provider would refuse gets a 400), then a generation slot (with `slots` set, at
most that many requests generate at once and the rest queue, as in llama.cpp; a queued
request whose client left is skipped), then latency and per-token generation time, then
at most one injected fault (5xx, hang, malformed, truncated, fenced, missing item, bad
quote) - faults only for inputs containing `fault_match` when it is set - and the weak
model's ways (`echo_rate`, `stubborn_rate`, `loop_rate`, `max_items`).

The input is the first user message that is a JSON object, or the last paragraph of it
when the system text opens the user turn (`VOC_LLM_SYSTEM_ROLE=user`).

`/stats` counts the `response_format` modes requested, requests whose client went away
before the answer (`client_gone`: while queued or while generating), generations
finished for nobody (`wasted_generations`) and the peak of requests generating and queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import socket
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError

from voc.fake_llm.admin import ADMIN_PATHS, AdminGuard
from voc.fake_llm.answers import answer, drop_one_item, guess_stage, paraphrase_quotes
from voc.fake_llm.config import FakeConfig
from voc.fake_llm.embeddings import EmbeddingRequestError, embeddings_response

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FAULTS = (
    "server_error",
    "timeout",
    "malformed",
    "truncated",
    "fenced",
    "missing_item",
    "bad_quote",
)
_JSON = [(b"content-type", b"application/json")]
_ARRIVALS_MAX = 500_000
_STUCK_MAX = 100_000
# What OpenAI's strict structured outputs accept in a schema; anything else is refused.
STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "description",
        "title",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "pattern",
        "format",
        "$defs",
        "$ref",
    }
)
_SCHEMA_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class TokenBucket:
    """The fake provider's request limit: `rate`/s refill, `burst` deep."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def take(self) -> tuple[bool, float, float]:
        """(allowed, remaining tokens, seconds until one token is available)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, self.tokens, 0.0
        return False, self.tokens, (1 - self.tokens) / self.rate

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.burst - self.tokens) / self.rate


def _fmt_duration(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"


class Stats:
    """Counters behind `GET /stats`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero everything."""
        self.started = time.time()
        self.requests = 0
        self.ok = 0
        self.rate_limited = 0
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.by_stage: dict[str, dict[str, Any]] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.arrivals: deque[float] = deque(maxlen=_ARRIVALS_MAX)
        self.rate_limited_at: deque[float] = deque(maxlen=_ARRIVALS_MAX)
        # (arrival, stage) of the chat requests whose body named their stage
        self.stage_arrivals: deque[tuple[float, str]] = deque(maxlen=_ARRIVALS_MAX)
        self.response_formats: dict[str, int] = {}
        self.system_messages = 0
        self.schema_rejected = 0
        self.client_gone_queued = 0
        self.client_gone_generating = 0
        self.wasted_generations = 0
        self.active = 0
        self.queued = 0
        self.max_active = 0
        self.max_queued = 0
        self.stubborn = 0
        self.looped = 0
        self.echoed = 0
        self.too_many_items = 0
        # stubborn inputs -> the sampling (temperature, seed) of their first request
        self.stuck: dict[int, tuple[Any, Any]] = {}

    def stage(self, stage: str) -> dict[str, Any]:
        """The per-stage counters (created on first use)."""
        s = self.by_stage.get(stage)
        if s is None:
            s = {"requests": 0, "ok": 0, "rate_limited": 0, "faults": dict.fromkeys(FAULTS, 0)}
            self.by_stage[stage] = s
        return s

    def max_in_window(self, window_s: float = 1.0) -> int:
        """The most requests that arrived within any `window_s` (half-open) window."""
        times = list(self.arrivals)
        best = 0
        j = 0
        for i, t in enumerate(times):
            while times[j] <= t - window_s:
                j += 1
            best = max(best, i - j + 1)
        return best

    def snapshot(self, arrivals: bool = False) -> dict[str, Any]:
        """The JSON document of `GET /stats`."""
        doc: dict[str, Any] = {
            "requests": self.requests,
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "by_stage": self.by_stage,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "max_requests_in_1s": self.max_in_window(1.0),
            "uptime_s": round(time.time() - self.started, 3),
            "response_formats": dict(self.response_formats),
            "system_messages": self.system_messages,
            "schema_rejected": self.schema_rejected,
            "client_gone": self.client_gone_queued + self.client_gone_generating,
            "client_gone_queued": self.client_gone_queued,
            "client_gone_generating": self.client_gone_generating,
            "wasted_generations": self.wasted_generations,
            "active": self.active,
            "queued": self.queued,
            "max_active": self.max_active,
            "max_queued": self.max_queued,
            "weak": {
                "echoed": self.echoed,
                "stubborn": self.stubborn,
                "looped": self.looped,
                "too_many_items": self.too_many_items,
            },
        }
        if arrivals:
            doc["arrivals"] = list(self.arrivals)
            doc["rate_limited_at"] = list(self.rate_limited_at)
            doc["stage_arrivals"] = list(self.stage_arrivals)
        return doc


@dataclass(frozen=True)
class ChatRequest:
    """One parsed chat request: its body, messages, stage input and what it enforces."""

    body: dict[str, Any]
    messages: Any
    inp: dict[str, Any]
    user_text: str
    stage: str
    enforced: bool


class FakeLLMApp:
    """The ASGI application."""

    def __init__(self, config: FakeConfig, admin: AdminGuard | None = None) -> None:
        self.config = config
        self.admin = admin or AdminGuard.from_env()
        self.stats = Stats()
        self.rng = random.Random(config.seed)
        self.bucket: TokenBucket | None = None
        self._configure_bucket()
        self.slots: asyncio.Semaphore | None = None
        self._slots_n = 0
        self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "fake_llm_requests", "Chat requests", ("stage", "status"), registry=self.registry
        )
        self.m_faults = Counter(
            "fake_llm_faults", "Injected faults", ("stage", "kind"), registry=self.registry
        )
        self.m_latency = Histogram(
            "fake_llm_latency_seconds", "Response latency", registry=self.registry
        )

    def _configure_bucket(self) -> None:
        c = self.config
        self.bucket = TokenBucket(c.rate_limit_rps, c.burst) if c.rate_limit_rps > 0 else None
        # Providers limit each model separately: embeddings have a bucket of their own.
        self.embed_bucket = TokenBucket(c.rate_limit_rps, c.burst) if c.rate_limit_rps > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = await _read_body(receive)
        if path in ADMIN_PATHS and not self.admin.allows(scope):
            await _respond(send, 403, {"error": {"message": "admin routes need the admin token"}})
            return
        if path == "/v1/chat/completions" and method == "POST":
            await self.chat(scope, body, receive, send)
        elif path in ("/v1/embeddings", "/embeddings") and method == "POST":
            await self.embeddings(scope, body, send)
        elif path in ("/v1/models", "/models") and method == "GET":
            data = {
                "object": "list",
                "data": [
                    {
                        "id": self.config.model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vocstream",
                    }
                ],
            }
            await _respond(send, 200, data)
        elif path == "/health":
            await _respond(send, 200, {"status": "ok"})
        elif path == "/stats" and method == "GET":
            qs = parse_qs(scope.get("query_string", b"").decode())
            await _respond(send, 200, self.stats.snapshot(arrivals="arrivals" in qs))
        elif path == "/stats/reset" and method == "POST":
            self.stats.reset()
            await _respond(send, 200, {"status": "reset"})
        elif path == "/admin/config":
            if method == "POST":
                await self.admin_config(body, send)
            else:
                await _respond(send, 200, self.config.model_dump())
        elif path == "/metrics":
            await _send(
                send,
                200,
                generate_latest(self.registry),
                [(b"content-type", b"text/plain; version=0.0.4")],
            )
        else:
            await _respond(send, 404, {"error": {"message": f"no route {method} {path}"}})

    async def admin_config(self, body: bytes, send: Send) -> None:
        """Apply a partial config change."""
        try:
            patch = orjson.loads(body or b"{}")
            if not isinstance(patch, dict):
                raise ValueError("config patch must be a JSON object")
            new = self.config.updated(patch)
        except (ValueError, ValidationError) as exc:
            await _respond(send, 400, {"error": {"message": str(exc)}})
            return
        old = self.config
        self.config = new
        if (new.rate_limit_rps, new.burst) != (old.rate_limit_rps, old.burst):
            self._configure_bucket()
        if new.seed != old.seed:
            self.rng = random.Random(new.seed)
        log.info("fake llm: config changed: %s", patch)
        await _respond(send, 200, new.model_dump())

    def _ratelimit_headers(self, remaining: float) -> list[tuple[bytes, bytes]]:
        if self.bucket is None:
            return []
        b = self.bucket
        return [
            # as OpenAI: limit = bucket size, reset = time until it is full again
            (b"x-ratelimit-limit-requests", str(max(1, math.floor(b.burst))).encode()),
            (b"x-ratelimit-remaining-requests", str(max(0, math.floor(remaining))).encode()),
            (b"x-ratelimit-reset-requests", _fmt_duration(b.reset_s()).encode()),
        ]

    async def chat(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """`POST /v1/chat/completions`."""
        # Resolves when the client goes away (or once the response is complete).
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await self._chat(scope, body, gone, send)
        finally:
            gone.cancel()

    async def _chat(
        self, scope: Scope, body: bytes, gone: asyncio.Future[None], send: Send
    ) -> None:
        t0 = time.monotonic()
        st = self.stats
        st.requests += 1
        st.arrivals.append(t0)
        try:
            req = orjson.loads(body)
            messages = req["messages"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await _respond(send, 400, {"error": {"message": "invalid request body"}})
            return
        inp, user_text = _input_of(messages)
        stage = _header(scope, b"x-voc-stage") or guess_stage(inp) or "unknown"
        ss = st.stage(stage)
        ss["requests"] += 1
        st.stage_arrivals.append((t0, stage))
        if isinstance(messages, list) and any(
            isinstance(m, dict) and m.get("role") == "system" for m in messages
        ):
            st.system_messages += 1

        rl_headers: list[tuple[bytes, bytes]] = []
        if self.bucket is not None:
            allowed, remaining, wait = self.bucket.take()
            rl_headers = self._ratelimit_headers(remaining)
            if not allowed:
                st.rate_limited += 1
                st.rate_limited_at.append(t0)
                ss["rate_limited"] += 1
                self.m_requests.labels(stage, "429").inc()
                headers = [
                    *_JSON,
                    *rl_headers,
                    (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                    (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()),
                ]
                err = {
                    "error": {
                        "message": "Rate limit reached; retry later.",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                }
                await _send(send, 429, orjson.dumps(err), headers)
                return

        mode, problem = check_response_format(req.get("response_format"))
        st.response_formats[mode] = st.response_formats.get(mode, 0) + 1
        if problem is not None:
            st.schema_rejected += 1
            self.m_requests.labels(stage, "400").inc()
            err = {"error": {"message": problem, "type": "invalid_request_error"}}
            await _respond(send, 400, err)
            return
        chat = ChatRequest(
            req, messages, inp, user_text, stage, mode in ("json_schema", "json_object_schema")
        )

        # The answer is sent once its slot is free again: a client that gets it and sends
        # its next request at once must find the slot free, as with a real server.
        outbox: list[Message] = []

        async def later(message: Message) -> None:
            outbox.append(message)

        async with self._slot(gone) as admitted:
            if not admitted:
                return
            await self._generate(chat, gone, later, rl_headers)
        for message in outbox:
            await send(message)
        self.m_latency.observe(time.monotonic() - t0)

    @contextlib.asynccontextmanager
    async def _slot(self, gone: asyncio.Future[None]) -> AsyncIterator[bool]:
        """A generation slot (FIFO); yields False when the client left while queued."""
        c, st = self.config, self.stats
        if c.slots != self._slots_n:
            self.slots = asyncio.Semaphore(c.slots) if c.slots > 0 else None
            self._slots_n = c.slots
        sem = self.slots
        if sem is not None and not sem.locked():
            await sem.acquire()  # a free slot (and nobody waiting for one): no queue
        elif sem is not None:
            st.queued += 1
            st.max_queued = max(st.max_queued, st.queued)
            acquire: asyncio.Future[Any] = asyncio.ensure_future(sem.acquire())
            either: list[asyncio.Future[Any]] = [acquire, gone]
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                st.queued -= 1
            got = acquire.done() and not acquire.cancelled()
            if not got and not acquire.cancel():
                got = not acquire.cancelled()  # it completed as we cancelled it
            if gone.done():
                # As llama-cpp-python does: a request whose client left is skipped when its
                # turn comes (or now, as it waits).
                st.client_gone_queued += 1
                if got:
                    sem.release()
                yield False
                return
        st.active += 1
        st.max_active = max(st.max_active, st.active)
        try:
            yield True
        finally:
            st.active -= 1
            if sem is not None:
                sem.release()

    async def _generate(
        self,
        chat: ChatRequest,
        gone: asyncio.Future[None],
        send: Send,
        rl_headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Compute the answer, take the time a model would, and send it (if anyone waits)."""
        req, messages, inp, stage = chat.body, chat.messages, chat.inp, chat.stage
        user_text = chat.user_text
        c = self.config
        st = self.stats
        ss = st.stage(stage)
        latency_s = 0.0
        if c.latency_max_ms > 0:
            latency_s = self.rng.uniform(c.latency_min_ms, c.latency_max_ms) / 1000

        fault = self._pick_fault(stage, user_text)
        if fault:
            st.faults[fault] += 1
            ss["faults"][fault] += 1
            self.m_faults.labels(stage, fault).inc()
        if fault == "server_error":
            await asyncio.sleep(latency_s)
            status = 500 if self.rng.random() < 0.5 else 503
            self.m_requests.labels(stage, str(status)).inc()
            await _respond(
                send,
                status,
                {"error": {"message": "injected server error", "type": "server_error"}},
            )
            return
        if fault == "timeout":
            try:
                await asyncio.wait_for(asyncio.shield(gone), c.hang_s)
            except TimeoutError:
                await _respond(send, 504, {"error": {"message": "injected hang ended"}})
            else:
                st.client_gone_generating += 1
            return

        try:
            out = answer(stage, inp)
        except KeyError:
            out = {"error": f"unknown stage {stage!r}"}
        except (TypeError, ValueError, AttributeError) as exc:
            await _respond(send, 400, {"error": {"message": f"bad input for {stage}: {exc}"}})
            return
        seed = zlib.crc32(user_text.encode())
        if fault == "missing_item":
            out = drop_one_item(out, seed)
        elif fault == "bad_quote":
            out = paraphrase_quotes(out, str(inp.get("text") or ""))
        content = orjson.dumps(out).decode()
        finish = "stop"
        weak = self._weak_answer(chat, seed, content)
        if weak is not None:
            content = weak
        elif self._loops(chat, seed):
            self.stats.looped += 1
            content = _looping(content, int(chat.body.get("max_tokens") or 256))
            finish = "length"
        elif fault == "malformed":
            content = _malformed(content, seed)
        elif fault == "truncated":
            content = content[: max(1, int(len(content) * 0.6))]
            finish = "length"
        elif fault == "fenced":
            content = f"Here is the analysis you asked for:\n```json\n{content}\n```\nDone."

        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        completion_tokens = len(content) // 4 + 1
        work_s = latency_s + completion_tokens * c.token_latency_ms / 1000
        if work_s > 0:
            sleep = asyncio.ensure_future(asyncio.sleep(work_s))
            waits: set[asyncio.Future[Any]] = {sleep}
            if not c.finish_for_gone_clients:
                waits.add(gone)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            sleep.cancel()
        if gone.done():
            st.client_gone_generating += 1
            if c.finish_for_gone_clients:
                st.wasted_generations += 1
            return
        st.prompt_tokens += prompt_tokens
        st.completion_tokens += completion_tokens
        st.ok += 1
        ss["ok"] += 1
        self.m_requests.labels(stage, "200").inc()
        doc = {
            "id": f"chatcmpl-fake-{seed:08x}-{st.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(req.get("model") or c.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        await _send(send, 200, orjson.dumps(doc), [*_JSON, *rl_headers])

    async def embeddings(self, scope: Scope, body: bytes, send: Send) -> None:
        """`POST /v1/embeddings`: vectors from `voc.fake_llm.embeddings`, behind a rate
        limit like chat's (a bucket of its own: providers limit each model separately),
        the same latency and server-error faults (stage from `X-Voc-Stage`)."""
        t0 = time.monotonic()
        st = self.stats
        st.requests += 1  # (not in `arrivals`: those time the chat quota's bucket)
        stage = _header(scope, b"x-voc-stage") or "embed"
        ss = st.stage(stage)
        ss["requests"] += 1
        rl_headers: list[tuple[bytes, bytes]] = []
        if self.embed_bucket is not None:
            allowed, remaining, wait = self.embed_bucket.take()
            rl_headers = self._ratelimit_headers(remaining)
            if not allowed:
                st.rate_limited += 1
                ss["rate_limited"] += 1
                self.m_requests.labels(stage, "429").inc()
                retry = [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
                err = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
                await _send(send, 429, orjson.dumps(err), [*_JSON, *rl_headers, *retry])
                return
        c = self.config
        if c.latency_max_ms > 0:
            await asyncio.sleep(self.rng.uniform(c.latency_min_ms, c.latency_max_ms) / 1000)
        try:
            req = orjson.loads(body)
            doc = embeddings_response(req, c.model)
        except (orjson.JSONDecodeError, EmbeddingRequestError) as exc:
            await _respond(send, 400, {"error": {"message": str(exc)[:300]}})
            return
        texts = "\n".join(str(t) for t in (req.get("input") or []))
        if self._pick_fault(stage, texts) == "server_error":
            st.faults["server_error"] += 1
            ss["faults"]["server_error"] += 1
            self.m_faults.labels(stage, "server_error").inc()
            await _respond(send, 500, {"error": {"message": "injected server error"}})
            return
        st.prompt_tokens += doc["usage"]["prompt_tokens"]
        st.ok += 1
        ss["ok"] += 1
        self.m_requests.labels(stage, "200").inc()
        self.m_latency.observe(time.monotonic() - t0)
        await _send(send, 200, orjson.dumps(doc), [*_JSON, *rl_headers])

    def _weak_answer(self, chat: ChatRequest, seed: int, content: str) -> str | None:
        """A weak model's unusable answer, or None (see `FakeConfig`'s weak-model fields)."""
        c, st = self.config, self.stats
        inp, stage = chat.inp, chat.stage
        if c.max_items and stage == "translate" and len(inp.get("items") or ()) > c.max_items:
            st.too_many_items += 1
            return _malformed(orjson.dumps(inp).decode(), seed)
        if c.stubborn_rate > 0 and (seed % 10_000) < c.stubborn_rate * 10_000:
            sampling = (chat.body.get("temperature"), chat.body.get("seed"))
            first = st.stuck.setdefault(seed, sampling)
            if len(st.stuck) > _STUCK_MAX:
                st.stuck.clear()
            if first == sampling:
                st.stubborn += 1
                return _malformed(content, seed)
        if not chat.enforced and c.echo_rate > 0 and self.rng.random() < c.echo_rate:
            st.echoed += 1
            schema = _schema_in(chat.messages)
            return schema if schema is not None else orjson.dumps(inp).decode()
        return None

    def _loops(self, chat: ChatRequest, seed: int) -> bool:
        """Whether this answer loops (`loop_rate` of the inputs, by their seed), as a small
        model does under greedy sampling; a frequency penalty breaks the loop."""
        rate = self.config.loop_rate
        if rate <= 0 or float(chat.body.get("frequency_penalty") or 0) > 0:
            return False
        # not `seed % 10_000` as `stubborn_rate` picks: the two pick different inputs
        return (seed // 7 % 10_000) < rate * 10_000

    def _pick_fault(self, stage: str, user_text: str) -> str | None:
        c = self.config
        if c.fault_match is not None and c.fault_match not in user_text:
            return None
        if c.fault_stages is not None and stage not in c.fault_stages:
            return None
        rates = (
            ("server_error", c.error_rate),
            ("timeout", c.timeout_rate),
            ("malformed", c.malformed_rate),
            ("truncated", c.truncated_rate),
            ("fenced", c.fenced_rate),
            ("missing_item", c.missing_item_rate if stage == "translate" else 0.0),
            ("bad_quote", c.bad_quote_rate if stage == "insight" else 0.0),
        )
        for kind, rate in rates:
            if rate > 0 and self.rng.random() < rate:
                return kind
        return None


def _input_of(messages: Any) -> tuple[dict[str, Any], str]:
    """The stage input: the first user message that is a JSON object."""
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                text = m.get("content")
                if isinstance(text, list):  # content parts
                    text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
                if not isinstance(text, str):
                    continue
                for candidate in (text, text.rpartition("\n\n")[2]):
                    try:
                        value = orjson.loads(candidate)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        return value, candidate
    return {}, ""


def _schema_in(messages: Any) -> str | None:
    """The JSON schema the prompt shows (a line that is an object with "properties")."""
    for m in messages if isinstance(messages, list) else ():
        text = m.get("content") if isinstance(m, dict) else None
        for line in text.splitlines() if isinstance(text, str) else ():
            if '"properties"' not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                if isinstance(orjson.loads(line), dict):
                    return line
    return None


def check_response_format(fmt: Any) -> tuple[str, str | None]:
    """(mode, why it is refused or None), as a provider checks `response_format`.

    Modes: `none`, `text`, `json_object`, `json_object_schema` (llama-cpp-python's form),
    `json_schema`. A `json_schema` needs a valid name and an object schema; with `strict`
    every object must list all its properties as required, forbid additional ones and use
    only the keywords strict mode supports (OpenAI's rules).
    """
    if fmt is None:
        return "none", None
    if not isinstance(fmt, dict):
        return "invalid", "response_format must be an object"
    kind = fmt.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        if "schema" in fmt:
            ok = isinstance(fmt["schema"], dict)
            return "json_object_schema", None if ok else "response_format.schema: not an object"
        return "json_object", None
    if kind != "json_schema":
        return "invalid", f"response_format.type: invalid value {kind!r}"
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        return "json_schema", "response_format.json_schema.schema: missing"
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME_RE.match(name):
        return "json_schema", f"response_format.json_schema.name: invalid {name!r}"
    if spec.get("strict"):
        problem = _strict_problem(spec["schema"], "")
        if problem is not None:
            return "json_schema", f"Invalid schema for response_format {name!r}: {problem}"
    return "json_schema", None


def _strict_problem(node: Any, path: str) -> str | None:
    """The first violation of strict mode's rules in `node`, or None."""
    if not isinstance(node, dict):
        return None
    for key in node:
        if key not in STRICT_KEYWORDS:
            return f"{path or 'root'}: {key!r} is not permitted"
    if node.get("type") == "object":
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return f"{path or 'root'}: 'additionalProperties' must be false"
        if sorted(node.get("required") or []) != sorted(props):
            return f"{path or 'root'}: 'required' must list every property"
    children: list[tuple[str, Any]] = []
    children += [(f"{path}.{k}", v) for k, v in (node.get("properties") or {}).items()]
    children += [(f"{path}[]", node["items"])] if "items" in node else []
    children += [(path, v) for v in node.get("anyOf") or ()]
    children += [(f"$defs.{k}", v) for k, v in (node.get("$defs") or {}).items()]
    for child_path, child in children:
        problem = _strict_problem(child, child_path)
        if problem is not None:
            return problem
    return None


def _looping(content: str, max_tokens: int) -> str:
    """The start of `content` (into its first string value) and then one sentence over
    and over, cut at `max_tokens` (~4 characters each), as a looping model's answer."""
    start = content[: content.find('":"') + 3] if '":"' in content else content[:20]
    text = start + "It is a battery life indicator. " * (max_tokens // 4)
    return text[: max(len(start) + 1, max_tokens * 4)]


def _malformed(content: str, seed: int) -> str:
    """Unrepairable junk: prose, or JSON with its quotes broken."""
    if seed % 2:
        return "I'm sorry, I can't produce that analysis right now."
    return "{" + content[1:].replace('"', "'", 3).replace(":", " =", 2)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond(send: Send, status: int, doc: Any) -> None:
    await _send(send, status, orjson.dumps(doc), _JSON)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


async def serve(
    config: FakeConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the fake until cancelled or signalled; `on_ready(base_url)` once listening."""
    import uvicorn

    app = FakeLLMApp(config)
    sock = bind_socket(host, port)
    actual = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        backlog=4096,
    )
    server = uvicorn.Server(uv_config)
    url = f"http://{host}:{actual}"
    log.info("fake llm listening on %s (model %s)", url, config.model)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        if on_ready is not None:
            on_ready(url)

    task = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        task.cancel()
        sock.close()
