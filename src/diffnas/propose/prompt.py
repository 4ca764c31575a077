"""The LLM's prompts: template files a user can override, filled from the round's context.

Templates live in `prompts/` (`system.txt`, `round.txt`, `memory.txt`, `repair.txt`, and
`edit.txt`, the round's request in edit mode) and use
`string.Template` placeholders (`$name`), so the JSON braces in them need no escaping. A
`prompt_dir` may hold files of the same names; each one found replaces ours.

The search memory is rendered one line per candidate (its architecture as the JSON the model
must write, its cost and score; rejected and failed ones with their reason), best last, so
the strongest designs sit next to the instruction. When it grows past `max_entries` lines it
is compacted to the best `top_k` plus the `recent` latest, with one line on what was left
out: the embedded SmolLM2-135M has a 4k-token context. Nothing time-dependent goes into a
prompt, so the same memory and round give the same request (and the same record key).

With two objectives (`ctx.objectives`: the score and the latency or the GMACs) each line shows
the measured latency, the memory ends with the current Pareto front (kept through compaction),
and the round's request says what the front is and asks for candidates that extend it. With a
latency budget the space's budget line names it instead of the GMACs band. A single-objective
search's prompts are unchanged, byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from diffnas.errors import UserError
from diffnas.gate.memory import TrialRecord, best_first, pareto_front
from diffnas.propose.base import ProposalContext
from diffnas.propose.llm import ChatMessage
from diffnas.propose.prompt_lines import task_line
from diffnas.space.search_space import SEARCHED_FIELDS, SearchSpace

TEMPLATE_DIR = Path(__file__).parent / "prompts"
TEMPLATE_NAMES = ("system.txt", "round.txt", "memory.txt", "repair.txt", "edit.txt")
# The placeholders each template may use (a user's template may use fewer).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "system.txt": ("score_name",),
    "round.txt": (
        "task",
        "space",
        "reference",
        "memory",
        "k",
        "round",
        "num_rounds",
        "fields",
        "score_name",
        "objective",
    ),
    "edit.txt": (
        "task",
        "space",
        "reference",
        "memory",
        "k",
        "n",
        "round",
        "num_rounds",
        "fields",
        "bases",
        "score_name",
        "objective",
    ),
    "memory.txt": ("count", "entries", "score_name", "front"),
    "repair.txt": ("problems", "kept", "n"),
}


class MemoryLayout(BaseModel):
    """How much of the search memory a prompt shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int = Field(16, ge=1, description="compact the memory when it has more lines")
    top_k: int = Field(6, ge=0, description="best evaluated candidates kept when compacting")
    recent: int = Field(6, ge=0, description="latest candidates (any status) kept when compacting")


class PromptTemplates:
    """Our templates, each replaced by a same-named file in `prompt_dir` when there is one."""

    def __init__(self, prompt_dir: str | Path | None = None) -> None:
        if prompt_dir is not None and not Path(prompt_dir).is_dir():
            raise UserError(
                f"prompt_dir={str(prompt_dir)!r} is not a directory; give a folder holding any of "
                f"{', '.join(TEMPLATE_NAMES)}",
                field="prompt_dir",
            )
        self.sources: dict[str, Path] = {}
        self.texts: dict[str, str] = {}
        for name in TEMPLATE_NAMES:
            override = Path(prompt_dir) / name if prompt_dir is not None else None
            path = override if override is not None and override.is_file() else TEMPLATE_DIR / name
            self.sources[name] = path
            try:
                self.texts[name] = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(
                    f"prompt template {str(path)!r} cannot be read as UTF-8 text "
                    f"({type(err).__name__}: {err})",
                    field="prompt_dir",
                ) from None

    def check(self) -> None:
        """Every placeholder of every template is one its request fills: a misspelt one is
        refused before the search starts, not at the first request of its kind (an edit
        template only when the model is first asked for edits, a repair one only when a
        proposal first fails)."""
        for name, text in self.texts.items():
            allowed = PLACEHOLDERS[name]
            for match in Template.pattern.finditer(text):
                placeholder = match.group("named") or match.group("braced")
                if match.group("invalid") is not None or (
                    placeholder is not None and placeholder not in allowed
                ):
                    found = match.group(0) if placeholder is None else f"${placeholder}"
                    line = text.count("\n", 0, match.start()) + 1
                    raise UserError(
                        f"prompt template {str(self.sources[name])!r} line {line}: placeholder "
                        f"{found!r} is not one of {', '.join(f'${p}' for p in allowed)} "
                        "(write $$ for a literal $)",
                        field="prompt_dir",
                    )

    def render(self, name: str, **values: Any) -> str:
        """Fill template `name`; an unknown placeholder is a UserError naming file and allowed ones."""
        try:
            return Template(self.texts[name]).substitute(values)
        except (KeyError, ValueError) as err:
            allowed = ", ".join(f"${p}" for p in PLACEHOLDERS[name])
            raise UserError(
                f"prompt template {str(self.sources[name])!r} has a bad placeholder ({err}); "
                f"allowed: {allowed} (write $$ for a literal $)",
                field="prompt_dir",
            ) from None


def _arch_json(space: SearchSpace, record: TrialRecord) -> str:
    if record.arch is not None:
        return json.dumps(space.proposal_of(record.arch), separators=(",", ":"))
    text = record.raw if isinstance(record.raw, str) else json.dumps(record.raw, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _cost_text(record: TrialRecord) -> str:
    parts = []
    if record.gmacs is not None:
        parts.append(f"{record.gmacs:.3g} GMACs")
    if record.params_m is not None:
        parts.append(f"{record.params_m:.3g} M params")
    if record.latency_ms is not None:
        parts.append(f"{record.latency_ms:.3g} ms")
    return ", ".join(parts)


def memory_entry(space: SearchSpace, record: TrialRecord) -> str:
    """One line: `trial N: {arch} -> cost, score` or the reason it was not scored."""
    cost = _cost_text(record)
    if record.evaluated:
        outcome = f"{record.score_name} {record.score:.4g}"
        if record.measured_on:  # a warm-start trial from another dataset
            outcome += f" (measured on {record.measured_on})"
    elif record.status == "screened-out":
        predicted = record.predicted
        guess = f"predicted {record.score_name} {predicted:.4g}, " if predicted is not None else ""
        outcome = f"{guess}not measured (screened out before training)"
    elif record.status == "rejected":
        cost = ""  # the reason already says what the check measured
        outcome = f"REJECTED: {record.reason or 'no reason given'}"
    elif record.status in ("pending", "running"):
        outcome = "being evaluated, no score yet"
    elif record.status == "pruned" and record.score is not None:
        steps, total = record.fidelity or (0, 0)
        outcome = (
            f"{record.score_name} {record.score:.4g} after {steps} of {total} proxy steps "
            "(stopped early by successive halving; a short run scores worse than a whole one)"
        )
    else:
        outcome = f"FAILED ({record.status}): {record.reason or 'no reason given'}"
    return f"trial {record.number}: {_arch_json(space, record)} -> " + ", ".join(
        p for p in (cost, outcome) if p
    )


def shown_memory(
    memory: list[TrialRecord],
    layout: MemoryLayout,
    score_name: str,
    keep: Collection[int] = (),
) -> tuple[list[TrialRecord], str | None]:
    """The records a prompt shows and, when compacted, one line on those left out (`keep`:
    trial numbers always shown, e.g. the Pareto front's)."""
    if len(memory) <= layout.max_entries:
        return list(memory), None
    scored = best_first(memory)
    keep_ids = {t.number for t in scored[: layout.top_k]} | set(keep)
    latest = sorted(memory, key=lambda t: t.number)[-layout.recent :] if layout.recent else []
    keep_ids |= {t.number for t in latest}
    kept = [t for t in memory if t.number in keep_ids]
    left = [t for t in memory if t.number not in keep_ids]
    left_scored = [t.score for t in left if t.evaluated]
    parts = []
    if left_scored:
        parts.append(
            f"{len(left_scored)} evaluated with {score_name} "
            f"{min(left_scored):.4g} to {max(left_scored):.4g}"  # type: ignore[type-var]
        )
    if len(left) > len(left_scored):
        parts.append(f"{len(left) - len(left_scored)} rejected, failed, pruned or pending")
    summary = (
        f"({len(left)} other candidate(s) left out: {'; '.join(parts)}; "
        f"shown: the {min(layout.top_k, len(scored))} best and the {len(latest)} latest)"
    )
    return kept, summary


def memory_entries(
    memory: list[TrialRecord],
    space: SearchSpace,
    layout: MemoryLayout,
    score_name: str,
    keep: Collection[int] = (),
) -> list[str]:
    """The memory's lines: unscored ones first, then scored worst to best; compacted if long."""
    kept, summary = shown_memory(memory, layout, score_name, keep)
    unscored = sorted((t for t in kept if not t.evaluated), key=lambda t: t.number)
    scored_kept = sorted((t for t in kept if t.evaluated), key=lambda t: (-t.score, t.number))  # type: ignore[operator]
    lines = [memory_entry(space, t) for t in (*unscored, *scored_kept)]
    return [summary, *lines] if summary else lines


COST_WORDS = {
    "latency": "the measured latency of one forward pass",
    "macs": "the compute of one forward pass in GMACs",
}


def front_numbers(ctx: ProposalContext) -> list[int]:
    """The trial numbers on the Pareto front of what the request shows (none: one objective)."""
    objective = ctx.cost_objective
    return [t.number for t in pareto_front(ctx.memory, objective)] if objective else []


def front_text(ctx: ProposalContext) -> str:
    """The memory's last line with two objectives: the current Pareto front, best score first."""
    objective = ctx.cost_objective
    if objective is None:
        return ""
    front = pareto_front(ctx.memory, objective)
    if not front:
        return "Pareto front so far: none yet (no candidate has a score)."

    def cost(t: TrialRecord) -> str:
        return f"{t.latency_ms:.3g} ms" if objective == "latency" else f"{t.gmacs:.3g} GMACs"

    members = ", ".join(
        f"trial {t.number} ({ctx.score_name} {t.score:.4g}, {cost(t)})" for t in front
    )
    return (
        f"Pareto front so far ({ctx.score_name} against {COST_WORDS[objective]}; no other "
        f"candidate is better on both), best {ctx.score_name} first: {members}."
    )


def objective_text(ctx: ProposalContext) -> str:
    """The request's sentence on what to aim for when there are two objectives."""
    objective = ctx.cost_objective
    if objective is None:
        return ""
    measured, cheaper = "", "cheaper"
    if objective == "latency":
        cheaper = "faster"
        if ctx.latency is not None and ctx.latency.conditions:
            measured = f" (measured: {ctx.latency.conditions})"
    score = ctx.score_name
    return (
        f"This search has two objectives, both lower is better: {score} and "
        f"{COST_WORDS[objective]}{measured}. Extend the Pareto front: propose candidates "
        f"{cheaper} than a front member at a similar {score}, or with a better {score} at a "
        "similar cost, spread along the front rather than all at one end."
    )


def budget_line(ctx: ProposalContext) -> str | None:
    """The space's budget line when a latency bound replaces its GMACs band (else None)."""
    latency = ctx.latency
    if latency is None or latency.budget_ms is None:
        return None
    params = ctx.space.budget.max_params_m
    measured = f" (measured: {latency.conditions})" if latency.conditions else ""
    return (
        f"- budget: at most {latency.budget_ms:g} ms per forward pass{measured}, instead of a "
        "GMACs band" + (f"; at most {params:g} M parameters" if params else "")
    )


@dataclass(frozen=True)
class EditRequest:
    """What an edit-mode round asks for: `n` edits of `bases` (labels), changing one of `fields`."""

    n: int
    bases: tuple[int | str, ...]
    fields: tuple[str, ...]


def round_messages(
    ctx: ProposalContext,
    templates: PromptTemplates,
    *,
    with_memory: bool = True,
    layout: MemoryLayout | None = None,
    edit: EditRequest | None = None,
) -> list[ChatMessage]:
    """The system and user turns that open a round (`with_memory=False`: the ablation).

    With `edit`, the user turn is `edit.txt`: the model is asked for edits of `edit.bases`."""
    memory = ""
    if with_memory:
        entries = memory_entries(
            ctx.memory, ctx.space, layout or MemoryLayout(), ctx.score_name, front_numbers(ctx)
        )
        memory = templates.render(
            "memory.txt",
            count=len(ctx.memory),
            entries="\n".join(entries) if entries else "(none yet: this is the first round)",
            score_name=ctx.score_name,
            front=front_text(ctx),
        )
    values = dict(
        task=ctx.task or task_line(ctx.space, ctx.score_name),
        space=ctx.space.describe(budget_line(ctx)),
        objective=objective_text(ctx),
        reference=ctx.reference_line,
        memory=memory,
        k=ctx.k,
        round=ctx.round + 1,
        num_rounds=ctx.num_rounds,
        score_name=ctx.score_name,
    )
    if edit is None:
        user = templates.render("round.txt", fields=", ".join(SEARCHED_FIELDS), **values)
    else:
        user = templates.render(
            "edit.txt",
            n=edit.n,
            fields=", ".join(edit.fields),
            bases=", ".join(json.dumps(label) for label in edit.bases),
            **values,
        )
    system = templates.render("system.txt", score_name=ctx.score_name)
    return [
        ChatMessage(role="system", content=_tidy(system)),
        ChatMessage(role="user", content=_tidy(user)),
    ]


def repair_message(
    templates: PromptTemplates, problems: list[str], kept: int, wanted: int
) -> ChatMessage:
    """The user turn after a flawed answer: each problem, what is kept, how many to send."""
    kept_line = (
        f"{kept} candidate(s) from your earlier answers are accepted and kept; do not send them again."
        if kept
        else ""
    )
    text = templates.render(
        "repair.txt",
        problems="\n".join(f"- {p}" for p in problems),
        kept=kept_line,
        n=wanted - kept,
    )
    return ChatMessage(role="user", content=_tidy(text))


def _tidy(text: str) -> str:
    """Drop the blank runs that empty placeholders leave behind."""
    return re.sub(r"\n{3,}", "\n\n", text).strip()
