"""Pure parts of the LLM layer's real-model support (issue 15): derived response schemas,
structured-output modes, corrective messages, timeout sizing, Gemma's system turn, and
the new per-stage settings. No IO."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from shared.llm.client import (
    call_timeout,
    expected_output_tokens,
    hotter,
    shape_messages,
)
from shared.llm.concurrency import fallback_slots
from shared.llm.repair import describe_error, echo_hint
from shared.llm.schema import (
    KEPT,
    UnsupportedSchema,
    response_format,
    response_schema,
    schema_name,
)
from shared.llm.settings import LLMSettings, overrides_from_env
from shared.prompts import PROMPTS, learn
from voc.fake_llm.server import check_response_format


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [n for v in node for n in _walk(v)]
    if not isinstance(node, dict):
        return []
    found = [node]
    for v in node.values():
        found += _walk(v)
    return found


@pytest.mark.parametrize("stage", sorted(PROMPTS))
def test_every_stage_schema_is_portable_and_strict(stage: str) -> None:
    schema = response_schema(PROMPTS[stage].output_model)
    nodes = [n for n in _walk(schema) if "type" in n or "anyOf" in n]
    assert schema["type"] == "object"
    for node in nodes:
        assert set(node) <= KEPT, node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
    assert "$ref" not in str(schema) and "$defs" not in str(schema)
    mode, problem = check_response_format(
        response_format("json_schema", stage, PROMPTS[stage].output_model)
    )
    assert (mode, problem) == ("json_schema", None)


NARROWED: dict[str, dict[str, Any]] = {
    "learn": {},
    "report": {},
    "theme": {"clusters": [{"key": "c1"}, {"key": "c2"}]},
    "translate": {"items": [{"id": "r1"}, {"id": "r2"}, {"id": "r3"}]},
    "insight": {
        "text": "Great fit. " * 30,
        "dimensions": [{"name": "Battery life"}, {"name": "Fit"}],
    },
}


@pytest.mark.parametrize("stage", sorted(NARROWED))
def test_a_narrowed_schema_is_still_portable(stage: str) -> None:
    prompt = PROMPTS[stage]
    schema = prompt.answer_schema(NARROWED[stage])
    # narrowed on a copy: the model's own schema (derived once, cached) is unchanged
    assert schema != response_schema(prompt.output_model)
    for node in _walk(schema):
        if "type" in node:
            assert set(node) <= KEPT, node
    fmt = response_format("json_schema", stage, prompt.output_model, schema=schema)
    assert check_response_format(fmt) == ("json_schema", None)


def test_each_stage_narrows_to_its_input() -> None:
    theme = PROMPTS["theme"].answer_schema(NARROWED["theme"])["properties"]["themes"]
    assert (theme["minItems"], theme["maxItems"]) == (2, 2)
    assert theme["items"]["properties"]["key"]["enum"] == ["c1", "c2"]
    items = PROMPTS["translate"].answer_schema(NARROWED["translate"])["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (3, 3)
    assert items["items"]["properties"]["id"]["enum"] == ["r1", "r2", "r3"]
    insight = PROMPTS["insight"].answer_schema(NARROWED["insight"])
    dimension = insight["properties"]["insights"]["items"]["properties"]["dimension"]
    assert dimension["enum"] == ["Battery life", "Fit", "other"]
    assert insight["properties"]["insights"]["maxItems"] == 2 + 330 // 50
    long = PROMPTS["insight"].answer_schema({"text": "x" * 10_000, "dimensions": []})
    assert long["properties"]["insights"]["maxItems"] == 20
    learned = PROMPTS["learn"].answer_schema({})
    assert learned["properties"]["dimensions"]["items"]["properties"]["keywords"]["maxItems"] == 12
    assert learned["properties"]["five_w"]["properties"]["why"]["maxItems"] == 6
    report = PROMPTS["report"].answer_schema({})
    assert report["properties"]["recommended_actions"]["maxItems"] == 6


def test_the_schema_keeps_structure_and_drops_what_servers_refuse() -> None:
    schema = response_schema(learn.LearnOutput)
    dims = schema["properties"]["dimensions"]
    assert (dims["minItems"], dims["maxItems"]) == (5, 15)
    name = dims["items"]["properties"]["name"]
    assert name == {"type": "string"}  # minLength/maxLength/title dropped
    # pydantic validates the full model afterwards: the length limit still holds
    with pytest.raises(ValidationError):
        learn.Dimension(name="")


def test_optional_fields_stay_nullable_and_required() -> None:
    class Item(BaseModel):
        who: str | None = None
        score: float = Field(default=0.0, ge=-1, le=1)

    class Out(BaseModel):
        items: list[Item]

    item = response_schema(Out)["properties"]["items"]["items"]
    assert item["required"] == ["who", "score"]
    assert item["properties"]["who"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert item["properties"]["score"] == {"type": "number"}


def test_free_form_objects_cannot_be_enforced() -> None:
    class Loose(BaseModel):
        data: dict[str, Any]

    with pytest.raises(UnsupportedSchema):
        response_schema(Loose)


def test_response_format_modes() -> None:
    out = learn.LearnOutput
    js = response_format("json_schema", "learn", out, strict=False)
    assert js is not None and js["type"] == "json_schema"
    assert js["json_schema"]["name"] == "learn_output" and js["json_schema"]["strict"] is False
    assert response_format("json_object_schema", "learn", out) == {
        "type": "json_object",
        "schema": response_schema(out),
    }
    assert response_format("json_object", "learn", out) == {"type": "json_object"}
    assert response_format("off", "learn", out) is None
    assert schema_name("my stage!") == "my_stage__output"


def test_a_strict_provider_refuses_pydantics_own_schema() -> None:
    raw = {
        "type": "json_schema",
        "json_schema": {
            "name": "x",
            "schema": learn.LearnOutput.model_json_schema(),
            "strict": True,
        },
    }
    mode, problem = check_response_format(raw)
    assert mode == "json_schema" and problem is not None
    assert check_response_format({"type": "json_schema", "json_schema": {"name": "a b"}})[1]
    assert check_response_format({"type": "nope"})[0] == "invalid"
    assert check_response_format(None) == ("none", None)


def test_the_correction_quotes_every_validation_error_within_a_bound() -> None:
    with pytest.raises(ValidationError) as caught:
        learn.LearnOutput.model_validate({"type": "object", "properties": {}})
    text = describe_error(caught.value)
    assert text.startswith("2 validation error(s) for LearnOutput")
    assert "- dimensions: Field required" in text and "- five_w: Field required" in text
    assert len(describe_error(caught.value, limit=120)) <= 120
    assert describe_error(ValueError("quote is not verbatim")) == "quote is not verbatim"


def test_echoes_of_the_schema_or_the_input_are_named() -> None:
    inp = {"product": "x", "sample": []}
    schema = learn.PROMPT.schema_json
    assert "JSON schema itself" in (echo_hint(schema, inp) or "")
    assert "input back" in (echo_hint('{"product": "x", "sample": []}', inp) or "")
    assert echo_hint('{"dimensions": []}', inp) is None
    assert echo_hint("no json here", inp) is None


def test_each_corrective_retry_is_hotter_up_to_a_ceiling() -> None:
    assert hotter(0.0, 0.3, 1.0) == pytest.approx(0.3)
    assert hotter(0.9, 0.3, 1.0) == 1.0
    assert hotter(1.2, 0.3, 1.0) == 1.2  # never cooler than configured


def test_the_timeout_follows_the_expected_answer() -> None:
    s = LLMSettings(timeout_s=120, timeout_base_s=10, decode_tps=20, max_tokens=2048, stages={})
    cfg = s.for_stage("translate")
    assert expected_output_tokens(300, 2048) == 64 + 200
    assert expected_output_tokens(10**6, 2048) == 2048
    assert call_timeout(cfg, 264, 1000) == pytest.approx(10 + 264 / 20)
    assert call_timeout(cfg, 4000, 1000) == 120  # the ceiling
    assert call_timeout(cfg, 264, 3.0) == 3.0  # never past the deadline
    fixed = LLMSettings(timeout_s=30, decode_tps=0, stages={}).for_stage("learn")
    assert call_timeout(fixed, 50, 1000) == 30


def test_the_system_text_can_open_the_first_user_turn() -> None:
    msgs = [{"role": "system", "content": "RULES"}, {"role": "user", "content": '{"a":1}'}]
    assert shape_messages(msgs, "system") is msgs
    assert shape_messages(msgs, "user") == [{"role": "user", "content": 'RULES\n\n{"a":1}'}]


def test_real_model_settings_per_stage() -> None:
    env = {
        "VOC_LLM_INSIGHT_MAX_CONCURRENCY": "1",
        "VOC_LLM_LEARN_STRUCTURED": "json_object_schema",
        "VOC_LLM_THEME_SYSTEM_ROLE": "user",
        "VOC_LLM_TRANSLATE_DECODE_TPS": "8",
        "VOC_LLM_TRANSLATE_TIMEOUT_BASE_S": "40",
    }
    s = LLMSettings(max_concurrency=4, structured="off", stages=overrides_from_env(env))
    assert s.for_stage("insight").max_concurrency == 1
    assert s.for_stage("report").max_concurrency == 4
    assert s.for_stage("learn").structured == "json_object_schema"
    assert s.for_stage("insight").structured == "off"
    assert s.for_stage("theme").system_role == "user"
    assert s.for_stage("learn").system_role == "system"
    t = s.for_stage("translate")
    assert (t.decode_tps, t.timeout_base_s) == (8.0, 40.0)
    with pytest.raises(ValidationError):
        overrides_from_env({"VOC_LLM_LEARN_STRUCTURED": "yaml"})


def test_the_fallback_divides_the_cap_like_the_rate_limiter() -> None:
    assert fallback_slots(8, 0.25) == 2
    assert fallback_slots(1, 0.25) == 1  # never zero
    assert fallback_slots(3, 0.5) == 1
