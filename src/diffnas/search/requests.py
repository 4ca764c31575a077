"""Requests to the proposer: each turns the proposer's answer into gate-checked `RoundEntry`s,
saved as a round file before any of its trials exists.

Request r (`Requests.make`):
1. is served from its round file `rounds/round-RRR.json` when an earlier start made it, so a
   resumed search never asks for it again;
2. else asks the proposer for K candidates (under --screen M for the K slots), showing the
   search memory: every earlier candidate with its cost and score;
3. checks every proposal again at the gate (`Requests.gate`, `check_candidate`): invalid,
   duplicate or over-budget ones are kept with their reason and cost no training;
4. under --screen, the screener keeps K of the accepted ones (`diffnas.search.screening`);
5. writes the round file atomically, with how many were asked and which finished trials the
   request saw, so a replay can make the same request.
Under the `rounds` schedule a request is a round of K; under `async` each request (as many
candidates as free slots) is a "round" of its own: round files, events and messages count
requests. An LLM that fails a request (unavailable) costs that request only, the search goes
on and a resume asks again; a spent LLM budget stops the search.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from diffnas.data.datasets import DataSpec
from diffnas.gate.check import LatencyCheck, check_candidate
from diffnas.gate.entry import RoundEntry, RoundFile, origin_of
from diffnas.gate.memory import TrialRecord
from diffnas.layout import ROUND_FILE, ROUND_FILES, ROUNDS_DIR
from diffnas.model.cost import measure_cost
from diffnas.propose.base import Proposal, ProposalContext, Proposer
from diffnas.propose.llm import LLMBudgetExhausted, LLMUnavailable
from diffnas.propose.llm.redact import env_secrets, redact
from diffnas.propose.prompt_lines import data_words, memory_as_seen, reference_line, task_line
from diffnas.propose.registry import LLM_PROPOSERS
from diffnas.propose.screen import ScreenContext, Screener
from diffnas.runs import write_json
from diffnas.search import screening
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace


def round_path(run_dir: Path, r: int) -> Path:
    """Request `r`'s round file in a run folder (`rounds/round-RRR.json`)."""
    return Path(run_dir) / ROUNDS_DIR / ROUND_FILE.format(r)


def check_round_files(run_dir: Path) -> None:
    """Read every round file of a run folder: a damaged one is a `UserError` naming it."""
    for path in sorted((Path(run_dir) / ROUNDS_DIR).glob(ROUND_FILES)):
        RoundFile.read(path)


class Requests:
    """A search's requests to its proposer, numbered from 0; `make(r)` is request r's entries."""

    def __init__(
        self,
        config: SearchConfig,
        space: SearchSpace,
        data: DataSpec,
        run_dir: Path,
        study: Any,  # optuna.Study: the memory each request shows
        proposer: Proposer,
        *,
        screener: Screener | None,
        admits: Callable[[ArchConfig], str | None],
        latency: LatencyCheck | None,
        console: Console,
        event: Callable[..., None],
    ) -> None:
        self.config, self.space, self.data, self.run_dir = config, space, data, run_dir
        self.study, self.proposer, self.screener = study, proposer, screener
        self.admits, self.latency = admits, latency  # the gate's executor and latency checks
        self.console, self.event = console, event
        # requests of this process the proposer answered (or their round files did), and the
        # messages of those that failed because the LLM was unavailable
        self.answered = 0
        self.failed: list[str] = []

    @property
    def never_answered(self) -> bool:
        """Every request of this process failed because the LLM was unavailable (a wrong
        --base-url, a server down): the search trained nothing it was asked for."""
        return bool(self.failed) and not self.answered

    def saved(self, r: int) -> RoundFile | None:
        """Request `r` as its round file saved it (None if never made), origins filled in."""
        saved = RoundFile.read(round_path(self.run_dir, r))
        for e in saved.entries if saved else []:  # files written before origins were recorded
            e.origin = self._origin(e.origin, e.proposer)
        return saved

    def make(
        self,
        r: int,
        k: int | None = None,
        seen: Collection[int] | None = None,
        num_rounds: int | None = None,
    ) -> tuple[list[RoundEntry] | None, str | None]:
        """(entries, None) for request `r` (`entries`); (None, None) when the LLM failed it
        (the run goes on; a resume asks again); (None, reason) when the LLM budget is spent."""
        try:
            entries = self.entries(r, k, seen, num_rounds)
            self.answered += 1
            return entries, None
        except LLMBudgetExhausted as err:
            stop_reason = f"LLM budget spent: {self._safe_text(err)}"
            self.console.print(
                f"[yellow]round {r + 1}: {escape(stop_reason)}; stopping the search[/yellow]"
            )
            self.event("budget_exhausted", round=r, message=self._safe_text(err))
            return None, stop_reason
        except LLMUnavailable as err:
            message = self._safe_text(err)
            self.console.print(
                f"[red]round {r + 1} failed: the LLM is unavailable: {escape(message)}[/red]"
            )
            self.event("round_failed", round=r, message=message)
            self.failed.append(message)
            return None, None

    def entries(
        self,
        r: int,
        k: int | None = None,
        seen: Collection[int] | None = None,
        num_rounds: int | None = None,
    ) -> list[RoundEntry]:
        """Request `r`'s proposals with their gate verdicts: from its file, or asked now and saved.

        `k`: how many to ask (default K). `seen`: the finished trials the proposer may see
        (an asynchronous replay shows exactly what the recorded request saw; default all).
        `num_rounds`: the requests expected in all (default the configured rounds)."""
        saved = self.saved(r)
        if saved is not None:
            return saved.entries
        path, cfg, proposer = round_path(self.run_dir, r), self.config, self.proposer
        k = k or cfg.per_round
        # --screen: M candidates for the K slots (in proportion for a smaller request)
        wanted = screening.pool_size(k, cfg.per_round, cfg.screen) if self.screener else k
        memory = memory_as_seen(study_mod.load_memory(self.study), seen)
        ctx = ProposalContext(
            space=self.space,
            memory=memory,
            round=r,
            num_rounds=num_rounds or cfg.rounds,
            k=wanted,
            rng=random.Random(f"{cfg.seed}-round-{r}"),
            check=lambda raw, accepted: check_candidate(
                raw, self.space, memory, accepted, self.latency, admit=self.admits
            ),
            task=task_line(self.space, cfg.proxy.score.label, data_words(self.data)),
            reference_line=reference_line(self.space, self.latency),
            score_name=cfg.proxy.score.label,  # the system and memory prompts name it
            objectives=tuple(cfg.objectives),
            latency=self.latency,
            evaluations=cfg.rounds * cfg.per_round,
        )
        screened = f" (screened by {self.screener.name} down to {k})" if self.screener else ""
        self.console.print(
            f"[bold]round {r + 1}/{ctx.num_rounds}[/bold]: asking {proposer.name} for "
            f"{wanted}{screened}"
        )
        proposals: list[Proposal] = proposer.propose(ctx)[:wanted]
        entries = self.gate(proposals, memory)
        screen_info = None
        if self.screener is not None:
            entries, screen_info = screening.screen_entries(
                self.screener,
                entries,
                k,
                ScreenContext(
                    space=self.space,
                    memory=memory,
                    candidates=[],
                    k=k,
                    seed=random.Random(f"{cfg.seed}-screen-{r}").randrange(2**31),
                    score_name=ctx.score_name,
                    task=ctx.task,
                    reference_line=ctx.reference_line,
                ),
            )
        path.parent.mkdir(exist_ok=True)
        round_file = RoundFile(
            round=r,
            proposer=proposer.name,
            entries=entries,
            asked=k,
            seen=sorted(t.number for t in memory if t.status not in ("pending", "running")),
            screening=screen_info,
        )
        write_json(path, round_file.model_dump(mode="json"))
        ok = sum(e.accepted for e in entries)
        self.event("proposed", round=r, accepted=ok, rejected=len(entries) - ok)
        return entries

    def gate(self, proposals: list[Proposal], memory: list[TrialRecord]) -> list[RoundEntry]:
        """Check every proposal again: nothing invalid, duplicate or over budget reaches training."""
        entries, accepted = [], []
        for slot, p in enumerate(proposals):
            verdict = p.verdict
            # A proposal the proposer already judged bad keeps that reason (its raw text may
            # not even parse); a good one is checked again against this round's acceptances.
            if verdict is None or verdict.ok:
                verdict = check_candidate(
                    p.raw, self.space, memory, accepted, self.latency, admit=self.admits
                )
            if verdict.ok and verdict.arch is not None:
                accepted.append(verdict.arch)
            cost = verdict.cost or (
                measure_cost(verdict.arch) if verdict.arch is not None else None
            )
            proposer = p.proposer or self.config.proposer
            entries.append(
                RoundEntry(
                    slot=slot,
                    proposer=proposer,
                    origin=self._origin(p.meta.get("origin"), proposer),
                    rationale=p.rationale,
                    raw=p.raw,
                    arch=verdict.arch,
                    reason=verdict.reason,
                    gmacs=round(cost.gmacs, 5) if cost else None,
                    params_m=round(cost.params_m, 5) if cost else None,
                    latency_ms=None if verdict.latency_ms is None else round(verdict.latency_ms, 4),
                    meta=p.meta,
                )
            )
        return entries

    def _origin(self, origin: str | None, proposer: str) -> str:
        return origin_of(origin, proposer, self.config.proposer in LLM_PROPOSERS)

    def _safe_text(self, err: BaseException) -> str:
        """`err` as text fit to print and store: no key value, no credential shape.

        The backends redact at the source; this guard also knows the configured key variable.
        """
        return redact(str(err), env_secrets([self.config.api_key_env]))
