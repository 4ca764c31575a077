"""The proposal schema, and strict parsing of an LLM's answer against it.

An answer is one JSON object `{"candidates": [{"rationale": ..., "arch": {...}}, ...]}`. Parsing
tolerates what chat models wrap around it (a ```json fence, a sentence before or after) by
extracting the first JSON object with the standard decoder - never `eval`. The object is then
validated with `jsonschema`; faults are reported per candidate (JSON path and message) so a
repair turn can say exactly what to fix while good candidates in the same answer are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from diffnas.space.search_space import SearchSpace

RATIONALE_MAX_CHARS = 200
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


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


def extract_json(text: str) -> Any:
    """The JSON object in `text`: the whole text, a fenced block, or the first `{...}` in prose."""
    stripped = text.strip()
    if not stripped:
        raise AnswerError("your answer was empty; reply with one JSON object")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    fenced = _FENCE.search(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    start = stripped.find("{")
    if start < 0:
        raise AnswerError("your answer holds no JSON object; reply with one JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(stripped, start)
    except json.JSONDecodeError as err:
        raise AnswerError(f"your answer is not valid JSON: {err}") from None
    return value


@dataclass
class CandidateAnswer:
    """One candidate as the model wrote it, with its schema faults (empty = schema-valid)."""

    index: int  # 0-based position in the answer
    raw: Any  # the whole candidate item
    arch: Any  # its "arch" value (None when missing)
    rationale: str
    problems: list[str] = field(default_factory=list)


def _where(err: ValidationError) -> str:
    return "/".join(str(p) for p in err.absolute_path) or "(top level)"


def _message(err: ValidationError) -> str:
    if err.validator == "maxItems" and isinstance(err.instance, list):
        return f"{len(err.instance)} items, at most {err.validator_value} allowed"
    if err.validator == "minItems" and isinstance(err.instance, list):
        return f"{len(err.instance)} items, at least {err.validator_value} needed"
    if err.validator == "maxLength" and isinstance(err.instance, str):
        return f"{len(err.instance)} characters, at most {err.validator_value} allowed"
    message = err.message
    return message if len(message) <= 200 else message[:197] + "..."


def parse_answer(text: str, schema: dict[str, Any]) -> list[CandidateAnswer]:
    """Candidates of an answer, each with its schema faults; `AnswerError` if none can be read."""
    data = extract_json(text)
    envelope: list[str] = []
    per_item: dict[int, list[str]] = {}
    for err in sorted(
        Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path)
    ):
        path = list(err.absolute_path)
        if len(path) >= 2 and path[0] == "candidates" and isinstance(path[1], int):
            per_item.setdefault(path[1], []).append(
                f"schema error at {_where(err)}: {_message(err)}"
            )
        else:
            envelope.append(f"schema error at {_where(err)}: {_message(err)}")
    if envelope:
        raise AnswerError("; ".join(envelope))
    answers = []
    for i, item in enumerate(data["candidates"]):
        is_dict = isinstance(item, dict)
        rationale = item.get("rationale") if is_dict else None
        answers.append(
            CandidateAnswer(
                index=i,
                raw=item,
                arch=item.get("arch") if is_dict else None,
                rationale=rationale if isinstance(rationale, str) else "",
                problems=per_item.get(i, []),
            )
        )
    return answers
