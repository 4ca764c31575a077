"""Price lookup, cost arithmetic and the budget check."""

from __future__ import annotations

import pytest

from diffnas.propose.llm import CostLedger, LLMBudget, LLMBudgetExhausted, LLMResponse, PriceTable


def test_price_lookup_exact_then_longest_prefix() -> None:
    table = PriceTable({"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)})
    assert table.lookup("gpt-4o-mini-2024-07-18") == (0.15, 0.6)
    assert table.lookup("gpt-4o-2024-08-06") == (2.5, 10.0)
    assert table.lookup("llama3") is None and not table.knows("llama3")


def test_cost_is_usd_per_million_tokens() -> None:
    table = PriceTable({"m": (1.0, 4.0)})
    assert table.cost("m", 500_000, 250_000) == pytest.approx(0.5 + 1.0)
    assert table.cost("unknown", 10**6, 10**6) == 0.0
    assert PriceTable().cost("local", 10**6, 10**6) == 0.0


def test_ledger_sums_calls_and_refuses_once_a_cap_is_reached() -> None:
    ledger = CostLedger(LLMBudget(max_tokens=100, max_usd=1.0))
    ledger.check()
    ledger.add(
        LLMResponse(text="", model="m", prompt_tokens=60, completion_tokens=30, cost_usd=0.2)
    )
    ledger.check()  # 90 < 100: the next call may start
    ledger.add(LLMResponse(text="", model="m", prompt_tokens=5, completion_tokens=5, cost_usd=0.2))
    with pytest.raises(LLMBudgetExhausted, match="100 of 100 tokens spent in 2 call"):
        ledger.check()
    assert ledger.summary() == {
        "calls": 2,
        "prompt_tokens": 65,
        "completion_tokens": 35,
        "cost_usd": 0.4,
    }


def test_usd_cap_alone() -> None:
    ledger = CostLedger(LLMBudget(max_usd=0.5))
    ledger.add(LLMResponse(text="", model="m", prompt_tokens=10**9, cost_usd=0.49))
    ledger.check()
    ledger.add(LLMResponse(text="", model="m", cost_usd=0.02))
    with pytest.raises(LLMBudgetExhausted, match="cost budget"):
        ledger.check()


def test_no_budget_never_refuses() -> None:
    """Without caps the ledger only counts: a billion tokens and a million dollars later it
    still lets calls start (`check` raises nothing) and reports what was spent."""
    ledger = CostLedger()
    for _ in range(3):
        ledger.check()
        ledger.add(LLMResponse(text="", model="m", prompt_tokens=10**9, cost_usd=1e6))
    ledger.check()
    assert (ledger.budget.max_tokens, ledger.budget.max_usd) == (None, None)
    assert ledger.summary() == {
        "calls": 3,
        "prompt_tokens": 3 * 10**9,
        "completion_tokens": 0,
        "cost_usd": 3e6,
    }
