"""The proposal schema, and strict parsing of an LLM's answer against it.

An answer is one JSON object `{"candidates": [{"rationale": ..., "arch": {...}}, ...]}`. Parsing
tolerates what chat models wrap around it (a ```json fence, a sentence before or after) by
extracting the first JSON object with the standard decoder - never `eval`. The object is then
validated with `jsonschema`; faults are reported per candidate (JSON path and message) so a
repair turn can say exactly what to fix while good candidates in the same answer are kept.

LLM output is hostile input. Before any decoding, an answer longer than `MAX_ANSWER_CHARS` or
nested deeper than `MAX_NESTING` is refused with an `AnswerError` (a cheap scan of the
brackets outside strings): the recursive decoder, `jsonschema`, `repr` and every later writer
of the value then only ever see small, shallow data - a 200,000-deep answer would raise
`RecursionError` in each of them. An answer with more candidates than asked keeps the first
schema-valid ones; the extras are dropped without a word to the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from diffnas.space.search_space import SearchSpace

RATIONALE_MAX_CHARS = 200
#: Longest answer parsed: k candidates of a few hundred characters each fit many times over.
MAX_ANSWER_CHARS = 100_000
#: Deepest nesting parsed: an answer needs 5 (envelope, list, candidate, arch, channel_mult).
MAX_NESTING = 16
#: Candidates looked at beyond the k asked, in search of schema-valid ones to keep.
EXTRA_CANDIDATES_EXAMINED = 8
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# What the nesting scan looks at: quotes and backslashes (strings) and brackets.
_STRUCTURE = re.compile(r'[\\"\[\]{}]')


def proposal_schema(space: SearchSpace, k: int) -> dict[str, Any]:
    """JSON schema of one answer: 1 to `k` candidates, each a short rationale and an architecture."""
    return {
        "type": "object",
        "properties": {
            "candidates": {
                "type": "array",
                "minItems": 1,
                "maxItems": k,
                "items": {
                    "type": "object",
                    "properties": {
                        "rationale": {"type": "string", "maxLength": RATIONALE_MAX_CHARS},
                        "arch": space.arch_json_schema(),
                    },
                    "required": ["rationale", "arch"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["candidates"],
        "additionalProperties": False,
    }


class AnswerError(ValueError):
    """The answer as a whole is unusable (not JSON, or not the `candidates` envelope)."""


def check_nesting(text: str, start: int = 0, limit: int = MAX_NESTING) -> None:
    """Raise `AnswerError` if the JSON value at `text[start:]` nests deeper than `limit`.

    Brackets are counted outside strings, with JSON's string rules, from `start` until the
    first value closes - the same characters the decoder reads, so its recursion stays below
    `limit`. Text the decoder would refuse earlier can only make the count higher, never lower.
    """
    depth = 0
    in_string = False
    escaped = -1  # position of the character a backslash escapes
    for match in _STRUCTURE.finditer(text, start):
        position, char = match.start(), match.group()
        if position == escaped:
            continue
        if in_string:
            if char == "\\":
                escaped = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise AnswerError(
                    f"your answer nests deeper than {limit} levels; "
                    "reply with one flat JSON object in the format asked"
                )
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return  # the first value is closed; the decoder stops here too


def _decode(text: str, start: int = 0) -> Any:
    """`json.loads`-like decoding of the value at `text[start:]`, bounded in depth first."""
    check_nesting(text, start)
    if start == 0:
        return json.loads(text)
    value, _ = json.JSONDecoder().raw_decode(text, start)
    return value


def extract_json(text: str) -> Any:
    """The JSON object in `text`: the whole text, a fenced block, or the first `{...}` in prose."""
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerError(
            f"your answer is {len(text):,} characters long, at most {MAX_ANSWER_CHARS:,} "
            "are read; reply with one short JSON object"
        )
    stripped = text.strip()
    if not stripped:
        raise AnswerError("your answer was empty; reply with one JSON object")
    try:
        return _decode(stripped)
    except json.JSONDecodeError:
        pass
    fenced = _FENCE.search(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    start = stripped.find("{")
    if start < 0:
        raise AnswerError("your answer holds no JSON object; reply with one JSON object")
    try:
        return _decode(stripped, start)
    except json.JSONDecodeError as err:
        raise AnswerError(f"your answer is not valid JSON: {err}") from None


@dataclass
class CandidateAnswer:
    """One candidate as the model wrote it, with its schema faults (empty = schema-valid)."""

    index: int  # 0-based position in the answer
    raw: Any  # the whole candidate item
    arch: Any  # its "arch" value (None when missing)
    rationale: str
    problems: list[str] = field(default_factory=list)


def _where(err: ValidationError, index: int | None = None) -> str:
    """The JSON path of a fault; `index` puts a candidate validated alone back in its place."""
    path = list(err.absolute_path)
    if index is not None:
        path[1] = index  # the fault was found at candidates/0
    return "/".join(str(p) for p in path) or "(top level)"


def _message(err: ValidationError) -> str:
    if err.validator == "maxItems" and isinstance(err.instance, list):
        return f"{len(err.instance)} items, at most {err.validator_value} allowed"
    if err.validator == "minItems" and isinstance(err.instance, list):
        return f"{len(err.instance)} items, at least {err.validator_value} needed"
    if err.validator == "maxLength" and isinstance(err.instance, str):
        return f"{len(err.instance)} characters, at most {err.validator_value} allowed"
    message = err.message
    return message if len(message) <= 200 else message[:197] + "..."


def _schema_problems(data: Any, schema: dict[str, Any]) -> tuple[list[str], list[ValidationError]]:
    """(envelope faults, faults of candidate 0) of `data` against `schema`."""
    envelope: list[str] = []
    first: list[ValidationError] = []
    for err in sorted(
        Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path)
    ):
        path = list(err.absolute_path)
        if len(path) >= 2 and path[0] == "candidates" and path[1] == 0:
            first.append(err)
        else:
            envelope.append(f"schema error at {_where(err)}: {_message(err)}")
    return envelope, first


def parse_answer(text: str, schema: dict[str, Any]) -> list[CandidateAnswer]:
    """Candidates of an answer, each with its schema faults; `AnswerError` if none can be read.

    At most k (the schema's `maxItems`) come back: the first schema-valid ones, completed with
    the first faulty ones (whose faults a repair turn names). Extras past those are dropped, so
    one candidate too many no longer costs the good ones.
    """
    data = extract_json(text)
    items = data.get("candidates") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        envelope, _ = _schema_problems(data, schema)
        raise AnswerError("; ".join(envelope) or "your answer holds no candidates")
    wanted = schema["properties"]["candidates"].get("maxItems", len(items))
    valid: list[CandidateAnswer] = []
    faulty: list[CandidateAnswer] = []
    for i, item in enumerate(items[: wanted + EXTRA_CANDIDATES_EXAMINED]):
        # Each candidate is checked alone in the envelope, so the count bound never fails it.
        envelope, errors = _schema_problems({**data, "candidates": [item]}, schema)
        if envelope:
            raise AnswerError("; ".join(envelope))
        is_dict = isinstance(item, dict)
        rationale = item.get("rationale") if is_dict else None
        answer = CandidateAnswer(
            index=i,
            raw=item,
            arch=item.get("arch") if is_dict else None,
            rationale=rationale if isinstance(rationale, str) else "",
            problems=[f"schema error at {_where(err, index=i)}: {_message(err)}" for err in errors],
        )
        (faulty if answer.problems else valid).append(answer)
        if len(valid) == wanted:
            break
    kept = valid + faulty[: max(0, wanted - len(valid))]
    return sorted(kept, key=lambda answer: answer.index)
