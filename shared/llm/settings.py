"""LLM settings: which endpoint each stage talks to, and the shared quota.

Every value comes from the environment with the `VOC_LLM_` prefix (default in brackets):

- `VOC_LLM_BASE_URL` [http://127.0.0.1:18080/v1]: any OpenAI-compatible endpoint
- `VOC_LLM_API_KEY` [sk-local]: bearer key, a secret, never logged
- `VOC_LLM_MODEL` [voc-fake-1], `VOC_LLM_TEMPERATURE` [0.0], `VOC_LLM_MAX_TOKENS` [2048]
- `VOC_LLM_TIMEOUT_S` [30]: hard timeout of one provider call
- `VOC_LLM_DEADLINE_S` [150]: bound on one `complete()` incl. limiter waits and retries
  (well under Kafka's max poll interval of 300 s)
- `VOC_LLM_RPS` [200]: shared requests/second of a provider+model key
- `VOC_LLM_RPS_BURST` [1]: requests allowed back to back (1 = evenly paced)
- `VOC_LLM_TPM` [0 = unlimited]: shared tokens/minute; `VOC_LLM_TPM_BURST_S` [6]: token
  bucket depth in seconds of TPM
- `VOC_LLM_MAX_ATTEMPTS` [5]: provider calls while they fail with 429/5xx/timeouts
- `VOC_LLM_MALFORMED_ATTEMPTS` [3]: calls while the answer is malformed or rejected
- `VOC_LLM_BACKOFF_BASE_S` [0.5], `VOC_LLM_BACKOFF_MAX_S` [20]: backoff, full jitter
- `VOC_LLM_STRUCTURED` [json_schema]: how the answer's shape is asked for -
  `json_schema`: `response_format={"type": "json_schema", "json_schema": {...}}` with the
  schema derived from the stage's output model, enforced by the server (OpenAI, vLLM,
  llama.cpp's llama-server, Ollama); `json_object_schema`: `{"type": "json_object",
  "schema": {...}}`, the same enforcement in the form llama-cpp-python's server and
  Anyscale-style servers take; `json_object`: JSON mode, schema only in the prompt;
  `off`: no `response_format` (the schema is in the prompt, repair does the rest)
- `VOC_LLM_STRUCTURED_STRICT` [true]: `strict` of a `json_schema` request
- `VOC_LLM_SYSTEM_ROLE` [system]: `user` sends the system text at the top of the first
  user turn instead of as a system message (Gemma's own template does that; llama.cpp's
  `gemma` chat format drops system messages)
- `VOC_LLM_MAX_CONCURRENCY` [0 = unlimited]: calls in flight at once per provider+model,
  shared by every replica through Redis (`shared.llm.concurrency`): self-hosted servers
  are bounded by concurrency, not by requests per second
- `VOC_LLM_CONCURRENCY_LEASE_S` [15]: a slot's lease; holders renew it every third of
  that while their call runs, so a killed holder's slot comes back within one lease
- `VOC_LLM_CONCURRENCY_POLL_S` [0.25]: how often a caller waiting for a slot asks Redis
  again at most (a slot freed in the same process wakes its waiters at once)
- `VOC_LLM_TIMEOUT_BASE_S` [10], `VOC_LLM_DECODE_TPS` [20]: the per-call timeout is
  `base + expected output tokens / decode rate` (base covers connection and prompt
  processing), at most `VOC_LLM_TIMEOUT_S` and never past the deadline;
  `VOC_LLM_DECODE_TPS=0` uses `VOC_LLM_TIMEOUT_S` alone
- `VOC_LLM_RETRY_TEMPERATURE_STEP` [0.3], `VOC_LLM_RETRY_TEMPERATURE_MAX` [1.0]: each
  corrective retry after a malformed answer samples this much hotter (up to the max),
  so a retry at temperature 0 cannot repeat the same answer byte for byte
- `VOC_LLM_CORRECTION_MAX_CHARS` [1500]: how much of the validation errors a corrective
  retry quotes back to the model
- `VOC_LLM_LIMITER_HORIZON_S` [2]: how far ahead reservations may reach; this queue is
  shared among the active fairness shares (a job's tenant, or the job), equally unless
  one is heavy
- `VOC_LLM_LIMITER_FREE_CALLS` [2000], `VOC_LLM_LIMITER_USAGE_HALF_LIFE_S` [60],
  `VOC_LLM_LIMITER_HEAVY_WEIGHT` [0.2]: a share whose calls, decayed with that half-life,
  exceed the free calls is heavy and weighs this much beside a light one, so a tenant's
  small job goes nearly at full speed beside another tenant's huge one (1 = equal shares)
- `VOC_LLM_LIMITER_BORROW_S` [0.5]: a share over its part may still reserve while less
  than this much of the schedule is queued: the parts divide the rate only among shares
  that use it (0 = strict parts)
- `VOC_LLM_LIMITER_ACTIVE_WINDOW_S` [5]: a job counts as active this long after a call
- `VOC_LLM_LIMITER_MAX_LATE_S` [0.1]: a caller woken later than this after its slot queues
  again instead of sending in a bunch (0 = off)
- `VOC_LLM_FALLBACK_FRACTION` [0.25]: per-process local limit while Redis is down, as a
  fraction of RPS/TPM
- `VOC_LLM_PENALTY_FACTOR` [0.75]: a provider 429 multiplies the shared rate by this for
  its Retry-After window; `VOC_LLM_PENALTY_MIN_FACTOR` [0.25]: the floor of repeated ones
- `VOC_LLM_REDIS_TIMEOUT_S` [2]: limiter and cache Redis operation timeout
- `VOC_LLM_REDIS_MAX_CONCURRENCY` [16]: concurrent Redis calls of one process's LLM layer
  (the rest queue in-process instead of exhausting the Redis connection pool)
- `VOC_LLM_CACHE_TTL_S` [604800 = 7 days]: result cache lifetime
- `VOC_LLM_KEY_PREFIX` [vocllm]: Redis key prefix

Per-stage overrides: `VOC_LLM_<STAGE>_<FIELD>` for STAGE in LEARN, TRANSLATE, INSIGHT,
THEME, REPORT and FIELD in BASE_URL, API_KEY, MODEL, TEMPERATURE, MAX_TOKENS, TIMEOUT_S,
RPS, TPM, MAX_CONCURRENCY, STRUCTURED, SYSTEM_ROLE, TIMEOUT_BASE_S, DECODE_TPS - e.g.
`VOC_LLM_TRANSLATE_MODEL=qwen-mt-turbo`. The quota (RPS/TPM) and the concurrency cap
belong to a provider + model pair: stages that share a model share one bucket and one
set of slots, so give them the same RPS/TPM/MAX_CONCURRENCY. Use
`LLMSettings.for_stage(stage)` to get the resolved values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STAGES = ("learn", "translate", "insight", "theme", "report")
Structured = Literal["json_schema", "json_object_schema", "json_object", "off"]
SystemRole = Literal["system", "user"]
_OVERRIDE_FIELDS = (
    "base_url",
    "api_key",
    "model",
    "temperature",
    "max_tokens",
    "timeout_s",
    "rps",
    "tpm",
    "max_concurrency",
    "structured",
    "system_role",
    "timeout_base_s",
    "decode_tps",
)
_OVERRIDE_RE = re.compile(
    r"^VOC_LLM_("
    + "|".join(s.upper() for s in STAGES)
    + r")_("
    + "|".join(f.upper() for f in _OVERRIDE_FIELDS)
    + r")$"
)


class StageOverride(BaseModel):
    """Values one stage sets differently from the global LLM settings (None = inherit)."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    rps: float | None = None
    tpm: int | None = None
    max_concurrency: int | None = Field(default=None, ge=0)
    structured: Structured | None = None
    system_role: SystemRole | None = None
    timeout_base_s: float | None = Field(default=None, gt=0)
    decode_tps: float | None = Field(default=None, ge=0)


def overrides_from_env(environ: dict[str, str] | None = None) -> dict[str, StageOverride]:
    """Collect `VOC_LLM_<STAGE>_<FIELD>` variables into per-stage overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        m = _OVERRIDE_RE.match(name)
        if m:
            raw.setdefault(m.group(1).lower(), {})[m.group(2).lower()] = value
    return {stage: StageOverride.model_validate(values) for stage, values in raw.items()}


@dataclass(frozen=True)
class StageConfig:
    """The resolved LLM settings of one stage (global values with its overrides)."""

    stage: str
    base_url: str
    api_key: SecretStr
    model: str
    temperature: float
    max_tokens: int
    timeout_s: float
    rps: float
    tpm: int
    max_concurrency: int = 0
    structured: Structured = "json_schema"
    system_role: SystemRole = "system"
    timeout_base_s: float = 10.0
    decode_tps: float = 20.0

    @property
    def limit_key(self) -> str:
        """The quota key: one bucket per provider host and model."""
        host = urlsplit(self.base_url).netloc or self.base_url
        return f"{host}|{self.model}"


class LLMSettings(BaseSettings):
    """How the LLM layer reaches the provider, paces calls, retries and caches."""

    model_config = SettingsConfigDict(env_prefix="VOC_LLM_", extra="ignore")

    base_url: str = "http://127.0.0.1:18080/v1"
    api_key: SecretStr = SecretStr("sk-local")
    model: str = "voc-fake-1"
    temperature: float = 0.0
    max_tokens: int = Field(default=2048, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    deadline_s: float = Field(default=150.0, gt=0)
    rps: float = Field(default=200.0, gt=0)
    rps_burst: int = Field(default=1, ge=1)
    tpm: int = Field(default=0, ge=0)
    tpm_burst_s: float = Field(default=6.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    malformed_attempts: int = Field(default=3, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=20.0, ge=0)
    structured: Structured = "json_schema"
    structured_strict: bool = True
    system_role: SystemRole = "system"
    max_concurrency: int = Field(default=0, ge=0)
    concurrency_lease_s: float = Field(default=15.0, gt=0)
    concurrency_poll_s: float = Field(default=0.25, gt=0)
    timeout_base_s: float = Field(default=10.0, gt=0)
    decode_tps: float = Field(default=20.0, ge=0)
    retry_temperature_step: float = Field(default=0.3, ge=0)
    retry_temperature_max: float = Field(default=1.0, ge=0)
    correction_max_chars: int = Field(default=1500, ge=100)
    # frequency_penalty of the retries after an answer that looped until max_tokens
    loop_frequency_penalty: float = Field(default=0.5, ge=0, le=2)
    limiter_horizon_s: float = Field(default=2.0, gt=0)
    limiter_active_window_s: float = Field(default=5.0, gt=0)
    limiter_free_calls: float = Field(default=2000.0, ge=0)
    limiter_usage_half_life_s: float = Field(default=60.0, gt=0)
    limiter_heavy_weight: float = Field(default=0.2, gt=0, le=1)
    limiter_borrow_s: float = Field(default=0.5, ge=0)
    limiter_max_late_s: float = Field(default=0.1, ge=0)
    fallback_fraction: float = Field(default=0.25, gt=0, le=1)
    penalty_factor: float = Field(default=0.75, gt=0, le=1)
    penalty_min_factor: float = Field(default=0.25, gt=0, le=1)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    redis_max_concurrency: int = Field(default=16, ge=1)
    cache_ttl_s: int = Field(default=7 * 86400, gt=0)
    key_prefix: str = "vocllm"
    stages: dict[str, StageOverride] = Field(default_factory=overrides_from_env)

    def for_stage(self, stage: str) -> StageConfig:
        """The settings `stage` runs with: its overrides on top of the global values."""
        o = self.stages.get(stage, StageOverride())
        return StageConfig(
            stage=stage,
            base_url=self.base_url if o.base_url is None else o.base_url,
            api_key=self.api_key if o.api_key is None else o.api_key,
            model=self.model if o.model is None else o.model,
            temperature=self.temperature if o.temperature is None else o.temperature,
            max_tokens=self.max_tokens if o.max_tokens is None else o.max_tokens,
            timeout_s=self.timeout_s if o.timeout_s is None else o.timeout_s,
            rps=self.rps if o.rps is None else o.rps,
            tpm=self.tpm if o.tpm is None else o.tpm,
            max_concurrency=(
                self.max_concurrency if o.max_concurrency is None else o.max_concurrency
            ),
            structured=self.structured if o.structured is None else o.structured,
            system_role=self.system_role if o.system_role is None else o.system_role,
            timeout_base_s=self.timeout_base_s if o.timeout_base_s is None else o.timeout_base_s,
            decode_tps=self.decode_tps if o.decode_tps is None else o.decode_tps,
        )
