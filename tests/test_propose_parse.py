"""Strict parsing of an LLM answer: JSON extraction, the schema, per-candidate faults."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from diffnas.propose.parse import (
    AnswerError,
    extract_json,
    parse_answer,
    proposal_schema,
)
from test_propose_conformance import SPACE, valid_arch

SCHEMA = proposal_schema(SPACE, 2)
GOOD = {"candidates": [{"rationale": "wider", "arch": valid_arch()}]}


def test_schema_is_valid_and_bounds_the_candidates() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    candidates = SCHEMA["properties"]["candidates"]
    assert (candidates["minItems"], candidates["maxItems"]) == (1, 2)
    assert candidates["items"]["properties"]["arch"] == SPACE.arch_json_schema()
    assert candidates["items"]["properties"]["rationale"]["maxLength"] == 200


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Sure! Here is my answer:\n" + json.dumps(GOOD) + "\nI hope it helps {really}.",
        "```\n" + json.dumps(GOOD, indent=2) + "\n```",
    ],
)
def test_json_is_extracted_from_fences_and_prose(text: str) -> None:
    assert extract_json(text) == GOOD


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("no braces here", "holds no JSON object"),
        ('{"candidates": [', "not valid JSON: Expecting value"),
        ("__import__('os').system('true') {'a': 1}", "not valid JSON"),  # never eval'd
    ],
)
def test_unreadable_answers_say_why(text: str, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        extract_json(text)


def test_faults_are_reported_per_candidate_with_their_path() -> None:
    text = json.dumps(
        {
            "candidates": [
                {"rationale": "ok", "arch": valid_arch()},
                {"rationale": "x" * 201, "arch": valid_arch(mid_attention="yes", extra=1)},
            ]
        }
    )
    first, second = parse_answer(text, SCHEMA)
    assert first.problems == [] and first.arch == valid_arch() and first.rationale == "ok"
    assert second.index == 1 and len(second.problems) == 4  # type and enum both fail
    joined = " | ".join(second.problems)
    assert "schema error at candidates/1/arch: Additional properties" in joined
    assert "schema error at candidates/1/arch/mid_attention: 'yes' is not of type" in joined
    assert "schema error at candidates/1/rationale: 201 characters, at most 200" in joined


def test_missing_field_is_a_candidate_fault() -> None:
    arch = valid_arch()
    del arch["dropout"]
    (only,) = parse_answer(json.dumps({"candidates": [{"rationale": "", "arch": arch}]}), SCHEMA)
    assert only.problems == ["schema error at candidates/0/arch: 'dropout' is a required property"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"candidates": []}, "schema error at candidates: 0 items, at least 1 needed"),
        ({"candidates": [GOOD["candidates"][0]] * 3}, "3 items, at most 2 allowed"),
        ({"proposals": []}, "'candidates' is a required property"),
        ([1, 2], "schema error at \\(top level\\)"),
    ],
)
def test_envelope_faults_reject_the_whole_answer(value, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_answer(json.dumps(value), SCHEMA)
