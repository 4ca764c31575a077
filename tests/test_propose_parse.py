"""Strict parsing of an LLM answer: JSON extraction, the schema, per-candidate faults."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from diffnas.propose.parse import (
    MAX_ANSWER_CHARS,
    MAX_NESTING,
    AnswerError,
    check_nesting,
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
        ({"proposals": []}, "'candidates' is a required property"),
        ([1, 2], "schema error at \\(top level\\)"),
    ],
)
def test_envelope_faults_reject_the_whole_answer(value, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_answer(json.dumps(value), SCHEMA)


def item(rationale: str, **changes) -> dict:
    return {"rationale": rationale, "arch": valid_arch(**changes)}


def test_more_candidates_than_asked_keeps_the_first_ones() -> None:
    one = proposal_schema(SPACE, 1)
    text = json.dumps({"candidates": [item("first"), item("second", dropout=0.1)]})
    (kept,) = parse_answer(text, one)  # was: "2 items, at most 1 allowed", both lost
    assert (kept.index, kept.rationale, kept.problems) == (0, "first", [])


def test_extras_make_room_for_valid_candidates_after_faulty_ones() -> None:
    bad = {"rationale": "bad", "arch": valid_arch(wings=2)}
    text = json.dumps({"candidates": [bad, item("a"), bad, item("b", dropout=0.1), item("c")]})
    kept = parse_answer(text, SCHEMA)  # k = 2: the first two schema-valid ones
    assert [(a.index, a.rationale, a.problems) for a in kept] == [(1, "a", []), (3, "b", [])]


def test_too_many_faulty_candidates_keep_k_with_their_faults_at_their_own_index() -> None:
    bad = {"rationale": "bad", "arch": valid_arch(wings=2)}
    text = json.dumps({"candidates": [bad, item("a"), bad, bad]})
    first, second = parse_answer(text, SCHEMA)
    assert (first.index, second.index) == (0, 1) and second.problems == []
    assert first.problems == [
        "schema error at candidates/0/arch: Additional properties are not allowed "
        "('wings' was unexpected)"
    ]


def test_an_envelope_fault_still_rejects_a_long_answer() -> None:
    text = json.dumps({"candidates": [item("a")] * 3, "note": "x"})
    with pytest.raises(AnswerError, match="Additional properties"):
        parse_answer(text, SCHEMA)


def deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.mark.parametrize(
    "text",
    [
        deep(40_000),  # under the length bound; json.loads would raise RecursionError
        '{"candidates": [{"rationale": "x", "arch": ' + '{"a": ' * 40 + "1" + "}" * 43,
        "Here you go:\n```json\n" + deep(50) + "\n```",
        "my answer: " + '{"a": ' * 50 + "1" + "}" * 50,
    ],
    ids=["bare-brackets", "inside-the-envelope", "fenced", "in-prose"],
)
def test_deep_answers_are_refused_before_decoding(text: str) -> None:
    with pytest.raises(AnswerError, match=f"nests deeper than {MAX_NESTING} levels"):
        parse_answer(text, SCHEMA)


def test_the_200000_deep_answer_of_the_issue_is_refused_for_its_length() -> None:
    text = deep(200_000)
    with pytest.raises(AnswerError, match="400,000 characters long, at most 100,000"):
        parse_answer(text, SCHEMA)
    assert len(text) > MAX_ANSWER_CHARS


def test_nesting_scan_follows_json_strings() -> None:
    # brackets inside strings (escaped quotes included) do not count; the decoder agrees
    inside = json.dumps({"candidates": [item('[[[[{{{{ " [[[[ \\' * 10)]})
    assert len(parse_answer(inside, SCHEMA)) == 1
    check_nesting(deep(MAX_NESTING))  # exactly at the bound is fine
    with pytest.raises(AnswerError):
        check_nesting(deep(MAX_NESTING + 1))
    # prose after the first value is not counted; a string that never closes is all string
    check_nesting(deep(3) + " " + "[" * 100)
    check_nesting('"' + "[" * 100)
