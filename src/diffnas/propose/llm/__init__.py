"""LLM backends behind one interface: `make_backend(spec).complete(LLMRequest(...))`.

Backends: `openai` (any OpenAI-compatible endpoint), `anthropic`, `local` (embedded SmolLM2 via
llama-cpp-python), `replay` (a recorded run). `RecordingBackend` adds the cost ledger, the hard
budget and `RUN_DIR/llm/calls.jsonl`.
"""

from __future__ import annotations

from diffnas.propose.llm.base import (
    ChatMessage,
    LLMBackend,
    LLMBudgetExhausted,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMUnavailable,
)
from diffnas.propose.llm.factory import make_backend, parse_spec
from diffnas.propose.llm.ledger import CostLedger, LLMBudget, PriceTable
from diffnas.propose.llm.record import RecordingBackend, ReplayBackend, ReplayMiss, calls_path
from diffnas.propose.llm.retry import RetryPolicy

__all__ = [
    "LLMBudget",
    "ChatMessage",
    "CostLedger",
    "LLMBackend",
    "LLMBudgetExhausted",
    "LLMError",
    "LLMRequest",
    "LLMResponse",
    "LLMUnavailable",
    "PriceTable",
    "RecordingBackend",
    "ReplayBackend",
    "ReplayMiss",
    "RetryPolicy",
    "calls_path",
    "make_backend",
    "parse_spec",
]
