"""Request and response bodies of the API (the schema families of the OpenAPI document)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from shared import netguard

MAX_OPTIONS_BYTES = 16 * 1024
MAX_OPTIONS_DEPTH = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LANGUAGE_TAG = r"^[a-zA-Z]{2,3}([-_][a-zA-Z0-9]{2,8})*$"

_JOB_EXAMPLE: dict[str, Any] = {
    "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "product": "Aurora X2 wireless earbuds",
    "target_language": "en",
    "callback_url": "https://example.com/hooks/voc",
    "options": {},
    "status": "receiving",
    "stall": None,
    "created_at": "2026-11-23T14:05:00.123456Z",
    "sealed_at": None,
    "counts": {
        "submitted": 1000,
        "rejected": 3,
        "ingested": 990,
        "duplicates": 10,
        "learned": 990,
        "translated": 640,
        "insights": 400,
        "themed": 380,
        "dead_lettered": 0,
    },
    "stages": {
        "ingest": {"done": 990},
        "learn": {"done": 990},
        "translate": {"done": 640},
        "insight": {"done": 400},
        "theme": {"done": 380},
    },
    "progress": 0.5532,
}


def text_problem(value: str) -> str | None:
    """Why Postgres could not store this text, or None (NUL bytes and lone surrogates,
    which JSON's `\\u0000` and `\\ud800` escapes can carry, fail inside the driver)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates such as \\ud800)"
    return None


def json_problem(value: Any, depth: int = 1) -> str | None:
    """Why a JSON value could not be stored and served back, or None."""
    if depth > MAX_OPTIONS_DEPTH:
        return f"must not nest deeper than {MAX_OPTIONS_DEPTH} levels"
    if isinstance(value, str):
        return text_problem(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return "integers must fit in 64 bits (-2^63 .. 2^63-1)"
    if isinstance(value, float):
        # Postgres keeps JSON numbers as exact decimals: 1e62 comes back as a 63-digit
        # integer, which no longer fits in 64 bits either.
        if math.isfinite(value) and abs(value) < 2.0**63:
            return None
        return "numbers must be finite and within +-2^63 (not NaN, Infinity, 1e999)"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(str(key)) or json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"unsupported value of type {type(value).__name__}"


class JobCreate(BaseModel):
    """A new analysis job."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "product": "Aurora X2 wireless earbuds",
                    "target_language": "en",
                    "callback_url": "https://example.com/hooks/voc",
                    "options": {},
                }
            ]
        },
    )

    product: str = Field(min_length=1, max_length=500, description="the product reviewed")
    target_language: str = Field(
        max_length=16,
        pattern=LANGUAGE_TAG,
        description="BCP 47 language tag of the report, e.g. 'en', 'zh', 'pt-BR'",
    )
    callback_url: AnyHttpUrl | None = Field(
        default=None, description="http(s) URL POSTed to when the report is ready and final"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="analysis options")

    @field_validator("product")
    @classmethod
    def _product_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url_allowed(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # Scheme, host syntax, port allow-list and IP literals, refused now with the reason
        # rather than failing every delivery later (shared.netguard; DNS is checked then).
        if value is not None:
            netguard.check_url(str(value), netguard.policy_from_env())
        return value

    @field_validator("options")
    @classmethod
    def _options_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The document travels with the job: keep it small, and storable (Postgres JSONB
        # refuses NUL characters, orjson integers beyond 64 bits, JSON has no Infinity).
        problem = json_problem(value)
        if problem:
            raise ValueError(problem)
        if len(orjson.dumps(value)) > MAX_OPTIONS_BYTES:
            raise ValueError(f"must be at most {MAX_OPTIONS_BYTES} bytes as JSON")
        return value

    @field_validator("target_language")
    @classmethod
    def _canonical_tag(cls, value: str) -> str:
        return value.replace("_", "-")


class JobCounts(BaseModel):
    """Reviews per stage, counted from the stored rows (replays cannot inflate them)."""

    submitted: int = Field(description="rows accepted by the API (after in-upload dedup)")
    rejected: int = Field(description="rows the API rejected")
    ingested: int = Field(description="distinct reviews stored by ingest")
    duplicates: int = Field(description="rows ingest found already present in the job")
    learned: int = Field(description="reviews released by learn (the job's model exists)")
    translated: int
    insights: int = Field(description="reviews through insight extraction")
    themed: int = Field(description="reviews through theme assignment")
    dead_lettered: int = Field(description="reviews a stage gave up on (not redriven)")


class StageProgress(BaseModel):
    """How far one stage is."""

    done: int
    pending: int | None = Field(default=None, description="reviews the stage has still to do")
    eta_s: float | None = Field(
        default=None, description="seconds until the stage is done, null if not measured yet"
    )


class JobSummary(BaseModel):
    """A job in a listing (counts and progress only on the job itself)."""

    id: str
    product: str
    target_language: str
    status: str = Field(
        description="created | receiving | sealed | report_ready | completed | failed"
    )
    created_at: datetime
    sealed_at: datetime | None
    submitted: int
    rejected: int


class JobStall(BaseModel):
    """Why a job is stalled: none of its reviews finished for the stall timeout."""

    since: datetime = Field(description="when a review of the job last finished")
    reason: str = Field(description="what is still in progress, in words")


class JobPublic(BaseModel):
    """A job with its per-stage progress."""

    model_config = ConfigDict(json_schema_extra={"examples": [_JOB_EXAMPLE]})

    id: str
    product: str
    target_language: str
    callback_url: str | None
    options: dict[str, Any]
    status: str = Field(
        description="created | receiving | sealed | stalled | report_ready | completed | failed"
    )
    stall: JobStall | None = Field(
        default=None, description="set while the status is `stalled`, else null"
    )
    created_at: datetime
    sealed_at: datetime | None
    counts: JobCounts
    stages: dict[str, StageProgress]
    progress: float = Field(ge=0, le=1, description="weighted share of the work done")
    eta_s: float | None = Field(
        default=None, description="seconds until the job is done (slowest stage), null if unknown"
    )


class JobsPublic(BaseModel):
    """A page of the tenant's jobs, newest first."""

    data: list[JobSummary]
    count: int = Field(description="how many jobs the tenant has in total")
    next: str | None = Field(description="cursor of the next page, null on the last")


class UploadRejection(BaseModel):
    """A row that was not accepted, and why."""

    row: int = Field(description="1-based data row (CSV: after the header)")
    error: str = Field(description="'field: reason'")


class UploadPublic(BaseModel):
    """What became of an upload's rows."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upload_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                    "accepted": 998,
                    "duplicates": 1,
                    "rejected": [{"row": 17, "error": "rating: must be an integer 1-5, got '9'"}],
                    "rejected_count": 1,
                    "replayed": False,
                }
            ]
        }
    )

    upload_id: str
    accepted: int = Field(description="rows forwarded for analysis")
    duplicates: int = Field(description="rows repeating an earlier row of the same upload")
    rejected: list[UploadRejection] = Field(description="the first rejected rows")
    rejected_count: int = Field(description="all rejected rows (the list is capped)")
    replayed: bool = Field(
        default=False,
        description="true when an earlier upload with the same Idempotency-Key is answered "
        "(its rejected rows are then only counted)",
    )


class ErrorPublic(BaseModel):
    """Every error answer."""

    detail: Any = Field(examples=["job not found"])


class Retained(BaseModel):
    """Something a deletion cannot remove at once."""

    what: str
    until: str = Field(description="when it is gone at the latest")
    why: str


class JobDeleted(BaseModel):
    """The answer to a deletion: what went, and what stays for a while."""

    id: str
    status: str = Field(examples=["deleted"])
    deleted: dict[str, int] = Field(description="rows deleted per table")
    retained: list[Retained]
