"""Any OpenAI-compatible chat-completions endpoint through the official `openai` SDK.

OpenAI, Azure OpenAI (its `/openai/v1` base URL), vLLM, Ollama, the llama.cpp server, LM Studio...
all speak this API; only the base URL and the key differ. The key is read from an environment
variable and handed to the client object only; it is never stored on this backend.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Literal

from diffnas.errors import UserError
from diffnas.propose.llm.base import LLMRequest, schema_instruction
from diffnas.propose.llm.ledger import PriceTable
from diffnas.propose.llm.retry import RetryPolicy
from diffnas.propose.llm.sdk import SDKBackend, read_api_key

#: How to ask for structured output: the JSON-schema mode, the older JSON mode, or a prompt only.
StructuredMode = Literal["json_schema", "json_object", "text"]
STRUCTURED_MODES: tuple[str, ...] = ("json_schema", "json_object", "text")


class OpenAIBackend(SDKBackend):
    """Chat completions with our retries, structured output and cost estimate."""

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        structured: StructuredMode = "json_schema",
        strict_schema: bool = False,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        import openai

        if structured not in STRUCTURED_MODES:
            raise UserError(
                f"structured={structured!r} is not allowed; use one of {', '.join(STRUCTURED_MODES)}",
                field="structured",
            )
        # Self-hosted servers (vLLM, Ollama, llama.cpp) usually need no key; OpenAI itself does.
        key = read_api_key(api_key_env, required=base_url is None, backend="openai")
        client = openai.OpenAI(
            api_key=key or "not-needed",
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,  # retries are ours, so they are counted and their sleeps injectable
        )
        super().__init__(
            model, client, (openai.APIConnectionError,),
            retry=retry, prices=prices, sleep=sleep, rng=rng,
        )  # fmt: skip
        self.structured = structured
        self.strict_schema = strict_schema

    def _params(self, request: LLMRequest) -> dict[str, Any]:
        messages = request.message_dicts()
        params: dict[str, Any] = {
            "model": self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            params["seed"] = request.seed
        schema = request.json_schema
        if schema is not None and self.structured == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": self.strict_schema},
            }
        elif schema is not None:
            # Without schema-constrained decoding the schema goes into the prompt.
            messages = [{"role": "system", "content": schema_instruction(schema)}, *messages]
            if self.structured == "json_object":
                params["response_format"] = {"type": "json_object"}
        params["messages"] = messages
        return params

    def _create(self, params: dict[str, Any]) -> Any:
        return self._client.chat.completions.create(**params)

    def _read(self, answer: Any) -> tuple[str, str | None, int, int]:
        text = (answer.choices[0].message.content or "") if answer.choices else ""
        usage = answer.usage
        return (
            text,
            answer.model,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )
