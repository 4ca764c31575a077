"""Edits: the answer form that suits a tiny model - one field of a remembered architecture changed.

A full answer asks the model to write every field of a new UNet; SmolLM2-135M mostly echoes
the reference or picks values outside the space. An edit asks for much less:

    {"edits": [{"base": 3, "field": "base_channels", "value": 16}]}

`base` is a trial number or "reference", `field` one of the space's searched dimensions, and
`value` one of that dimension's allowed values. The `EditMenu` lists, for every base and field,
only the values whose result passes the gate - inside the space, not an architecture already
seen (the search memory, this round's picks and rejections), not the base itself, and within
the compute budget - and its JSON schema enumerates exactly those, so a grammar-constrained
backend can only write an acceptable edit. Answers from backends that cannot constrain
decoding are validated here with a reason per bad edit (unknown base, bad field, value not
allowed, no change), and every applied edit still goes through the proposer's gate.

Everything here is a pure function of its inputs (bases in a fixed order, values in the
space's order), so the same memory and round give byte-identical requests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from diffnas.errors import ArchitectureError
from diffnas.gate.memory import TrialRecord
from diffnas.propose.parse import AnswerError, extract_json
from diffnas.space import params as arch_params
from diffnas.space.arch import ArchConfig
from diffnas.space.references import get_reference
from diffnas.space.search_space import SEARCHED_FIELDS, SearchSpace

REFERENCE = "reference"
MAX_BASES = 8  # the reference plus the best and latest trials: a short menu for a small model
BaseLabel = int | str  # a trial number, or REFERENCE


@dataclass(frozen=True)
class Base:
    """An architecture an edit may start from, with the label the model writes for it."""

    label: BaseLabel
    arch: ArchConfig

    @property
    def name(self) -> str:
        return "the reference" if self.label == REFERENCE else f"trial {self.label}"


def edit_bases(
    space: SearchSpace,
    memory: Iterable[TrialRecord],
    max_bases: int = MAX_BASES,
    first: Collection[int] = (),
) -> list[Base]:
    """At most `max_bases` architectures to edit, most promising first: the reference (when in
    the space), then trials in the space - those numbered in `first` (a Pareto front) best
    first, the other scored ones best first, then the others newest first, rejected ones last.
    A repeat of an earlier base is left out (it offers the same edits)."""
    chosen: list[Base] = []
    if space.reference:
        reference = get_reference(space.reference)
        if space.contains(reference):
            chosen.append(Base(REFERENCE, reference))

    def priority(t: TrialRecord) -> tuple[int, float, int]:
        if t.evaluated:
            return (-1 if t.number in first else 0, float(t.score), t.number)  # type: ignore[arg-type]
        return (1 if t.status != "rejected" else 2, 0.0, -t.number)

    seen = {b.arch.key() for b in chosen}
    in_space = [t for t in memory if t.arch is not None and space.contains(t.arch)]
    for t in sorted(in_space, key=priority):
        assert t.arch is not None
        if len(chosen) < max_bases and t.arch.key() not in seen:
            seen.add(t.arch.key())
            chosen.append(Base(t.number, t.arch))
    return chosen


def field_choices(space: SearchSpace) -> dict[str, list[Any]]:
    """Every value the space allows per searched field, as the JSON a proposal holds (lists for
    `channel_mult` and `attention_resolutions`); fields with a single value cannot be edited."""
    choices: dict[str, list[Any]] = {}
    for name, dist in arch_params.distributions(space).items():
        values = list(dist.choices)  # type: ignore[attr-defined]
        if name == "channel_mult":
            values = [[int(v) for v in str(c).split(",")] for c in values]
        elif name == "attention_resolutions":
            values = [
                [] if c == arch_params.NO_ATTENTION else [int(v) for v in str(c).split(",")]
                for c in values
            ]
        if len(values) > 1:
            choices[name] = values
    return choices


def same_value(a: Any, b: Any) -> bool:
    """JSON equality that keeps true apart from 1 (Python's True == 1 would let it through)."""
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(same_value(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-9
    return bool(a == b)


def apply_edit(space: SearchSpace, base: ArchConfig, field_name: str, value: Any) -> dict[str, Any]:
    """The proposal dict of `base` with one field replaced (what the gate then checks)."""
    proposal = space.proposal_of(base)
    proposal[field_name] = value
    return proposal


@dataclass
class EditMenu:
    """The acceptable edits: (base label, field) -> the values that give a new, in-budget net."""

    options: dict[tuple[BaseLabel, str], list[Any]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.options.values())

    def schema(self, n: int) -> dict[str, Any]:
        """JSON schema of an answer of 1 to `n` edits, each one of the menu's (base, field, value)."""
        alternatives = [
            {
                "type": "object",
                "properties": {
                    "base": {"const": label},
                    "field": {"const": name},
                    "value": {"enum": values},
                },
                "required": ["base", "field", "value"],
                "additionalProperties": False,
            }
            for (label, name), values in self.options.items()
        ]
        return {
            "type": "object",
            "properties": {
                "edits": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": n,
                    "items": {"anyOf": alternatives},
                }
            },
            "required": ["edits"],
            "additionalProperties": False,
        }


def edit_menu(
    space: SearchSpace,
    bases: list[Base],
    acceptable: Callable[[ArchConfig], bool],
    excluded_keys: set[str],
    max_checked: int | None = None,
) -> EditMenu:
    """Every single-field edit of every base whose result is valid, in the space, not the base,
    not in `excluded_keys` (architectures already seen or rejected) and `acceptable` (the budget).

    `acceptable` is asked about each distinct new architecture once, in the order of `bases`
    (most promising first) and of the fields, and only about the first `max_checked` of them (measuring cost takes a fraction of a second per net);
    later ones are offered unchecked and the gate judges them. The bound is a count, never a
    time, so the menu - and the request - stays the same on every run."""
    choices = field_choices(space)
    options: dict[tuple[BaseLabel, str], list[Any]] = {}
    verdicts: dict[str, bool] = {}
    for base in bases:
        current = space.proposal_of(base.arch)
        for name in SEARCHED_FIELDS:
            kept = []
            for value in choices.get(name, []):
                if same_value(value, current[name]):
                    continue
                try:
                    arch = space.complete(apply_edit(space, base.arch, name, value))
                except ArchitectureError:
                    continue
                key = arch.key()
                if key == base.arch.key() or key in excluded_keys:
                    continue
                if key not in verdicts:
                    checked = max_checked is None or len(verdicts) < max_checked
                    verdicts[key] = acceptable(arch) if checked else True
                if verdicts[key]:
                    kept.append(value)
            if kept:
                options[(base.label, name)] = kept
    return EditMenu(options)


@dataclass
class EditAnswer:
    """One edit as the model wrote it: its proposal when it applies, else its problems."""

    index: int
    raw: Any
    base: Base | None = None
    field: str = ""
    value: Any = None
    old: Any = None  # the base's value of `field`
    proposal: dict[str, Any] | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def rationale(self) -> str:
        """What the edit does, in words (a tiny model's own rationale would be noise)."""
        if self.base is None or self.proposal is None:
            return ""
        return (
            f"edit of {self.base.name}: {self.field} {json.dumps(self.old)} -> "
            f"{json.dumps(self.value)}"
        )


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_edits(
    text: str, space: SearchSpace, bases: list[Base], max_items: int
) -> list[EditAnswer]:
    """The edits of an answer (at most the first `max_items`), each with its problems;
    `AnswerError` when the answer is not a JSON object holding a non-empty "edits" list."""
    data = extract_json(text)
    if not isinstance(data, dict) or not isinstance(data.get("edits"), list):
        raise AnswerError('your answer must be one JSON object {"edits": [...]}')
    if not data["edits"]:
        raise AnswerError('your "edits" list is empty; send at least one edit')
    by_label = {str(b.label): b for b in bases}
    labels = ", ".join(json.dumps(b.label) for b in bases)
    choices = field_choices(space)
    answers = []
    for i, item in enumerate(data["edits"][:max_items]):
        answer = EditAnswer(index=i, raw=item)
        answers.append(answer)
        if not isinstance(item, dict):
            answer.problems.append(
                'an edit must be an object {"base": ..., "field": ..., "value": ...}'
            )
            continue
        extra = sorted(set(item) - {"base", "field", "value"})
        missing = [k for k in ("base", "field", "value") if k not in item]
        if extra or missing:
            answer.problems.append(
                "an edit has exactly the keys base, field and value"
                + (f"; unexpected {', '.join(map(repr, extra))}" if extra else "")
                + (f"; missing {', '.join(map(repr, missing))}" if missing else "")
            )
            continue
        label = item["base"]
        base = (
            by_label.get(str(label))
            if isinstance(label, (int, str)) and not isinstance(label, bool)
            else None
        )
        if base is None:
            answer.problems.append(f"unknown base {_short(label)}; allowed: {labels}")
        name = item["field"]
        if not isinstance(name, str) or name not in choices:
            answer.problems.append(
                f"field {_short(name)} cannot be edited; allowed: {', '.join(choices)}"
            )
        elif not any(same_value(item["value"], v) for v in choices[name]):
            answer.problems.append(
                f"value {_short(item['value'])} is not allowed for {name}; allowed: "
                f"{_short(choices[name], 300)}"
            )
        elif base is not None and same_value(item["value"], space.proposal_of(base.arch)[name]):
            answer.problems.append(f"{name} is already {_short(item['value'])} in {base.name}")
        if answer.problems:
            continue
        assert base is not None
        answer.base, answer.field, answer.value = base, name, item["value"]
        answer.old = space.proposal_of(base.arch)[name]
        answer.proposal = apply_edit(space, base.arch, name, item["value"])
    return answers
