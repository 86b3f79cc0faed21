"""The learn core: readiness, the LLM input, the default model, rows and events."""

from __future__ import annotations

import pytest

from services.learn.core import (
    DEFAULT_DIMENSIONS,
    Action,
    LearnPolicy,
    PendingJob,
    SampleReview,
    batch_key,
    check_model,
    decide,
    default_model,
    learn_input,
    learned_event,
    model_row,
    pending_row,
    plan_tick,
    share_budget,
    split_held,
)
from shared.events import Review
from shared.prompts.learn import Dimension, FiveW, LearnOutput

POLICY = LearnPolicy(sample_size=200, timeout_s=10.0)


def _job(**kw: object) -> PendingJob:
    base: dict[str, object] = {
        "job_id": "job-1",
        "tenant_id": "tenant-a",
        "product": "Headphones",
        "target_language": "en",
        "pending_batches": 1,
        "pending_reviews": 10,
        "age_s": 1.0,
        "sealed": False,
        "has_model": False,
    }
    base.update(kw)
    return PendingJob(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "action"),
    [
        ({}, Action.WAIT),
        ({"pending_reviews": 199}, Action.WAIT),
        ({"pending_reviews": 200}, Action.LEARN),
        ({"sealed": True}, Action.LEARN),
        ({"age_s": 9.99}, Action.WAIT),
        ({"age_s": 10.0}, Action.LEARN),
        ({"has_model": True}, Action.RELEASE),
        ({"has_model": True, "sealed": True, "pending_reviews": 5000}, Action.RELEASE),
    ],
)
def test_decide(changes: dict[str, object], action: Action) -> None:
    assert decide(_job(**changes), POLICY) is action


def test_a_zero_timeout_learns_at_once() -> None:
    assert decide(_job(age_s=0.0), LearnPolicy(sample_size=200, timeout_s=0)) is Action.LEARN


def _sample(n: int, length: int = 40) -> list[SampleReview]:
    return [SampleReview(f"r{i:03d}", f"{i} " + "y" * length, i % 5 + 1) for i in range(n)]


def test_learn_input_has_the_contract_shape() -> None:
    payload = learn_input("Headphones", "en", _sample(3))
    assert payload["product"] == "Headphones"
    assert payload["target_language"] == "en"
    assert payload["sample"][0] == {"id": "r000", "text": "0 " + "y" * 40, "rating": 1}
    assert len(payload["sample"]) == 3


def test_learn_input_is_deterministic_for_the_same_sample() -> None:
    assert learn_input("P", "en", _sample(50)) == learn_input("P", "en", _sample(50))


def test_long_texts_are_cut_and_the_sample_bounded() -> None:
    payload = learn_input("P", "en", _sample(100, length=2000), text_chars=500, total_chars=10_000)
    assert all(len(s["text"]) == 500 for s in payload["sample"])
    assert len(payload["sample"]) == 20


def test_the_first_review_is_kept_even_if_it_alone_exceeds_the_budget() -> None:
    payload = learn_input("P", "en", _sample(3, length=5000), text_chars=5000, total_chars=1000)
    assert len(payload["sample"]) == 1


def test_default_model_is_a_valid_learn_answer() -> None:
    model = default_model()
    LearnOutput.model_validate(model.model_dump())  # 5..15 unique dimensions
    assert [d.name for d in model.dimensions] == [d[0] for d in DEFAULT_DIMENSIONS]
    assert {"Quality", "Price/value", "Delivery", "Customer service"} <= {
        d.name for d in model.dimensions
    }
    check_model(model)


def test_check_model_rejects_blank_dimension_names() -> None:
    dims = [Dimension(name=n) for n in ("a", "b", "c", "d", " ")]
    with pytest.raises(ValueError, match="blank"):
        check_model(LearnOutput(dimensions=dims, five_w=FiveW()))


def test_model_row() -> None:
    out = LearnOutput(
        dimensions=[
            Dimension(name=f" Dim {i} ", description=f"d{i}", keywords=[f"k{i}"]) for i in range(5)
        ],
        five_w=FiveW(who=["commuters"], why=["noise cancelling"]),
    )
    row = model_row("job-1", out, 120, "voc-fake-1")
    assert row["job_id"] == "job-1"
    assert row["sample_size"] == 120 and row["model"] == "voc-fake-1"
    assert row["dimensions"][0] == {"name": "Dim 0", "description": "d0", "keywords": ["k0"]}
    assert row["five_w"] == {
        "who": ["commuters"],
        "what": [],
        "when": [],
        "where": [],
        "why": ["noise cancelling"],
    }


def test_batch_key_names_the_input_record() -> None:
    assert batch_key("voc.reviews.ingested", 3, 1042) == "voc.reviews.ingested:3:1042"


def test_a_held_batch_round_trips_into_the_learned_event() -> None:
    reviews = [
        Review(id="r1", text="Good", rating=5, language="en"),
        Review(id="r2", text="Schlecht", rating=None, created_at="2024-01-02"),
    ]
    row = pending_row("job-1", "t:0:7", reviews)
    assert row["job_id"] == "job-1" and row["batch_key"] == "t:0:7"
    event = learned_event("job-1", "de", row["reviews"])  # as read back from JSONB
    assert event.job_id == "job-1" and event.target_language == "de"
    assert event.reviews == reviews
    assert learned_event("job-1", "de", reviews).reviews == reviews


def test_invalid_held_entries_are_split_from_the_valid_ones() -> None:
    good = {"id": "r1", "text": "Good", "rating": 5}
    reviews, bad = split_held([good, {"id": "r2"}, "junk", {**good, "id": "r3"}])
    assert [r.id for r in reviews] == ["r1", "r3"]
    assert [entry for entry, _ in bad] == [{"id": "r2"}, "junk"]
    assert "text" in bad[0][1]


def test_a_held_batch_that_is_not_a_list_is_one_bad_entry() -> None:
    reviews, bad = split_held({"oops": 1})
    assert reviews == [] and len(bad) == 1


def test_model_row_drops_nul_characters_jsonb_would_refuse() -> None:
    out = LearnOutput(
        dimensions=[
            Dimension(name=f"D\x00{i}", description="x\x00", keywords=["k\x00"]) for i in range(5)
        ],
        five_w=FiveW(who=["a\x00b"]),
    )
    row = model_row("job-1", out, 5, "m")
    assert row["dimensions"][0] == {"name": "D0", "description": "x", "keywords": ["k"]}
    assert row["five_w"]["who"] == ["ab"]


@pytest.mark.parametrize(
    ("wants", "budget", "shares"),
    [
        ([300, 1], 50, [49, 1]),
        ([1, 300], 50, [1, 49]),
        ([10, 10, 10], 9, [3, 3, 3]),
        ([10, 10, 10], 10, [4, 3, 3]),
        ([2, 100, 100], 50, [2, 24, 24]),
        ([5, 5], 100, [5, 5]),
        ([0, 7], 5, [0, 5]),
        ([3, 3, 3, 3], 2, [1, 1, 0, 0]),
        ([], 10, []),
    ],
)
def test_share_budget_is_max_min_fair(wants: list[int], budget: int, shares: list[int]) -> None:
    assert share_budget(wants, budget) == shares
    assert sum(shares) == min(budget, sum(wants))


def test_plan_tick_shares_releases_and_caps_learning_at_the_free_slots() -> None:
    jobs = [
        _job(job_id="a1", has_model=True, pending_batches=300),
        _job(job_id="b1", tenant_id="tenant-b", has_model=True, pending_batches=1),
        _job(job_id="a2", sealed=True),
        _job(job_id="b2", tenant_id="tenant-b", sealed=True),
        _job(job_id="a3", sealed=True),
        _job(job_id="a4"),  # waits: small, unsealed, young
    ]
    plan = plan_tick(jobs, POLICY, release_budget=50, learn_slots=2)
    assert [(j.job_id, n) for j, n in plan.releases] == [("a1", 49), ("b1", 1)]
    assert [j.job_id for j in plan.learn] == ["a2", "b2"]


def test_plan_tick_passes_over_jobs_being_learned_or_backing_off() -> None:
    jobs = [_job(job_id=f"j{i}", sealed=True) for i in range(4)]
    plan = plan_tick(jobs, POLICY, release_budget=10, learn_slots=2, skip={"j0", "j2"})
    assert [j.job_id for j in plan.learn] == ["j1", "j3"]
    assert not plan_tick(jobs, POLICY, release_budget=10, learn_slots=0).learn
