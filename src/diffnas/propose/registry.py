"""`make_proposer("diffnas", llm_backend=...)`: one place that turns a method name into a proposer."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from diffnas.errors import UserError
from diffnas.propose import DEFAULT_MAX_REPAIRS
from diffnas.propose.base import Proposer
from diffnas.propose.baselines import (
    EvolutionProposer,
    NSGAIIProposer,
    RandomProposer,
    TPEProposer,
)
from diffnas.propose.llm import LLMBackend
from diffnas.propose.llm_proposer import LLM_MODES, LLMProposer

LLM_PROPOSERS = ("diffnas", "llm-no-memory")
LLM_MODE_CHOICES = (*LLM_MODES, "auto")
BASELINES: dict[str, type[Proposer]] = {
    "random": RandomProposer,
    "tpe": TPEProposer,
    "evolution": EvolutionProposer,
    "nsga2": NSGAIIProposer,
}
PROPOSERS = (*LLM_PROPOSERS, *BASELINES)


def _options(cls: type[Proposer], skip: tuple[str, ...] = ()) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in skip]


def resolve_llm_mode(mode: str, llm: str) -> str:
    """`auto` -> `edit` for the embedded local model (too small to write whole architectures
    well), `full` for every other backend; `full` and `edit` stay as they are."""
    if mode not in LLM_MODE_CHOICES:
        raise UserError(
            f"llm_mode={mode!r} is unknown; allowed: {', '.join(LLM_MODE_CHOICES)}",
            field="llm_mode",
        )
    if mode != "auto":
        return mode
    return "edit" if llm.strip() == "local" else "full"


def make_proposer(
    name: str,
    *,
    llm_backend: LLMBackend | None = None,
    prompt_dir: str | Path | None = None,
    max_repairs: int = DEFAULT_MAX_REPAIRS,
    temperature: float = 0.7,
    **opts: Any,
) -> Proposer:
    """The proposer called `name`; `opts` go to its constructor (unknown ones are a UserError).

    LLM proposers need `llm_backend`; `prompt_dir`, `max_repairs` and `temperature` apply to
    them only, and so do their options `mode` ("full" or "edit", see `resolve_llm_mode`),
    `fallback`, `max_bases`, `max_tokens` and `memory_layout`. Baseline options: random `max_tries`; tpe `n_startup_trials`,
    `n_ei_candidates`, `max_tries`; evolution `population_size`, `tournament_size`, `max_tries`;
    nsga2 `population_size`, `max_tries`.
    """
    if name not in PROPOSERS:
        raise UserError(
            f"proposer={name!r} is unknown; allowed: {', '.join(PROPOSERS)}", field="proposer"
        )
    if max_repairs < 0:
        raise UserError(f"max_repairs={max_repairs} must be >= 0", field="max_repairs")
    cls: type[Proposer] = LLMProposer if name in LLM_PROPOSERS else BASELINES[name]
    fixed = ("name", "with_memory", "prompt_dir", "max_repairs", "temperature")
    allowed = _options(cls, skip=fixed)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise UserError(
            f"proposer {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed) or 'none'}",
            field=unknown[0],
        )
    if name not in LLM_PROPOSERS:
        return cls(**opts)
    if llm_backend is None:
        raise UserError(
            f"proposer {name!r} asks a language model; give an LLM backend (llm='local', "
            "'openai:MODEL', 'anthropic:MODEL' or 'replay:RUN_DIR')",
            field="llm",
        )
    return LLMProposer(
        llm_backend,
        name=name,
        with_memory=name == "diffnas",
        prompt_dir=prompt_dir,
        max_repairs=max_repairs,
        temperature=temperature,
        **opts,
    )
