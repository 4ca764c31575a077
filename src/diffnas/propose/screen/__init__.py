"""Screening before training (`--screen M --screener NAME`): rank a request's candidates
without training them, so only the most promising K of M are evaluated.

Screeners: `llm` (the LLM predicts each candidate's score from the memory, LLAMBO's
surrogate), `gp` (a Gaussian process on the measured trials, ranking by expected improvement)
and `llm+gp` (LLINBO-style: the LLM ranks, the GP vetoes with a trust schedule). They share
one interface (`Screener.rank(ScreenContext) -> Ranking`) and one conformance suite.
"""

from __future__ import annotations

from diffnas.errors import UserError
from diffnas.propose.llm import LLMBackend
from diffnas.propose.screen.base import Candidate, Ranking, ScreenContext, Screener
from diffnas.propose.screen.gp import GPScreener
from diffnas.propose.screen.hybrid import HybridScreener
from diffnas.propose.screen.llm import LLMScreener

SCREENERS = ("llm", "gp", "llm+gp")
LLM_SCREENERS = ("llm", "llm+gp")

__all__ = [
    "SCREENERS", "LLM_SCREENERS", "Candidate", "GPScreener", "HybridScreener", "LLMScreener",
    "Ranking", "ScreenContext", "Screener", "make_screener",
]  # fmt: skip


def make_screener(
    name: str,
    *,
    llm_backend: LLMBackend | None = None,
    prompt_dir: str | None = None,
    max_repairs: int = 2,
    max_tokens: int = 1024,
) -> Screener:
    """The screener called `name`; the LLM ones need `llm_backend`."""
    if name not in SCREENERS:
        raise UserError(
            f"--screener {name!r} is unknown; allowed: {', '.join(SCREENERS)}", field="screener"
        )
    if name == "gp":
        return GPScreener()
    if llm_backend is None:
        raise UserError(
            f"--screener {name} asks a language model; give an LLM backend (--llm)",
            field="llm",
        )
    llm = LLMScreener(
        llm_backend, prompt_dir=prompt_dir, max_repairs=max_repairs, max_tokens=max_tokens
    )
    return llm if name == "llm" else HybridScreener(llm)
