"""LLMRequest: validation and a stable identity key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from diffnas.propose.llm import LLMRequest


def make(**overrides) -> LLMRequest:
    fields = {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "schema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        },
        "temperature": 0.5,
        "max_tokens": 100,
        "seed": 1,
    }
    return LLMRequest(**{**fields, **overrides})


def test_key_is_sha256_of_canonical_json_and_ignores_dict_order() -> None:
    reordered = {
        "properties": {"b": {"type": "string"}, "a": {"type": "integer"}},
        "type": "object",
    }
    assert make().key() == make(schema=reordered).key()
    assert len(make().key()) == 64 and int(make().key(), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.6},
        {"max_tokens": 101},
        {"seed": 2},
        {"schema": None},
        {"messages": [{"role": "user", "content": "u"}]},
    ],
)
def test_key_changes_with_any_field(change: dict) -> None:
    assert make(**change).key() != make().key()


def test_schema_hash_only_depends_on_the_schema() -> None:
    assert make().schema_hash() == make(temperature=0.1).schema_hash()
    assert make(schema=None).schema_hash() is None


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"temperature": -1.0},
        {"max_tokens": 0},
        {"unknown": 1},
    ],
)
def test_bad_requests_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        make(**bad)
