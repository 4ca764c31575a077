"""Token and dollar accounting, and the hard budget that ends a search gracefully.

Prices are USD per 1M tokens (input, output), list prices at the time of writing; pass your
own table to override them. A model is priced by its exact name, else by the longest known
prefix (so dated snapshots like `gpt-4o-mini-2024-07-18` match `gpt-4o-mini`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from diffnas.propose.llm.base import LLMBudgetExhausted, LLMResponse

# (input, output) USD per 1M tokens.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "local": (0.0, 0.0),
}


class PriceTable:
    """Looks up a model's price; unknown models cost 0 and are reported by `knows`."""

    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    def lookup(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def knows(self, model: str) -> bool:
        return self.lookup(model) is not None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


class LLMBudget(BaseModel):
    """A hard cap on LLM spending for one search; None means no cap on that quantity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(
        default=None, ge=0, description="Cap on prompt+completion tokens."
    )
    max_usd: float | None = Field(default=None, ge=0.0, description="Cap on estimated cost in USD.")


class CostLedger:
    """Sums what every call cost and refuses to start a call once the budget is spent.

    The check happens before a call, so a run overshoots its budget by at most the one call
    that crossed it (the size of an answer is not known in advance).
    """

    def __init__(self, budget: LLMBudget | None = None) -> None:
        self.budget = budget or LLMBudget()
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def check(self) -> None:
        """Raise `LLMBudgetExhausted` if the next call would start over budget."""
        budget = self.budget
        if budget.max_tokens is not None and self.total_tokens >= budget.max_tokens:
            raise LLMBudgetExhausted(
                f"LLM token budget exhausted: {self.total_tokens} of {budget.max_tokens} tokens "
                f"spent in {self.calls} call(s)"
            )
        if budget.max_usd is not None and self.cost_usd >= budget.max_usd:
            raise LLMBudgetExhausted(
                f"LLM cost budget exhausted: ${self.cost_usd:.4f} of ${budget.max_usd:.4f} "
                f"spent in {self.calls} call(s)"
            )

    def add(self, response: LLMResponse) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += response.prompt_tokens
            self.completion_tokens += response.completion_tokens
            self.cost_usd += response.cost_usd

    def summary(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }
