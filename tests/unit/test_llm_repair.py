"""Repairing model answers into JSON objects and output models."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.llm.repair import (
    RepairFailed,
    close_truncated,
    json_candidates,
    parse_json_reply,
    validate_reply,
)
from shared.prompts.insight import InsightOutput, check_quotes
from shared.prompts.translate import TranslateOutput, check_items

GOOD = {
    "items": [
        {"id": "1", "translation": "a", "source_language": "de"},
        {"id": "2", "translation": "b", "source_language": "fr"},
    ]
}


def test_valid_json_is_taken_as_is() -> None:
    assert parse_json_reply(json.dumps(GOOD)) == (GOOD, False)


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(GOOD) + "\n```",
        "```\n" + json.dumps(GOOD) + "\n```",
        "Sure! Here is the JSON you asked for:\n" + json.dumps(GOOD) + "\nLet me know.",
        "<think>The user wants {json}...</think>\n" + json.dumps(GOOD),
        json.dumps(GOOD, indent=2).replace('"fr"\n    }', '"fr",\n    },'),
    ],
    ids=["fence", "bare-fence", "prose", "think", "trailing-commas"],
)
def test_wrapped_or_sloppy_json_is_repaired(text: str) -> None:
    obj, repaired = parse_json_reply(text)
    assert obj == GOOD
    assert repaired


def test_braces_inside_strings_do_not_confuse_extraction() -> None:
    text = 'ok: {"a": "x } y", "b": ["{", "]"]} trailing }'
    assert parse_json_reply(text) == ({"a": "x } y", "b": ["{", "]"]}, True)


def test_truncated_answer_gives_cuts_most_data_first() -> None:
    text = json.dumps(GOOD)[:-30]  # cut inside the second item
    cands = [c for c, _ in json_candidates(text)]
    assert cands[0]["items"][0] == GOOD["items"][0]
    assert len(cands[0]["items"]) == 2 and "translation" not in cands[0]["items"][1]
    assert {"items": [GOOD["items"][0]]} in cands


def test_truncated_strings_numbers_and_literals_are_dropped() -> None:
    assert parse_json_reply('{"a": 1, "b": "unfinish')[0] == {"a": 1}
    assert parse_json_reply('{"a": 1, "b": 0.5')[0] == {"a": 1}  # 0.5 may be 0.57...
    assert parse_json_reply('{"a": [true, fal')[0] == {"a": [True]}
    assert parse_json_reply('{"a": {"b": [1, {"c": 2}], "d": "x')[0] == {"a": {"b": [1, {"c": 2}]}}


def test_close_truncated_on_complete_object_returns_it() -> None:
    assert close_truncated('{"a": 1} tail') == ['{"a": 1}']
    assert close_truncated("no object") == []


@pytest.mark.parametrize("text", ["", "   ", None, "I cannot help with that.", "[1, 2]"])
def test_no_object_means_repair_failed(text: str | None) -> None:
    with pytest.raises(RepairFailed):
        parse_json_reply(text)


def test_validate_reply_takes_the_first_candidate_the_model_accepts() -> None:
    text = json.dumps(GOOD)[:-30]
    # the longest cut has a half item (no translation): the model rejects it, the next
    # cut (first item only) is accepted
    out, repaired = validate_reply(text, TranslateOutput)
    assert [i.id for i in out.items] == ["1"]
    assert repaired
    # ... but the caller's check knows two ids were asked for
    with pytest.raises(ValueError, match="missing"):
        validate_reply(text, TranslateOutput, check_items(["1", "2"]))


def test_validate_reply_raises_the_schema_error() -> None:
    with pytest.raises(ValidationError):
        validate_reply('{"items": [{"id": 1}]}', TranslateOutput)


def test_quote_check_rejects_paraphrases() -> None:
    text = "Battery died after two days. Price was fine."
    good = {
        "insights": [
            {
                "dimension": "Battery",
                "aspect": "battery",
                "sentiment": "negative",
                "score": -0.6,
                "quote": "Battery died after two days.",
            }
        ]
    }
    out, _ = validate_reply(json.dumps(good), InsightOutput, check_quotes(text))
    assert out.insights[0].quote in text
    bad = json.loads(json.dumps(good))
    bad["insights"][0]["quote"] = "The battery died quickly."
    with pytest.raises(ValueError, match="verbatim"):
        validate_reply(json.dumps(bad), InsightOutput, check_quotes(text))
