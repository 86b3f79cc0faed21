"""The pure core of `learn`: when a job is ready, what to ask, what to store and emit.

A job's reviews are held back (`learn_pending` rows) until the job's analysis model
(dimensions + 5W) exists. `decide` says, from a job's pending summary, whether to wait, to
learn it now (enough reviews for a sample, the job sealed, or the first held batch older
than the timeout) or to release its held batches (the model exists). `plan_tick` turns the
pending jobs of one tick (tenants interleaved by the store) into what to do now: which
jobs to start learning (no more than the free learning slots, so a later tick can still
put another tenant's job first) and how many held batches of each job to release (the
tick's budget shared out, `share_budget`, so one big job cannot take it all). The rest
builds the LLM input from a sample, validates and converts the answer, and builds rows and
events. When the LLM cannot produce a usable model, `default_model` is a generic one, so
the job is analysed anyway instead of waiting forever.

No IO here: `services.learn.store` reads and writes Postgres, `services.learn.service`
calls the LLM and returns rows and events.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.events import Review, ReviewsLearned
from shared.prompts.learn import Dimension, FiveW, LearnOutput

FALLBACK_MODEL = "default"

# A generic frame that fits most consumer products: used when the LLM keeps failing.
DEFAULT_DIMENSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Quality", "How well the product is made and performs its job.", ("quality", "works")),
    ("Price/value", "Whether the product is worth what it costs.", ("price", "value", "cheap")),
    ("Delivery", "Shipping speed, packaging and the state it arrived in.", ("delivery", "arrived")),
    ("Customer service", "Support, returns and the seller's responses.", ("service", "return")),
    ("Usability", "How easy the product is to set up and use.", ("easy", "setup", "use")),
    ("Design", "Look, size, fit and materials.", ("design", "look", "size", "color")),
    ("Durability", "How long the product lasts before wearing out.", ("broke", "lasts")),
)


class Action(enum.Enum):
    """What the learn stage does with a job that has held batches."""

    WAIT = "wait"
    LEARN = "learn"
    RELEASE = "release"


@dataclass(frozen=True)
class LearnPolicy:
    """When a job is ready to learn."""

    sample_size: int = 200
    timeout_s: float = 10.0


@dataclass(frozen=True)
class PendingJob:
    """A job with held batches, as `learn_pending`, `jobs` and `job_models` describe it."""

    job_id: str
    tenant_id: str
    product: str
    target_language: str
    pending_batches: int
    pending_reviews: int
    age_s: float  # since its oldest held batch
    sealed: bool
    has_model: bool


@dataclass(frozen=True)
class SampleReview:
    """A review of the learning sample, as read from `reviews`."""

    id: str
    text: str
    rating: int | None


def decide(job: PendingJob, policy: LearnPolicy) -> Action:
    """Release when the model exists; learn once a sample is there, the job is sealed or
    its oldest held batch is older than the timeout; otherwise wait."""
    if job.has_model:
        return Action.RELEASE
    if job.pending_reviews >= policy.sample_size or job.sealed or job.age_s >= policy.timeout_s:
        return Action.LEARN
    return Action.WAIT


@dataclass
class TickPlan:
    """What one tick does: batches to release per job, and jobs to start learning."""

    releases: list[tuple[PendingJob, int]] = field(default_factory=list)  # (job, batches)
    learn: list[PendingJob] = field(default_factory=list)


def plan_tick(
    jobs: Sequence[PendingJob],
    policy: LearnPolicy,
    *,
    release_budget: int,
    learn_slots: int,
    skip: Collection[str] = (),
) -> TickPlan:
    """The tick's work for `jobs`, taken in the order given (the store interleaves tenants).

    At most `learn_slots` jobs start learning (those in `skip`, already being learned or
    backing off, are passed over); `release_budget` held batches are shared among the
    jobs to release (`share_budget`).
    """
    plan = TickPlan()
    release: list[PendingJob] = []
    for job in jobs:
        action = decide(job, policy)
        if action is Action.RELEASE:
            release.append(job)
        elif action is Action.LEARN and job.job_id not in skip and len(plan.learn) < learn_slots:
            plan.learn.append(job)
    shares = share_budget([j.pending_batches for j in release], release_budget)
    plan.releases = [(j, n) for j, n in zip(release, shares, strict=True) if n > 0]
    return plan


def share_budget(wants: Sequence[int], budget: int) -> list[int]:
    """Split `budget` among `wants` max-min fairly: everyone gets an equal share, what a
    small want leaves over goes to the others, and a remainder goes to the first ones.

    >>> share_budget([300, 1], 50)
    [49, 1]
    """
    shares = [0] * len(wants)
    left = budget
    active = [i for i, w in enumerate(wants) if w > 0]
    while left > 0 and active:
        each = max(1, left // len(active))
        for i in list(active):
            give = min(each, wants[i] - shares[i], left)
            shares[i] += give
            left -= give
            if shares[i] >= wants[i]:
                active.remove(i)
            if left == 0:
                break
    return shares


def learn_input(
    product: str,
    target_language: str,
    sample: Sequence[SampleReview],
    *,
    text_chars: int = 500,
    total_chars: int = 40_000,
) -> dict[str, Any]:
    """The learn prompt's input: the sample in the given (deterministic) order.

    Each text is cut to `text_chars` and the sample to `total_chars` in all, so a job of
    long reviews still fits one prompt; the same sample always gives the same input, so a
    replayed learn is answered from the LLM cache.
    """
    items: list[dict[str, Any]] = []
    used = 0
    for r in sample:
        text = r.text[:text_chars]
        if items and used + len(text) > total_chars:
            break
        items.append({"id": r.id, "text": text, "rating": r.rating})
        used += len(text)
    return {"product": product, "target_language": target_language, "sample": items}


def check_model(out: LearnOutput) -> None:
    """`validate` callback: every dimension has a visible name (the schema checks the rest)."""
    for d in out.dimensions:
        if not d.name.strip():
            raise ValueError("a dimension has a blank name")


def default_model() -> LearnOutput:
    """The generic model used when the LLM gave no usable one."""
    return LearnOutput(
        dimensions=[
            Dimension(name=name, description=desc, keywords=list(kw))
            for name, desc, kw in DEFAULT_DIMENSIONS
        ],
        five_w=FiveW(),
    )


def model_row(job_id: str, out: LearnOutput, sample_size: int, model: str) -> dict[str, Any]:
    """The `job_models` row of a learned (or default) model."""
    return {
        "job_id": job_id,
        "dimensions": [
            {
                "name": _clean(d.name).strip(),
                "description": _clean(d.description),
                "keywords": [_clean(k) for k in d.keywords],
            }
            for d in out.dimensions
        ],
        "five_w": {k: [_clean(v) for v in vs] for k, vs in out.five_w.model_dump().items()},
        "sample_size": sample_size,
        "model": model,
    }


def _clean(text: str) -> str:
    """Without NUL characters, which Postgres JSONB refuses (the insert would fail forever)."""
    return text.replace("\x00", "")


def batch_key(topic: str, partition: int, offset: int) -> str:
    """The `learn_pending.batch_key` of an input record: where it came from, so a replay
    of the same record rewrites the same row."""
    return f"{topic}:{partition}:{offset}"


def pending_row(job_id: str, key: str, reviews: Iterable[Review]) -> dict[str, Any]:
    """A `learn_pending` row holding one input event's reviews."""
    return {
        "job_id": job_id,
        "batch_key": key,
        "reviews": [r.model_dump(mode="json") for r in reviews],
    }


def learned_event(job_id: str, target_language: str, reviews: Sequence[Any]) -> ReviewsLearned:
    """The `reviews.learned` event of one held or passing batch (reviews as models or dicts)."""
    return ReviewsLearned(
        job_id=job_id,
        target_language=target_language,
        reviews=[r if isinstance(r, Review) else Review.model_validate(r) for r in reviews],
    )


def split_held(reviews: Any) -> tuple[list[Review], list[tuple[Any, str]]]:
    """A held batch as read back from `learn_pending.reviews`: the reviews that are valid,
    and the entries that are not (with the reason), which must not block the others."""
    if not isinstance(reviews, list):
        return [], [(reviews, f"held reviews are a {type(reviews).__name__}, not a list")]
    good: list[Review] = []
    bad: list[tuple[Any, str]] = []
    for entry in reviews:
        try:
            good.append(Review.model_validate(entry))
        except ValidationError as exc:
            bad.append((entry, str(exc).replace("\n", " ")[:500]))
    return good, bad
