"""The LLM proposer (the DiffNAS method) and its no-memory ablation.

One round is one conversation: the opening prompt (task, space, budget, reference, memory),
the model's answer, and up to `max_repairs` repair turns. Each answer is parsed strictly
(`parse.parse_answer`) and every schema-valid candidate goes through `ctx.check`, which costs
no training. Accepted candidates are kept from whichever turn gave them; a repair turn names
exactly what was wrong with the others (the check's sentence, the JSON error, the schema path)
and asks only for replacements. What is still wrong when the repairs run out is returned with
its reason, so the loop records it as rejected.

The request's seed is drawn from `ctx.rng` and prompts hold nothing time-dependent, so the
same memory and round give byte-identical requests: replay and resume find their records.
`LLMUnavailable` and `LLMBudgetExhausted` from the backend propagate to the loop.
"""

from __future__ import annotations

from pathlib import Path

from diffnas.propose.base import (
    DEFAULT_MAX_REPAIRS,
    Proposal,
    ProposalContext,
    Proposer,
    Verdict,
)
from diffnas.propose.llm import ChatMessage, LLMBackend, LLMRequest
from diffnas.propose.parse import AnswerError, parse_answer, proposal_schema
from diffnas.propose.prompt import MemoryLayout, PromptTemplates, repair_message, round_messages
from diffnas.space.arch import ArchConfig


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
    ) -> None:
        self.backend = backend
        self.name = name
        self.with_memory = with_memory  # False: the ablation sees task, space and budget only
        self.templates = PromptTemplates(prompt_dir)
        self.max_repairs = max_repairs  # repair turns after the first answer
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.memory_layout = memory_layout or MemoryLayout()

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        seed = ctx.rng.randrange(2**31)
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
                failed.append(self._rejected(text, "", str(err), turn))
                problems.append(str(err))
                answers = []
            for answer in answers:
                if answer.problems:
                    reason = "; ".join(answer.problems)
                    raw = answer.arch if answer.arch is not None else answer.raw
                    failed.append(self._rejected(raw, answer.rationale, reason, turn))
                    problems.append(f"candidate {answer.index + 1}: {reason}")
                    continue
                verdict = ctx.check(answer.arch, accepted_archs)
                proposal = Proposal(
                    raw=answer.arch,
                    rationale=answer.rationale,
                    verdict=verdict,
                    proposer=self.name,
                    meta={"turn": turn},
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

    def _rejected(self, raw: object, rationale: str, reason: str, turn: int) -> Proposal:
        return Proposal(
            raw=raw,
            rationale=rationale,
            verdict=Verdict(arch=None, cost=None, reason=reason),
            proposer=self.name,
            meta={"turn": turn},
        )
