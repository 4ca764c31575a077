"""Claude models through the official `anthropic` SDK (Messages API; base URL configurable)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from diffnas.propose.llm.base import LLMBackend, LLMRequest, LLMResponse, schema_instruction
from diffnas.propose.llm.ledger import PriceTable
from diffnas.propose.llm.openai_backend import read_api_key
from diffnas.propose.llm.retry import RetryPolicy, call_with_retries, classify_sdk_error


class AnthropicBackend(LLMBackend):
    """Messages API with our retries; a schema becomes `output_config.format` (structured outputs)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        structured: bool = True,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        import anthropic

        key = read_api_key(api_key_env, required=True, backend="anthropic")
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,  # retries are ours, so they are counted and their sleeps injectable
        )
        self._transform_schema = anthropic.transform_schema
        self._connection_errors = (anthropic.APIConnectionError,)
        self.model = model
        self.endpoint = f"anthropic:{model}@{self._client.base_url}"
        self.structured = structured
        self.retry = retry or RetryPolicy()
        self.prices = prices or PriceTable()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        # Current Messages API models take no sampling knobs (temperature/seed are not sent).
        # The Messages API takes the system prompt apart from the user/assistant turns.
        system = [m.content for m in request.messages if m.role == "system"]
        turns = [m.model_dump() for m in request.messages if m.role != "system"]
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": turns,
        }
        schema = request.json_schema
        if schema is not None and self.structured:
            # Structured outputs accept a subset of JSON Schema; the SDK's helper moves the
            # unsupported keywords (bounds, maxItems, ...) into descriptions.
            params["output_config"] = {
                "format": {"type": "json_schema", "schema": self._transform_schema(schema)}
            }
        elif schema is not None:
            system.append(schema_instruction(schema))
        if system:
            params["system"] = "\n\n".join(system)
        return params

    def complete(self, request: LLMRequest) -> LLMResponse:
        params = self._params(request)
        start = time.perf_counter()
        outcome = call_with_retries(
            lambda: self._client.messages.create(**params),
            lambda exc: classify_sdk_error(exc, self._connection_errors),
            endpoint=self.endpoint,
            policy=self.retry,
            sleep=self._sleep,
            rng=self._rng,
        )
        message = outcome.value
        text = "".join(block.text for block in message.content if block.type == "text")
        prompt_tokens = message.usage.input_tokens
        completion_tokens = message.usage.output_tokens
        return LLMResponse(
            text=text,
            model=message.model or self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - start,
            cost_usd=self.prices.cost(self.model, prompt_tokens, completion_tokens),
            attempts=outcome.attempts,
            errors=outcome.errors,
        )
