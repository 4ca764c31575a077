"""Claude models through the official `anthropic` SDK (Messages API; base URL configurable)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from diffnas.propose.llm.base import LLMRequest, schema_instruction
from diffnas.propose.llm.ledger import PriceTable
from diffnas.propose.llm.retry import RetryPolicy
from diffnas.propose.llm.sdk import SDKBackend, read_api_key


class AnthropicBackend(SDKBackend):
    """Messages API with our retries; a schema becomes `output_config.format` (structured outputs)."""

    provider = "anthropic"

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
        # max_retries=0: retries are ours, so they are counted and their sleeps injectable
        client = anthropic.Anthropic(
            api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        super().__init__(
            model, client, (anthropic.APIConnectionError,),
            retry=retry, prices=prices, sleep=sleep, rng=rng,
        )  # fmt: skip
        self._transform_schema = anthropic.transform_schema
        self.structured = structured

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

    def _create(self, params: dict[str, Any]) -> Any:
        return self._client.messages.create(**params)

    def _read(self, answer: Any) -> tuple[str, str | None, int, int]:
        text = "".join(block.text for block in answer.content if block.type == "text")
        return text, answer.model, answer.usage.input_tokens, answer.usage.output_tokens
