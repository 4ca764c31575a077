"""The LLM proposer (the DiffNAS method) and its no-memory ablation.

One round is one conversation: the opening prompt (task, space, budget, reference, memory),
the model's answer, and up to `max_repairs` repair turns. Each answer is parsed strictly
(`parse.parse_answer`) and every schema-valid candidate goes through `ctx.check`, which costs
no training. Accepted candidates are kept from whichever turn gave them; a repair turn names
exactly what was wrong with the others (the check's sentence, the JSON error, the schema path)
and asks only for replacements. What is still wrong when the repairs run out is returned with
its reason, so the loop records it as rejected.

Two modes. `full` (GPT-4-class models): each candidate is a whole architecture, as above.
`edit` (the default for the embedded 135M model, which in full mode echoes the reference):
each candidate is an edit - one field of the reference or of a remembered trial changed to
another allowed value (`propose.edit`). The edit schema lists only edits whose result is new,
inside the space and within the budget, so a grammar-constrained model can only pick good
ones; a repair turn asks for the slots still open with a schema that leaves out what was
taken or refused. Slots the model cannot fill (no acceptable edit left, or every turn spent)
are filled by a uniform random draw, unless `fallback=False`.

Every proposal records where it came from in `meta["origin"]`: "llm" (a full answer),
"llm-edit" (an edit the model chose) or "fallback" (drawn without the model).

The request's seed is drawn from `ctx.rng` and prompts hold nothing time-dependent, so the
same memory and round give byte-identical requests: replay and resume find their records.
`LLMUnavailable` and `LLMBudgetExhausted` from the backend propagate to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from diffnas.errors import UserError
from diffnas.gate.check import Verdict, within_budget
from diffnas.gate.entry import ORIGIN_EDIT, ORIGIN_FALLBACK, ORIGIN_LLM
from diffnas.gate.memory import UNTRAINED
from diffnas.model.cost import Cost, measure_cost
from diffnas.propose import DEFAULT_MAX_REPAIRS
from diffnas.propose.base import Proposal, ProposalContext, Proposer
from diffnas.propose.baselines import draw_until_ok
from diffnas.propose.edit import (
    MAX_BASES,
    Base,
    EditAnswer,
    EditMenu,
    edit_bases,
    edit_menu,
    field_choices,
    parse_edits,
)
from diffnas.propose.llm import ChatMessage, LLMBackend, LLMRequest
from diffnas.propose.parse import AnswerError, parse_answer, proposal_schema
from diffnas.propose.prompt import (
    EditRequest,
    MemoryLayout,
    PromptTemplates,
    front_numbers,
    repair_message,
    round_messages,
    shown_memory,
)
from diffnas.space.arch import ArchConfig

LLM_MODES = ("full", "edit")
FALLBACK_TRIES = 200  # uniform draws per fallback slot, as the random baseline
# Distinct edits whose cost the menu measures (about 0.1-0.3 s each on a CPU); past it the gate
# alone judges the budget. A count, not a time, so the menu and the request stay reproducible.
MENU_COST_LIMIT = 64


class LLMProposer(Proposer):
    """Asks an LLM for `ctx.k` candidates, repairing flawed answers in the same conversation."""

    def __init__(
        self,
        backend: LLMBackend,
        *,
        name: str = "diffnas",
        with_memory: bool = True,
        prompt_dir: str | Path | None = None,
        max_repairs: int = DEFAULT_MAX_REPAIRS,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        memory_layout: MemoryLayout | None = None,
        mode: str = "full",
        fallback: bool = True,
        max_bases: int = MAX_BASES,
        menu_cost_limit: int | None = None,
    ) -> None:
        if mode not in LLM_MODES:
            raise UserError(
                f"llm_mode={mode!r} is unknown; allowed: {', '.join(LLM_MODES)} (or auto)",
                field="llm_mode",
            )
        if max_bases < 1:
            raise UserError(f"max_bases={max_bases} must be >= 1", field="max_bases")
        self.backend = backend
        self.name = name
        self.with_memory = with_memory  # False: the ablation sees task, space and budget only
        self.templates = PromptTemplates(prompt_dir)
        self.max_repairs = max_repairs  # repair turns after the first answer
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.memory_layout = memory_layout or MemoryLayout()
        self.mode = mode  # "full": whole architectures; "edit": one-field edits (tiny models)
        self.fallback = fallback  # edit mode: fill slots the model leaves open by random draws
        self.max_bases = max_bases  # edit mode: architectures offered as bases
        self.menu_cost_limit = menu_cost_limit  # None: MENU_COST_LIMIT
        self._costs: dict[str, Cost] = {}  # arch key -> cost; a pure function, kept across rounds

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        seed = ctx.rng.randrange(2**31)
        if self.mode == "edit":
            return self._propose_edits(ctx, seed)
        return self._propose_full(ctx, seed)

    def _propose_full(self, ctx: ProposalContext, seed: int) -> list[Proposal]:
        messages = round_messages(
            ctx, self.templates, with_memory=self.with_memory, layout=self.memory_layout
        )
        accepted: list[Proposal] = []
        accepted_archs: list[ArchConfig] = []
        failed: list[Proposal] = []
        calls = 0
        for turn in range(self.max_repairs + 1):
            wanted = ctx.k - len(accepted)
            schema = proposal_schema(ctx.space, wanted)
            request = LLMRequest(
                messages=messages,
                schema=schema,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=seed,
            )
            text = self.backend.complete(request).text
            calls += 1
            failed, problems = [], []
            try:
                answers = parse_answer(text, schema)
            except AnswerError as err:
                failed.append(self._rejected(text, "", str(err), turn, ORIGIN_LLM))
                problems.append(str(err))
                answers = []
            for answer in answers:
                if answer.problems:
                    reason = "; ".join(answer.problems)
                    raw = answer.arch if answer.arch is not None else answer.raw
                    failed.append(self._rejected(raw, answer.rationale, reason, turn, ORIGIN_LLM))
                    problems.append(f"candidate {answer.index + 1}: {reason}")
                    continue
                verdict = ctx.check(answer.arch, accepted_archs)
                proposal = Proposal(
                    raw=answer.arch,
                    rationale=answer.rationale,
                    verdict=verdict,
                    proposer=self.name,
                    meta={"turn": turn, "origin": ORIGIN_LLM},
                )
                if verdict.ok:
                    assert verdict.arch is not None
                    accepted.append(proposal)
                    accepted_archs.append(verdict.arch)
                else:
                    failed.append(proposal)
                    problems.append(f"candidate {answer.index + 1}: {verdict.reason}")
            if len(accepted) >= ctx.k or turn == self.max_repairs:
                break
            if not problems:  # every candidate was good, there were just too few of them
                problems.append(
                    f"you sent {len(answers)} candidate(s); {ctx.k - len(accepted)} more are needed"
                )
            messages = [
                *messages,
                ChatMessage(role="assistant", content=text),
                repair_message(self.templates, problems, kept=len(accepted), wanted=ctx.k),
            ]
        result = accepted + failed[: max(0, ctx.k - len(accepted))]
        for proposal in result:
            proposal.meta["llm_calls"] = calls
        return result

    def _propose_edits(self, ctx: ProposalContext, seed: int) -> list[Proposal]:
        """Fill the round with edits of remembered architectures, then fallbacks if allowed."""
        front = front_numbers(ctx) if self.with_memory else []
        shown = (
            shown_memory(ctx.memory, self.memory_layout, ctx.score_name, front)[0]
            if self.with_memory
            else []
        )
        bases = edit_bases(ctx.space, shown, self.max_bases, first=front)
        if not bases:  # nothing to edit (no reference in the space, empty memory): ask for it whole
            return self._propose_full(ctx, seed)
        seen = {
            t.arch.key() for t in ctx.memory if t.arch is not None and t.status not in UNTRAINED
        }
        taken = _Taken()
        messages: list[ChatMessage] = []
        calls = 0
        for turn in range(self.max_repairs + 1):
            wanted = ctx.k - len(taken.accepted)
            menu = self._menu(ctx, bases, seen | taken.excluded_keys())
            if not len(menu):
                break  # every edit of every base is taken, refused or over budget
            if not messages:
                offered = tuple(
                    b.label for b in bases if any(b.label == lb for lb, _ in menu.options)
                )
                fields = tuple(field_choices(ctx.space))
                messages = round_messages(
                    ctx, self.templates, with_memory=self.with_memory, layout=self.memory_layout,
                    edit=EditRequest(n=wanted, bases=offered, fields=fields),
                )  # fmt: skip
            request = LLMRequest(
                messages=messages,
                schema=menu.schema(wanted),
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                seed=seed,
            )
            text = self.backend.complete(request).text
            calls += 1
            try:
                edits = parse_edits(text, ctx.space, bases, max_items=2 * wanted)
                problems = self._judge(ctx, edits, turn, taken)
            except AnswerError as err:
                taken.failed.append(self._rejected(text, "", str(err), turn, ORIGIN_EDIT))
                edits, problems = [], [str(err)]
            if len(taken.accepted) >= ctx.k or turn == self.max_repairs:
                break
            if not problems:
                problems.append(
                    f"you sent {len(edits)} edit(s); {ctx.k - len(taken.accepted)} more are needed"
                )
            messages = [
                *messages,
                ChatMessage(role="assistant", content=text),
                repair_message(self.templates, problems, kept=len(taken.accepted), wanted=ctx.k),
            ]
        open_slots = ctx.k - len(taken.accepted)
        if self.fallback:
            result = taken.accepted + self._fallbacks(ctx, taken.accepted_archs, open_slots)
        else:
            result = taken.accepted + taken.failed[: max(0, open_slots)]
        for proposal in result:
            proposal.meta["llm_calls"] = calls
            proposal.meta["refused_edits"] = len(taken.failed)
        return result

    def _judge(
        self, ctx: ProposalContext, edits: list[EditAnswer], turn: int, taken: _Taken
    ) -> list[str]:
        """Gate the answer's edits in order until the round is full; returns the problems."""
        problems: list[str] = []
        for edit in edits:
            if len(taken.accepted) >= ctx.k:
                break  # the first acceptable edits are taken; the rest are spares
            if edit.problems:
                reason = "; ".join(edit.problems)
                taken.failed.append(self._rejected(edit.raw, "", reason, turn, ORIGIN_EDIT))
                problems.append(f"edit {edit.index + 1}: {reason}")
                continue
            assert edit.base is not None
            verdict = ctx.check(edit.proposal, taken.accepted_archs)
            proposal = Proposal(
                raw=edit.proposal,
                rationale=edit.rationale,
                verdict=verdict,
                proposer=self.name,
                meta={
                    "turn": turn,
                    "origin": ORIGIN_EDIT,
                    "edit": {"base": edit.base.label, "field": edit.field, "value": edit.value},
                },
            )
            if verdict.ok:
                assert verdict.arch is not None
                taken.accepted.append(proposal)
                taken.accepted_archs.append(verdict.arch)
                continue
            taken.failed.append(proposal)
            problems.append(f"edit {edit.index + 1} ({edit.rationale}): {verdict.reason}")
            if verdict.arch is not None:
                taken.refused.add(verdict.arch.key())
        return problems

    def _menu(self, ctx: ProposalContext, bases: list[Base], excluded: set[str]) -> EditMenu:
        """The edits on offer: new, in the space, and (the first `menu_cost_limit`) in budget
        (a latency budget: measured, as the gate does)."""

        def in_budget(arch: ArchConfig) -> bool:
            key = arch.key()
            if key not in self._costs:
                self._costs[key] = measure_cost(arch)
            # a latency bound is measured; a latency objective is not needed to judge the budget
            bound = ctx.latency if ctx.latency_budget_ms is not None else None
            return within_budget(arch, self._costs[key], ctx.space.budget, bound)[0]

        limit = MENU_COST_LIMIT if self.menu_cost_limit is None else self.menu_cost_limit
        return edit_menu(ctx.space, bases, in_budget, excluded, max_checked=limit)

    def _fallbacks(
        self, ctx: ProposalContext, accepted: list[ArchConfig], n: int
    ) -> list[Proposal]:
        """`n` uniform draws that pass the gate, each marked as a fallback (not the model's)."""

        def draw() -> tuple[object, str]:
            sample = ctx.space.proposal_of(ctx.space.sample(ctx.rng))
            return sample, "fallback: uniform random draw for a slot the LLM left open"

        proposals: list[Proposal] = []
        accepted = list(accepted)
        for _ in range(n):
            proposal = draw_until_ok(ctx, accepted, draw, FALLBACK_TRIES, self.name)
            proposal.meta["origin"] = ORIGIN_FALLBACK
            proposals.append(proposal)
            if proposal.verdict is None or proposal.verdict.arch is None or not proposal.verdict.ok:
                break  # the space is (nearly) exhausted
            accepted.append(proposal.verdict.arch)
        return proposals

    def _rejected(
        self, raw: object, rationale: str, reason: str, turn: int, origin: str
    ) -> Proposal:
        return Proposal(
            raw=raw,
            rationale=rationale,
            verdict=Verdict(arch=None, cost=None, reason=reason),
            proposer=self.name,
            meta={"turn": turn, "origin": origin},
        )


@dataclass
class _Taken:
    """An edit round so far: accepted proposals, refused ones, and what the menu must leave out."""

    accepted: list[Proposal] = field(default_factory=list)
    accepted_archs: list[ArchConfig] = field(default_factory=list)
    failed: list[Proposal] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # keys of architectures the gate turned down

    def excluded_keys(self) -> set[str]:
        return self.refused | {a.key() for a in self.accepted_archs}
