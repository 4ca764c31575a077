"""The one small interface every LLM backend implements, and the errors it may raise.

A backend turns an `LLMRequest` (chat messages, an optional JSON schema, sampling options)
into an `LLMResponse` (text, token counts, latency, cost, attempts). Wrappers (recording,
replay, budget) are backends too, so the search loop only ever sees `LLMBackend.complete`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from diffnas.propose.llm.redact import redact


class LLMError(RuntimeError):
    """Base class of the faults a search loop is expected to handle."""


class LLMUnavailable(LLMError):
    """The backend could not answer after all retries; the search fails the round, not the run."""

    def __init__(
        self, endpoint: str, last_error: str, attempts: int, errors: list[str] | None = None
    ) -> None:
        # Producers redact with the key they hold; this guard catches any credential shape
        # and the environment's keys, whoever raised it (its text is printed and recorded).
        last_error = redact(last_error)
        errors = [redact(e) for e in errors] if errors is not None else None
        super().__init__(
            f"LLM endpoint {endpoint} is unavailable after {attempts} attempt(s); "
            f"last error: {last_error}"
        )
        self.endpoint = endpoint
        self.last_error = last_error
        self.attempts = attempts
        #: Every fault seen, oldest first (for the call record).
        self.errors = list(errors) if errors is not None else [last_error]


class LLMBudgetExhausted(LLMError):
    """The token or USD budget is spent; the search stops gracefully and keeps its results."""


class ChatMessage(BaseModel):
    """One chat turn, in the OpenAI shape every backend converts from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks this turn.")
    content: str = Field(description="The text of the turn.")


class LLMRequest(BaseModel):
    """What the proposer asks; its `.key()` identifies it for recording and replay."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    # Stored as `json_schema` because pydantic reserves `.schema`; passed in as `schema=`.
    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON schema the answer must satisfy; backends that can constrain decoding do.",
    )
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(default=1024, ge=1, description="Most tokens to generate.")
    seed: int | None = Field(default=None, description="Sampling seed, where the backend has one.")

    def canonical_json(self) -> str:
        """Key-order independent JSON of the whole request (the schema included)."""
        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def key(self) -> str:
        """sha256 of the canonical JSON: equal requests get equal keys across processes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def schema_hash(self) -> str | None:
        """sha256 of the schema alone, so records stay small but show which schema was used."""
        if self.json_schema is None:
            return None
        text = json.dumps(self.json_schema, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.messages]


class LLMResponse(BaseModel):
    """What a backend answered, with the accounting the ledger and the records need."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The model's answer (JSON text when a schema was given).")
    model: str = Field(description="The model that answered, as the endpoint names it.")
    prompt_tokens: int = Field(default=0, ge=0, description="Tokens read.")
    completion_tokens: int = Field(default=0, ge=0, description="Tokens generated.")
    latency_s: float = Field(
        default=0.0, ge=0.0, description="Wall time of the call, retries included."
    )
    cost_usd: float = Field(default=0.0, ge=0.0, description="Estimated cost from the price table.")
    attempts: int = Field(default=1, ge=1, description="HTTP attempts made (1 = no retry).")
    errors: list[str] = Field(default_factory=list, description="Faults retried before success.")
    replayed: bool = Field(default=False, description="True when served from a recording.")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMBackend(ABC):
    """Answers chat requests. Implementations must be safe to call again after an error."""

    #: Where requests go, for error messages and records (never contains a key).
    endpoint: str = ""
    #: The model name used for pricing.
    model: str = ""

    @abstractmethod
    def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer one request, or raise `LLMUnavailable` / `LLMBudgetExhausted`."""


def schema_instruction(schema: dict[str, Any]) -> str:
    """The prompt text that asks for schema-shaped JSON where decoding cannot be constrained."""
    return (
        "Reply with exactly one JSON object, no prose and no code fences, that validates "
        "against this JSON Schema:\n" + json.dumps(schema, sort_keys=True)
    )
